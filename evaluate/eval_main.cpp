// evl_eval: scores a test-view feature cache with a trained EVL head (evl or
// official checkpoint), fusing views per video, into an HDF5 score file; prints
// top-1 / top-5 / mean-class accuracy and writes the full metrics as JSON.
#include <cstdio>

#include "common/cli.h"
#include "evaluate/evaluator.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  const evl::cli::Tool tool{
      "evl_eval", "score a test-view feature cache with an EVL head into an HDF5 score file",
      "evl_eval --cache DIR --checkpoint FILE --scores OUT.h5 [--labels names.txt] [--json OUT]"};
  evl::EvalConfig c;
  po::options_description o("options");
  o.add_options()("cache", po::value(&c.cache), "test-view feature cache directory")(
      "checkpoint", po::value(&c.checkpoint), "evl checkpoint or official EVL .pth")(
      "scores", po::value(&c.scores), "output score file (HDF5, see evaluate/SCORES.md)")(
      "labels", po::value(&c.labels), "class names, one per line (K lines), for the JSON report")(
      "json", po::value(&c.json), "write metrics (per-class accuracy, confusion matrix) here")(
      "fuse", po::value(&c.fuse)->default_value(c.fuse),
      "view fusion: prob (mean of per-view softmax, official) | logits (mean logits)")(
      "batch-size", po::value(&c.batch_size)->default_value(c.batch_size),
      "clip-views per head forward")("device", po::value(&c.device)->default_value(c.device),
                                     "cpu | cuda | cuda:N")(
      "threads", po::value(&c.threads)->default_value(c.threads), "torch threads (0: default)");
  return evl::cli::run(tool, [&] {
    po::variables_map vm;
    if (!evl::cli::parse(tool, argc, argv, o, vm)) return evl::cli::kExitOk;
    const auto r = evl::run_eval(c);
    std::printf("%s: %lld videos x %lld views -> %s\n", c.checkpoint.c_str(),
                static_cast<long long>(r.scores.num_videos()),
                static_cast<long long>(r.scores.num_views), c.scores.c_str());
    if (r.missing_clips > 0)
      std::printf(
          "note: %lld videos of the list are not in the cache (failed extraction) and "
          "are left out of the metrics below\n",
          static_cast<long long>(r.missing_clips));
    if (r.metrics.num_labelled > 0) {
      std::printf("%s\n", evl::summary_line(r.metrics).c_str());
      if (r.missing_clips > 0)
        std::printf("top-1 %.2f%% counting the %lld missing videos as wrong\n",
                    100.0 * r.top1_counting_missing, static_cast<long long>(r.missing_clips));
    } else
      std::printf("no labelled videos: scores written, no accuracy\n");
    return evl::cli::kExitOk;
  });
}
