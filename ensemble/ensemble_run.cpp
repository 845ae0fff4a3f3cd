// Implements the evl_ensemble run of ensemble.h: reading and aligning the val
// and test files, the search, and its outputs (table, JSON report, fused file).
// The search itself lives in ensemble.cpp.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "common/check.h"
#include "common/log.h"
#include "ensemble/ensemble.h"
#include "evl/version.h"

namespace evl {

namespace {

AlignedScores read_and_align(const std::vector<std::string>& paths, bool intersect) {
  std::vector<ScoreFile> files;
  files.reserve(paths.size());
  for (const auto& p : paths) files.push_back(read_scores(p));
  return align_scores(files, paths, intersect);
}

std::string percent(double v) {
  if (!std::isfinite(v)) return "     -";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%6.2f", 100.0 * v);
  return buf;
}

nlohmann::json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

EnsembleResult run_ensemble(const std::vector<std::string>& val_paths,
                            const std::vector<std::string>& test_paths,
                            const EnsembleOptions& options) {
  EVL_CHECK_USAGE(val_paths.size() >= 2, "--val needs at least 2 score files, got ",
                  val_paths.size());
  EVL_CHECK_USAGE(test_paths.empty() || test_paths.size() == val_paths.size(), "--test has ",
                  test_paths.size(), " files but --val has ", val_paths.size(),
                  "; give one test file per model, in the same order");
  EnsembleResult r;
  r.val_paths = val_paths;
  r.test_paths = test_paths;
  r.grid = simplex_grid(static_cast<int64_t>(val_paths.size()), options.step);
  r.val = read_and_align(val_paths, options.intersect);
  if (r.has_test()) {
    r.test = read_and_align(test_paths, options.intersect);
    EVL_CHECK(r.test.num_classes == r.val.num_classes, "test score file '", test_paths[0], "' has ",
              r.test.num_classes, " classes but val file '", val_paths[0], "' has ",
              r.val.num_classes);
  }
  r.val_points = evaluate_grid(r.val, r.grid, options.threads);
  EVL_CHECK(r.val_points[0].num_labelled > 0, "val score files ('", val_paths[0],
            "', ...): no video has a label (all -1); the search needs labelled validation data");
  if (r.has_test()) r.test_points = evaluate_grid(r.test, r.grid, options.threads);
  r.chosen = choose_best(r.grid, r.val_points);
  r.weights = r.grid.weights(r.chosen);
  r.fused_val = fuse(r.val, r.weights);
  r.val_metrics =
      compute_metrics(r.fused_val.data(), r.val.num_videos(), r.val.num_classes, r.val.labels);
  if (r.has_test()) {
    r.fused_test = fuse(r.test, r.weights);
    r.test_metrics = compute_metrics(r.fused_test.data(), r.test.num_videos(), r.test.num_classes,
                                     r.test.labels);
  }
  return r;
}

std::string format_table(const EnsembleResult& r) {
  std::ostringstream os;
  const int64_t m = r.grid.num_models;
  const bool two = m == 2;
  for (int64_t i = 0; i < m; ++i) os << (two && i == 0 ? "  alpha" : str("     w", i));
  os << "  val_top1  val_top5";
  if (r.has_test()) os << "  test_top1  test_top5";
  os << "\n";
  for (int64_t p = 0; p < r.grid.num_points(); ++p) {
    const auto w = r.grid.weights(p);
    for (int64_t i = 0; i < m; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%7.3f", w[i]);
      os << buf;
    }
    os << "    " << percent(r.val_points[p].top1()) << "    " << percent(r.val_points[p].top5());
    if (r.has_test())
      os << "     " << percent(r.test_points[p].top1()) << "     "
         << percent(r.test_points[p].top5());
    os << (p == r.chosen ? "  *" : "") << "\n";
  }
  return os.str();
}

nlohmann::json report_json(const EnsembleResult& r) {
  nlohmann::json j;
  j["evl_version"] = EVL_VERSION;
  j["step"] = 1.0 / static_cast<double>(r.grid.steps);
  j["num_models"] = r.grid.num_models;
  j["num_points"] = r.grid.num_points();
  j["tie_break"] = kTieBreakRule;
  auto models = nlohmann::json::array();
  for (int64_t i = 0; i < r.grid.num_models; ++i)
    models.push_back({{"name", r.val.models[i]},
                      {"val", r.val_paths[i]},
                      {"test", r.has_test() ? nlohmann::json(r.test_paths[i]) : nullptr}});
  j["models"] = models;
  j["val"] = {{"num_videos", r.val.num_videos()}, {"num_labelled", r.val_metrics.num_labelled}};
  j["test"] = r.has_test() ? nlohmann::json{{"num_videos", r.test.num_videos()},
                                            {"num_labelled", r.test_metrics.num_labelled}}
                           : nlohmann::json(nullptr);
  auto points = nlohmann::json::array();
  for (int64_t p = 0; p < r.grid.num_points(); ++p) {
    const auto w = r.grid.weights(p);
    nlohmann::json row{{"weights", w},
                       {"val_top1", number_or_null(r.val_points[p].top1())},
                       {"val_top5", number_or_null(r.val_points[p].top5())},
                       {"val_top1_hits", r.val_points[p].top1_hits},
                       {"val_top5_hits", r.val_points[p].top5_hits}};
    if (r.grid.num_models == 2) row["alpha"] = w[0];
    if (r.has_test()) {
      row["test_top1"] = number_or_null(r.test_points[p].top1());
      row["test_top5"] = number_or_null(r.test_points[p].top5());
      row["test_top1_hits"] = r.test_points[p].top1_hits;
      row["test_top5_hits"] = r.test_points[p].top5_hits;
    }
    points.push_back(row);
  }
  j["points"] = points;
  nlohmann::json chosen{{"index", r.chosen},
                        {"weights", r.weights},
                        {"val", metrics_to_json(r.val_metrics)},
                        {"test", r.has_test() ? metrics_to_json(r.test_metrics) : nullptr}};
  if (r.grid.num_models == 2) chosen["alpha"] = r.weights[0];
  j["chosen"] = chosen;
  return j;
}

ScoreFile fused_score_file(const EnsembleResult& r) {
  const AlignedScores& s = r.has_test() ? r.test : r.val;
  const std::vector<double>& fused = r.has_test() ? r.fused_test : r.fused_val;
  ScoreFile f;
  f.scores.assign(fused.begin(), fused.end());
  f.labels = s.labels;
  f.video_ids = s.video_ids;
  f.kind = ScoreKind::kProbabilities;
  f.num_views = s.num_views;
  std::ostringstream name;
  name << "ensemble(";
  for (size_t i = 0; i < s.models.size(); ++i)
    name << (i ? ", " : "") << s.models[i] << "*" << r.weights[i];
  name << ")";
  f.model = name.str();
  return f;
}

}  // namespace evl
