// bench_decode: clips/s of the sparse reader vs a full decode in the same
// process (the official approach) vs python3-av's full decode, for the 8x16
// (3 temporal views) and 32x8 (1 temporal view) test sampling of each real
// ~10 s clip, with 1 and 2 libavcodec threads. Frames decoded per clip too.
// usage: bench_decode [--quick]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "extract/sampling.h"
#include "extract/video_reader.h"

namespace {

using Clock = std::chrono::steady_clock;

std::vector<int64_t> clip_indices(int64_t n, int64_t frames, int64_t stride, int64_t views) {
  std::vector<int64_t> all;
  for (int64_t s : evl::temporal_view_starts(n, frames, stride, views))
    for (int64_t i : evl::dense_view_indices(n, s, frames, stride)) all.push_back(i);
  return all;
}

template <typename F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int reps = quick ? 1 : 3;
  const std::string base = std::string(EVL_SHARED_DIR) + "/data/real/videos/action/";
  const std::vector<std::string> videos = {"k400_arm_wrestling.mp4", "k400_cleaning_pool.mp4",
                                           "k400_shooting_basketball.mp4",
                                           "pymecavideo_balle-jbart_throwing_ball.mp4"};
  // python3-av baseline, run first so the machine is equally idle for both.
  std::map<std::pair<std::string, int>, double> py;
  {
    std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                      "/tests/extract/decode_bench.py " + std::to_string(reps);
    for (auto& v : videos) cmd += " " + base + v;
    FILE* p = popen(cmd.c_str(), "r");
    char line[4096];
    while (p && fgets(line, sizeof(line), p)) {
      std::istringstream in(line);
      double sec;
      long frames;
      int threads;
      std::string path;
      if (in >> sec >> frames >> threads >> path)
        py[{path.substr(path.rfind('/') + 1), threads}] = sec;
    }
    if (p) pclose(p);
  }
  nlohmann::json rows = nlohmann::json::array();
  double sum_ratio_full = 0, sum_ratio_py = 0;
  int count = 0;
  for (auto [frames, stride, tviews] :
       {std::tuple<int64_t, int64_t, int64_t>{8, 16, 3}, {32, 8, 1}}) {
    for (int threads : {1, 2}) {
      for (const auto& v : videos) {
        evl::VideoReaderOptions opt;
        opt.threads = threads;
        int64_t sparse_frames = 0, full_frames = 0, n = 0;
        double sparse = best_seconds(reps, [&] {
          evl::VideoReader r(base + v, opt);
          n = r.info().num_frames;
          r.read_frames(clip_indices(n, frames, stride, tviews));
          sparse_frames = r.frames_decoded();
        });
        double full = best_seconds(reps, [&] {
          evl::VideoReader r(base + v, opt);
          int64_t before = r.frames_decoded();
          r.read_all_frames();
          full_frames = r.frames_decoded() - before;
        });
        double pyav = py.count({v, threads}) ? py[{v, threads}] : 0;
        std::printf(
            "%-44s %2ldx%-2ld threads=%d  sparse %7.1f clips/s (%3ld frames)  full %6.1f clips/s "
            "(%3ld)  "
            "pyav %6.1f clips/s  sparse/full %.2fx  sparse/pyav %.2fx\n",
            v.c_str(), static_cast<long>(frames), static_cast<long>(stride), threads, 1 / sparse,
            static_cast<long>(sparse_frames), 1 / full, static_cast<long>(full_frames),
            pyav > 0 ? 1 / pyav : 0.0, full / sparse, pyav / sparse);
        rows.push_back({{"video", v},
                        {"sampling", std::to_string(frames) + "x" + std::to_string(stride)},
                        {"temporal_views", tviews},
                        {"threads", threads},
                        {"num_frames", n},
                        {"sparse_clips_per_s", 1 / sparse},
                        {"full_clips_per_s", 1 / full},
                        {"pyav_clips_per_s", pyav > 0 ? 1 / pyav : 0.0},
                        {"sparse_frames_decoded", sparse_frames},
                        {"full_frames_decoded", full_frames}});
        sum_ratio_full += full / sparse;
        sum_ratio_py += pyav / sparse;
        ++count;
      }
    }
  }
  std::printf("mean speed-up of sparse over full decode: %.2fx, over python3-av: %.2fx\n",
              sum_ratio_full / count, sum_ratio_py / count);
  nlohmann::json out = {{"bench", "decode"},
                        {"quick", quick},
                        {"mean_speedup_vs_full", sum_ratio_full / count},
                        {"mean_speedup_vs_pyav", sum_ratio_py / count},
                        {"rows", rows}};
  std::printf("BENCH_JSON %s\n", out.dump().c_str());
  return 0;
}
