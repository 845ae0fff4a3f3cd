// Leveled stderr logging (log.h).
#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace evl::log {

namespace {
std::atomic<int> g_override{-1};  // set_level; -1: EVL_LOG_LEVEL decides
Level threshold() {
  if (const int o = g_override.load(); o >= 0) return static_cast<Level>(o);
  static const Level level = [] {
    const char* e = std::getenv("EVL_LOG_LEVEL");
    if (!e) return Level::kInfo;
    if (!std::strcmp(e, "debug")) return Level::kDebug;
    if (!std::strcmp(e, "warn")) return Level::kWarn;
    if (!std::strcmp(e, "error")) return Level::kError;
    return Level::kInfo;
  }();
  return level;
}
}  // namespace

void set_level(Level level) { g_override = static_cast<int>(level); }

bool enabled(Level level) { return static_cast<int>(level) >= static_cast<int>(threshold()); }

void write(Level level, const std::string& message) {
  static const char* const kPrefix[] = {"debug: ", "", "warning: ", "error: "};
  const std::string line = kPrefix[static_cast<int>(level)] + message + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);  // one call: lines do not interleave
}

}  // namespace evl::log
