// What the benchmarks (bench_backbone, bench_extract, bench_train) share: a
// clock, the peak RSS, the ViT-B/16-shaped random backbone they time, the real
// clips they decode, and a work folder that goes away however main() returns.
// Header-only, no LibTorch.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

namespace evl::bench {

namespace fs = std::filesystem;

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The process's peak resident set so far, in MiB.
inline double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// Removes `dir` with everything in it on destruction.
struct RemoveOnExit {
  fs::path dir;
  ~RemoveOnExit() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

#if defined(EVL_SOURCE_DIR) && defined(EVL_BINARY_DIR) && defined(EVL_PYTHON)
// The random ViT-B/16 (scripts/make_clip_backbone.py --preset b16), made once and
// kept under the build folder (bench/vit-b16.pt); "" (and a message) when it
// cannot be made.
inline std::string b16_backbone() {
  const std::string path = std::string(EVL_BINARY_DIR) + "/bench/vit-b16.pt";
  if (fs::exists(path)) return path;
  fs::create_directories(fs::path(path).parent_path());
  const std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                          "/scripts/make_clip_backbone.py --preset b16 -o " + path;
  std::cout << "making " << path << "\n" << std::flush;
  if (std::system(cmd.c_str()) != 0 || !fs::exists(path)) {
    std::cerr << "error: could not create " << path << " with: " << cmd << "\n";
    return "";
  }
  return path;
}
#endif

#ifdef EVL_SHARED_DIR
// Real ~10-18 s action videos of ../shared/data/real/videos/action/, as full
// paths, in a fixed order (the benchmarks take the first N).
inline std::vector<std::string> real_action_clips() {
  const std::string dir = std::string(EVL_SHARED_DIR) + "/data/real/videos/action/";
  std::vector<std::string> out;
  for (const char* name :
       {"k400_arm_wrestling.mp4", "k400_cleaning_pool.mp4", "k400_shooting_basketball.mp4",
        "pymecavideo_balle-jbart_throwing_ball.mp4", "activitynet_v_GGSY1Qvo990_weightlifting.mp4",
        "activitynet_v_ZNVhz7ctTq0_dog_walking.mp4", "k400_archery.avi",
        "ucf101_ApplyEyeMakeup.avi"})
    out.push_back(dir + name);
  return out;
}
#endif

}  // namespace evl::bench
