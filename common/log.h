// Minimal leveled logging to stderr, for warnings a user must see (a truncated
// video, an interpolated position embedding) and informational lines.
// EVL_LOG_LEVEL=debug|info|warn|error (default info). Thread-safe (one write
// per line). Libraries log; they never print results to stdout.
#pragma once

#include <string>

#include "common/check.h"

namespace evl::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

bool enabled(Level level);
void set_level(Level level);  // overrides EVL_LOG_LEVEL (a tool's --verbose)
void write(Level level, const std::string& message);

template <typename... Args>
void debug(Args&&... args) {
  if (enabled(Level::kDebug)) write(Level::kDebug, ::evl::str(std::forward<Args>(args)...));
}
template <typename... Args>
void info(Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, ::evl::str(std::forward<Args>(args)...));
}
template <typename... Args>
void warn(Args&&... args) {
  if (enabled(Level::kWarn)) write(Level::kWarn, ::evl::str(std::forward<Args>(args)...));
}

}  // namespace evl::log
