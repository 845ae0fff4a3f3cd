// evl_extract: runs a dataset list through the frozen CLIP ViT into a feature cache.
// Exit status: 0 all clips done, 3 some videos failed (see the failures file),
// 4 interrupted by SIGTERM/SIGINT (finished work committed; rerun to resume),
// 1 runtime error, 2 usage error.
#include <csignal>
#include <cstdio>
#include <iostream>

#include "common/cli.h"
#include "common/log.h"
#include "extract/pipeline.h"
#include "extract/view_settings.h"

namespace po = boost::program_options;

namespace {

const evl::cli::Tool kTool{"evl_extract",
                           "extract frozen CLIP ViT features of a video dataset into an LMDB cache",
                           "evl_extract --list LIST --backbone FILE --out DIR [options]"};

constexpr int kExitSomeFailed = 3;
constexpr int kExitInterrupted = 4;

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int) { g_stop = true; }

po::options_description make_options(evl::ExtractConfig& c) {
  po::options_description io("input and output");
  io.add_options()(
      "list", po::value(&c.list),
      "dataset list: `<path> <label> [start_sec end_sec]` per line, or a Kinetics CSV")(
      "root", po::value(&c.root)->default_value(c.root), "prefix for relative paths in the list")(
      "labels", po::value(&c.labels),
      "label map for lists whose labels are class names: one name per line (line n = class n), "
      "or `<id>: <name>` lines")(
      "backbone", po::value(&c.backbone),
      "CLIP weights: OpenAI TorchScript .pt or Hugging Face .safetensors")(
      "out", po::value(&c.out), "cache directory (created; rerunning resumes)")(
      "failures", po::value(&c.failures)->default_value(c.failures),
      "failures TSV (default <out>/failures[-<shard>].tsv)")(
      "limit", po::value(&c.limit)->default_value(c.limit),
      "only the first N clips of the list (0: all)");
  po::options_description views("sampling and views");
  po::options_description feats("features");
  evl::add_view_flags(views, feats, c.views, evl::ViewTool::kExtract);
  views.add_options()("seed", po::value(&c.seed)->default_value(c.seed),
                      "seed of training views: a view is reproducible from (seed, clip, view)");
  feats.add_options()("store", po::value(&c.store)->default_value(c.store),
                      "qk (X, Q, K per layer) | compact (X of M+1 blocks; Q/K recomputed)")(
      "save-inputs", po::bool_switch(&c.save_inputs),
      "also store each view's preprocessed input frames (float32)")(
      "dump-frames", po::value(&c.dump_frames)->default_value(c.dump_frames),
      "write each view's frames as PNG into this directory");
  po::options_description run("execution");
  run.add_options()("device", po::value(&c.device)->default_value(c.device), "cpu | cuda | cuda:N")(
      "threads", po::value(&c.threads)->default_value(c.threads), "worker threads (0: all cores)")(
      "batch-size", po::value(&c.batch_size)->default_value(c.batch_size),
      "clip-views per backbone forward")(
      "shard-index", po::value(&c.shard_index)->default_value(c.shard_index),
      "this task's shard (-1: SLURM_ARRAY_TASK_ID or SLURM_PROCID, else 0)")(
      "num-shards", po::value(&c.num_shards)->default_value(c.num_shards),
      "number of shards (-1: SLURM_ARRAY_TASK_COUNT or SLURM_NTASKS, else 1)")(
      "max-failures", po::value(&c.max_failures)->default_value(c.max_failures),
      "abort when more videos fail (-1: never)")(
      "max-decoded-mib", po::value(&c.max_decoded_mib)->default_value(c.max_decoded_mib),
      "memory bound per video: decoded frames a clip needs (a larger clip fails)")(
      "verbose", "debug messages and FFmpeg's own log lines (default: FFmpeg errors only)");
  po::options_description all;
  all.add(io).add(views).add(feats).add(run);
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  return evl::cli::run(kTool, [&] {
    evl::ExtractConfig cfg;
    const auto options = make_options(cfg);
    po::variables_map vm;
    if (!evl::cli::parse(kTool, argc, argv, options, vm)) return 0;

    if (vm.count("verbose")) evl::log::set_level(evl::log::Level::kDebug);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    const evl::ExtractSummary s = evl::run_extraction(cfg, &g_stop);

    std::printf(
        "extracted %lld clips (%lld views), skipped %lld already present, %lld failed, of %lld in "
        "this shard; %.2f clips/s, %.1f MiB written in %.1f s\n",
        static_cast<long long>(s.clips_done), static_cast<long long>(s.views_written),
        static_cast<long long>(s.clips_skipped), static_cast<long long>(s.clips_failed),
        static_cast<long long>(s.clips_in_shard), s.seconds > 0 ? s.clips_done / s.seconds : 0.0,
        s.bytes_written / 1048576.0, s.seconds);
    if (s.clips_failed > 0)
      std::printf("failed videos are listed in %s\n", s.failures_file.c_str());
    if (s.clips_failed > 0 && s.clips_failed == s.clips_in_shard - s.clips_skipped)
      std::fprintf(stderr, "error: every clip failed (%lld of %lld)%s; see %s\n",
                   static_cast<long long>(s.clips_failed), static_cast<long long>(s.clips_in_shard),
                   cfg.root.empty() ? ": no --root given, so the list's relative paths were "
                                      "resolved against the current directory"
                                    : "",
                   s.failures_file.c_str());
    if (s.interrupted) {
      std::fprintf(stderr,
                   "interrupted: finished clips are committed; rerun the same command to resume\n");
      return kExitInterrupted;
    }
    return s.clips_failed > 0 ? kExitSomeFailed : 0;
  });
}
