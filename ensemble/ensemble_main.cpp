// evl_ensemble: weighted fusion of several models' HDF5 score files with an
// exhaustive weight search on the validation files (ensemble/ensemble.h).
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "common/atomic_file.h"
#include "common/check.h"
#include "common/cli.h"
#include "ensemble/ensemble.h"

namespace po = boost::program_options;

namespace {

const evl::cli::Tool kTool{
    "evl_ensemble", "search ensemble weights on validation score files, apply them to test files",
    "evl_ensemble --val A.h5 B.h5 [C.h5 ...] [--test A.h5 B.h5 ...] [--alpha-step 0.1] "
    "[--out fused.h5] [--json report.json] [options]"};

struct EnsembleConfig {
  std::vector<std::string> val, test;
  std::string out, json;
  evl::EnsembleOptions search;
};

}  // namespace

int main(int argc, char** argv) {
  EnsembleConfig cfg;
  po::options_description opts("ensemble");
  opts.add_options()("val", po::value(&cfg.val)->multitoken(),
                     "validation score files, one per model (the weights are tuned on these)")(
      "test", po::value(&cfg.test)->multitoken(),
      "test score files, one per model in the same order (get the chosen weights)")(
      "alpha-step", po::value(&cfg.search.step)->default_value(cfg.search.step),
      "grid step of the weights; must divide 1")(
      "intersect", po::bool_switch(&cfg.search.intersect),
      "use the videos common to all files instead of requiring identical id sets")(
      "out", po::value(&cfg.out), "write the fused probabilities (test, else val) to this .h5")(
      "json", po::value(&cfg.json), "write the report (every weight tried, chosen, metrics)")(
      "threads", po::value(&cfg.search.threads)->default_value(cfg.search.threads),
      "search threads (0: all cores)");
  return evl::cli::run(kTool, [&] {
    po::variables_map vm;
    if (!evl::cli::parse(kTool, argc, argv, opts, vm)) return 0;
    const evl::EnsembleResult r = evl::run_ensemble(cfg.val, cfg.test, cfg.search);
    const int64_t m = r.grid.num_models;
    std::cout << "models:";
    for (int64_t i = 0; i < m; ++i) std::cout << " [" << i << "] " << r.val.models[i];
    std::cout << "\n"
              << "videos: val " << r.val.num_videos() << " (" << r.val_metrics.num_labelled
              << " labelled)";
    if (r.has_test())
      std::cout << ", test " << r.test.num_videos() << " (" << r.test_metrics.num_labelled
                << " labelled)";
    std::cout << ", classes " << r.val.num_classes << "\n"
              << "grid: " << r.grid.num_points() << " weight vectors over " << m
              << " models at step " << 1.0 / static_cast<double>(r.grid.steps) << "\n\n"
              << evl::format_table(r) << "\n"
              << "chosen (" << evl::kTieBreakRule << "):\n  weights";
    for (double w : r.weights) std::cout << " " << w;
    std::cout << "\n  val  top-1 " << 100 * r.val_metrics.top1 << "  top-5 "
              << 100 * r.val_metrics.top5 << "  mean-class "
              << 100 * r.val_metrics.mean_class_accuracy << "\n";
    if (r.has_test())
      std::cout << "  test top-1 " << 100 * r.test_metrics.top1 << "  top-5 "
                << 100 * r.test_metrics.top5 << "  mean-class "
                << 100 * r.test_metrics.mean_class_accuracy << "\n";
    if (!cfg.out.empty()) {
      evl::write_scores(cfg.out, evl::fused_score_file(r));
      std::cout << "wrote " << cfg.out << "\n";
    }
    if (!cfg.json.empty()) {
      evl::write_file_atomic(cfg.json, evl::report_json(r).dump(2) + "\n");
      std::cout << "wrote " << cfg.json << "\n";
    }
    return 0;
  });
}
