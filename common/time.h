// Wall-clock timestamps that evl records in the files it writes (manifests,
// reports). Durations use std::chrono::steady_clock where they are measured.
#pragma once

#include <string>

namespace evl {

// The current time as ISO-8601 UTC with seconds, e.g. "2026-12-01T09:35:50Z".
std::string utc_now_iso8601();

}  // namespace evl
