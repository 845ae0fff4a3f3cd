// utc_now_iso8601 (time.h), with the thread-safe gmtime_r.
#include "common/time.h"

#include <ctime>

namespace evl {

std::string utc_now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace evl
