// Weighted score fusion of several models and the exhaustive weight search of
// evl_ensemble: align score files by video id, turn logits into probabilities,
// evaluate every weight vector on a simplex grid, pick the best validation
// top-1 (tie-break below), apply it to the test files. No LibTorch, no HDF5
// beyond evaluate/scores.h. Deliberately no learned/stacked fusion.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evaluate/metrics.h"
#include "evaluate/scores.h"

namespace evl {

// Dimension letters: M models, N videos, K classes, P grid points.

// M models' probabilities over the same N videos in the same order.
struct AlignedScores {
  std::vector<std::string> video_ids;     // (N) in the first file's order
  std::vector<int64_t> labels;            // (N) merged over the files, -1 unknown
  std::vector<std::vector<float>> probs;  // M x (N, K) probabilities
  std::vector<std::string> models;        // (M) model names (the `model` attribute)
  int64_t num_classes = 0;                // K
  int64_t num_views = 1;                  // common num_views, 1 when they differ
  int64_t num_videos() const { return static_cast<int64_t>(video_ids.size()); }
};

// Aligns `files` (M >= 1, read from `paths`) by video id. Without `intersect`
// every file must hold the same id set: otherwise throws evl::Error naming the
// two files and the first few ids missing on each side. With it, keeps the ids
// present in all files (error if none). Also throws when class counts differ or
// two files give the same video different known labels. Logits are softmaxed.
AlignedScores align_scores(const std::vector<ScoreFile>& files,
                           const std::vector<std::string>& paths, bool intersect);

// All weight vectors (w_0..w_{M-1}) with w_m = counts[m] / steps, counts >= 0
// summing to steps = round(1 / step), enumerated in ascending lexicographic
// order of counts (for M = 2: alpha = w_0 = 0, step, ..., 1).
// P = C(steps + M - 1, M - 1). Throws evl::UsageError when 1/step is not an
// integer (within 1e-6), step is outside (0, 1], M < 2, or P > kMaxGridPoints.
struct WeightGrid {
  int64_t num_models = 0;       // M
  int64_t steps = 0;            // 1 / step
  std::vector<int32_t> counts;  // (P, M)
  int64_t num_points() const {
    return num_models ? static_cast<int64_t>(counts.size()) / num_models : 0;
  }
  std::vector<double> weights(int64_t p) const;  // (M) counts / steps, in double
};
inline constexpr int64_t kMaxGridPoints = 5'000'000;
WeightGrid simplex_grid(int64_t num_models, double step);

// Hits of one weight vector on one split (num_labelled videos have labels).
struct PointScore {
  int64_t top1_hits = 0, top5_hits = 0, num_labelled = 0;
  double top1() const;  // NaN when num_labelled == 0
  double top5() const;
};

// Top-1/top-5 hits of every grid point, exactly those of the dense fused scores
// sum_m w_m * p_m (in double, summed in model order) under metrics.h's ranking
// rule, but fast: per video it keeps only the classes that can outrank the
// label for some weight vector. `threads` <= 0 uses all cores. (P) results.
std::vector<PointScore> evaluate_grid(const AlignedScores& scores, const WeightGrid& grid,
                                      int threads = 0);

// Dense fused probabilities sum_m weights[m] * p_m, (N, K) in double.
std::vector<double> fuse(const AlignedScores& scores, const std::vector<double>& weights);

// The point with the best validation top-1; ties go to the higher top-5, then
// to the weights closest to uniform (smallest sum_m (w_m - 1/M)^2, compared
// exactly on the integer counts), then to the earliest point in grid order.
int64_t choose_best(const WeightGrid& grid, const std::vector<PointScore>& val);
inline constexpr const char* kTieBreakRule =
    "highest val top-1, then highest val top-5, then weights closest to uniform, then the "
    "earliest in grid order (ascending lexicographic weights)";

struct EnsembleOptions {
  double step = 0.1;       // --alpha-step
  bool intersect = false;  // --intersect
  int threads = 0;         // --threads, <= 0: all cores
};

struct EnsembleResult {
  std::vector<std::string> val_paths, test_paths;  // (M) each; test may be empty
  AlignedScores val, test;                         // test empty when no test files
  WeightGrid grid;
  std::vector<PointScore> val_points, test_points;  // (P); test empty without test files
  int64_t chosen = 0;                               // index into the grid
  std::vector<double> weights;                      // (M) chosen weights
  Metrics val_metrics, test_metrics;                // of the chosen weights
  std::vector<double> fused_val, fused_test;        // (N, K) with the chosen weights
  bool has_test() const { return !test_paths.empty(); }
};

// The whole evl_ensemble run: read, align (val and test separately; test files
// pair with val files by position), search on val, apply to test. Throws
// evl::UsageError for bad counts/step, evl::Error for bad files (naming them)
// or a validation split without labels.
EnsembleResult run_ensemble(const std::vector<std::string>& val_paths,
                            const std::vector<std::string>& test_paths,
                            const EnsembleOptions& options);

// The table of every point tried: weights, val (and test) top-1/top-5, with the
// chosen row marked '*'.
std::string format_table(const EnsembleResult& r);
// The report: inputs, grid, every point, the chosen weights and full metrics.
nlohmann::json report_json(const EnsembleResult& r);
// The fused scores of the test split (or val when there is none) as a score file.
ScoreFile fused_score_file(const EnsembleResult& r);

}  // namespace evl
