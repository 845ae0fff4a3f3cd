// bench_ensemble: evl_ensemble's weight search vs the same exhaustive search in
// numpy (ensemble_reference.py), side by side in one run, on Kinetics-400-
// validation-sized inputs (19,787 videos x 400 classes), 2 and 3 models, step
// 0.1. --quick uses 2,000 videos. Also checks both pick the same weights.
// Prints human lines and a final `BENCH_JSON {...}` line.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>

#include "ensemble/ensemble.h"

namespace fs = std::filesystem;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Probabilities of a model that is right ~80% of the time, with its own noise.
evl::ScoreFile synthetic(int64_t n, int64_t k, const std::vector<int64_t>& labels, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  evl::ScoreFile f;
  f.labels = labels;
  f.scores.resize(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n; ++i) {
    f.video_ids.push_back("k400val_" + std::to_string(i));
    float* row = f.scores.data() + i * k;
    for (int64_t j = 0; j < k; ++j) row[j] = 1.3f * g(rng);
    row[labels[i]] += 4.2f + 1.5f * g(rng);
  }
  f.kind = evl::ScoreKind::kLogits;
  f.scores = evl::to_probabilities(f);
  f.kind = evl::ScoreKind::kProbabilities;
  f.model = "synthetic" + std::to_string(seed);
  return f;
}

nlohmann::json numpy_search(const std::vector<std::string>& paths, const fs::path& dir) {
  std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                    "/tests/ensemble/ensemble_reference.py --step 0.1 --time --val";
  for (const auto& p : paths) cmd += " '" + p + "'";
  const fs::path out = dir / "numpy.json";
  cmd += " > '" + out.string() + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("numpy reference failed: " + cmd);
  nlohmann::json j;
  std::ifstream(out) >> j;
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int64_t n = quick ? 2000 : 19787, k = 400;
  const fs::path dir =
      fs::temp_directory_path() / ("evl_bench_ensemble_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::mt19937 rng(1);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (auto& y : labels) y = static_cast<int64_t>(rng() % k);
  std::vector<std::string> paths;
  for (uint32_t m = 0; m < 3; ++m) {
    paths.push_back((dir / ("model" + std::to_string(m) + ".h5")).string());
    evl::write_scores(paths.back(), synthetic(n, k, labels, 10 + m));
  }
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  std::printf("bench_ensemble: N=%lld videos, K=%lld classes, step 0.1, %d cores\n",
              static_cast<long long>(n), static_cast<long long>(k), cores);
  nlohmann::json out{{"n", n}, {"k", k}, {"step", 0.1}, {"cores", cores}};
  bool agree = true;
  for (int models : {2, 3}) {
    const std::vector<std::string> use(paths.begin(), paths.begin() + models);
    // evl: read + align, then the search alone (1 thread and all cores).
    double t0 = now();
    std::vector<evl::ScoreFile> files;
    for (const auto& p : use) files.push_back(evl::read_scores(p));
    const evl::AlignedScores s = evl::align_scores(files, use, false);
    const double load = now() - t0;
    const evl::WeightGrid grid = evl::simplex_grid(models, 0.1);
    t0 = now();
    const auto points1 = evl::evaluate_grid(s, grid, 1);
    const double search1 = now() - t0;
    t0 = now();
    const auto points = evl::evaluate_grid(s, grid, 0);
    const double search = now() - t0;
    const int64_t best = evl::choose_best(grid, points);
    t0 = now();
    const evl::EnsembleResult full = evl::run_ensemble(use, {}, {0.1, false, 0});
    const double whole = now() - t0;
    // numpy: the dense brute-force search on the same files.
    const nlohmann::json np = numpy_search(use, dir);
    const double np_search = np["search_seconds"], np_load = np["load_seconds"];
    const bool same = np["chosen"].get<int64_t>() == best && full.chosen == best &&
                      np["val_top1_hits"].get<int64_t>() == points[best].top1_hits &&
                      points1[best].top1_hits == points[best].top1_hits;
    agree = agree && same;
    std::printf(
        "%d models, %lld points: evl search %.3f s (1 thread %.3f s), evl read+align %.3f s, "
        "evl whole run %.3f s | numpy search %.3f s, numpy load %.3f s | search speed-up "
        "%.1fx (1 thread %.1fx) | chosen %s (val top-1 %.2f%%)\n",
        models, static_cast<long long>(grid.num_points()), search, search1, load, whole, np_search,
        np_load, np_search / search, np_search / search1, same ? "agrees" : "DIFFERS",
        100 * points[best].top1());
    out[std::to_string(models) + "_models"] = {{"points", grid.num_points()},
                                               {"evl_search_s", search},
                                               {"evl_search_1thread_s", search1},
                                               {"evl_load_s", load},
                                               {"evl_whole_run_s", whole},
                                               {"numpy_search_s", np_search},
                                               {"numpy_load_s", np_load},
                                               {"speedup", np_search / search},
                                               {"speedup_1thread", np_search / search1},
                                               {"chosen_agrees", same}};
  }
  out["agree"] = agree;
  fs::remove_all(dir);
  std::cout << "BENCH_JSON " << out.dump() << std::endl;
  return agree ? 0 : 1;
}
