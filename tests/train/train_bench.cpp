// bench_train: head-training throughput with ViT-B/16 shapes (C 768, 14x14
// grid, 8 frames, 4 layers, fp16 qk cache), in one run, on the same clips:
//  - the training step fed from a cache (extracted beforehand from real clips by
//    the extraction pipeline, in a child process so that its memory does not
//    count here),
//  - the same step with the batch held in memory (the ceiling of the cached path),
//  - the same step computed online (evl_train_head --online's source: decode +
//    views + frozen backbone + storage rounding, then the head), on the same items
//    as the cache's first steps.
// Prints bytes read per sample and peak RSS (after the cached steps, and after
// the online ones, which load the backbone). The backbone has random weights
// (scripts/make_clip_backbone.py --preset b16, kept under the build dir): speed
// does not depend on the weights.
// On CPU a B/16-shaped head step costs seconds per sample, so the default is
// small: 6 real clips, batch 2, 3 cached steps (after one warm-up), 2 online steps
// on the items of the first two (~2.5 min on 2 idle cores). --quick: the tiny
// test backbone, 2 clips, batch 2 (CI smoke only).
//   bench_train [--quick] [--model PT] [--batch N] [--cache-steps N] [--online-steps N]
//               [--threads N (default 2, for the extraction, the backbone and the head)]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "extract/pipeline.h"
#include "tests/support/bench_support.h"
#include "train/cached_dataset.h"
#include "train/head.h"
#include "train/mixed_precision.h"
#include "train/online_dataset.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace evl;

namespace {

using evl::bench::Clock;
using evl::bench::peak_rss_mib;
using evl::bench::seconds_since;

using evl::bench::RemoveOnExit;

// Runs the extraction in a child process (its backbone and buffers stay out of
// this process's peak RSS). Returns the child's exit status.
int extract_in_child(const ExtractConfig& cfg) {
  std::cout << std::flush;
  const pid_t pid = fork();
  if (pid == 0) {
    try {
      const ExtractSummary s = run_extraction(cfg, nullptr);
      std::printf("extracted %lld views in %.1f s\n", static_cast<long long>(s.views_written),
                  s.seconds);
      std::fflush(stdout);
      _exit(s.clips_failed == 0 ? 0 : 3);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: extraction: %s\n", e.what());
      _exit(1);
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

int main(int argc, char** argv) try {
  bool quick = false;
  std::string model;
  int64_t batch = 2, cache_steps = 3, online_steps = 2, clips = 6;
  int threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + s);
      return argv[++i];
    };
    if (s == "--quick")
      quick = true;
    else if (s == "--model")
      model = next();
    else if (s == "--batch")
      batch = std::stoll(next());
    else if (s == "--cache-steps")
      cache_steps = std::stoll(next());
    else if (s == "--online-steps")
      online_steps = std::stoll(next());
    else if (s == "--threads")
      threads = std::stoi(next());
    else {
      std::cerr << "usage: bench_train [--quick] [--model PT] [--batch N] [--cache-steps N] "
                   "[--online-steps N] [--threads N]\n";
      return 2;
    }
  }
  const std::string src = EVL_SOURCE_DIR;
  if (quick) {
    if (model.empty()) model = src + "/tests/fixtures/backbone/tiny_clip_openai.pt";
    clips = 2, batch = 2, cache_steps = 2, online_steps = 1;
  }
  if (model.empty()) {
    model = evl::bench::b16_backbone();
    if (model.empty()) return 1;
  }

  // The clips: real action videos of shared/ (as bench_extract).
  const std::vector<std::string> names = evl::bench::real_action_clips();
  const fs::path work = fs::temp_directory_path() / ("evl_bench_train_" + std::to_string(getpid()));
  fs::create_directories(work);
  const RemoveOnExit cleanup{work};
  const std::string list = (work / "clips.txt").string();
  {
    std::ofstream out(list);
    for (int64_t i = 0; i < clips; ++i) out << names[static_cast<size_t>(i)] << " " << i << "\n";
  }

  // The online source's settings; the cache is what evl_extract makes of them.
  OnlineConfig oc;
  oc.list = list;
  oc.backbone = model;
  oc.views.frames = 8, oc.views.stride = 16, oc.views.train_views = 1;
  oc.views.layers = quick ? "last2" : "last4";
  oc.views.dtype = "fp16";
  const uint64_t seed = 0;

  // 1. The cache (child process).
  {
    ExtractConfig e = online_extract_config(oc, list, OnlineDataset::Views::kTrain, seed);
    e.out = (work / "cache").string();
    e.threads = threads;
    const int rc = extract_in_child(e);
    if (rc != 0) {
      std::cerr << "error: extraction into " << e.out << " failed (status " << rc << ")\n";
      return 1;
    }
  }
  torch::set_num_threads(threads);
  const CachedDataset data((work / "cache").string(), 0);
  const cache::Manifest& man = data.manifest();

  TrainConfig tc;  // the default head (dropouts, temporal modules) of a run
  const HeadConfig hc = head_config_for(tc, man, data.layers(), 400);
  EvlHead head(hc);
  torch::optim::AdamW opt(head->parameters(), torch::optim::AdamWOptions(4e-4).weight_decay(0.05));
  Precision precision = Precision::kFp32;
  auto train_step = [&](const FeatureBatch& b) {
    opt.zero_grad();
    torch::Tensor logits;
    {
      AutocastGuard autocast(precision, torch::Device("cpu"));
      logits = head->forward(b.x, b.q, b.k);
    }
    torch::cross_entropy_loss(logits.to(torch::kFloat), b.labels).backward();
    opt.step();
  };

  // 2. From memory, then from the cache (the cache's own item order).
  const auto fixed = data.load(data.train_batch(seed, 0, batch));
  train_step(fixed);  // warm-up
  auto t0 = Clock::now();
  for (int64_t s = 0; s < cache_steps; ++s) train_step(fixed);
  const double mem_fp32 = static_cast<double>(cache_steps * batch) / seconds_since(t0);
  // Everything below at evl_train_head's --precision auto (CPU: bf16 autocast
  // where the CPU has native bf16, else fp32); this line is what chose it.
  precision = resolve_precision("auto", PrecisionUse::kTraining, false, "--precision");
  train_step(fixed);  // warm-up
  t0 = Clock::now();
  for (int64_t s = 0; s < cache_steps; ++s) train_step(fixed);
  const double mem = static_cast<double>(cache_steps * batch) / seconds_since(t0);
  const uint64_t before = data.bytes_read();
  t0 = Clock::now();
  for (int64_t s = 0; s < cache_steps; ++s) train_step(data.load(data.train_batch(seed, s, batch)));
  const double disk = static_cast<double>(cache_steps * batch) / seconds_since(t0);
  const double bytes_per_sample =
      static_cast<double>(data.bytes_read() - before) / static_cast<double>(cache_steps * batch);
  const double rss_cached = peak_rss_mib();

  // 3. Online on the same items as the cache's first steps.
  auto t_load = Clock::now();
  auto backbone = std::make_shared<OnlineBackbone>(oc, "cpu");
  const OnlineDataset online(oc, list, OnlineDataset::Views::kTrain, seed, 0, backbone);
  const double load_s = seconds_since(t_load);
  t0 = Clock::now();
  for (int64_t s = 0; s < online_steps; ++s)
    train_step(online.load(online.train_batch(seed, s, batch)));
  const double online_s = seconds_since(t0);
  const double on = static_cast<double>(online_steps * batch) / online_s;
  const OnlineStats st = online.stats();
  const double rss_end = peak_rss_mib();

  std::printf(
      "%s (width %lld, %lld blocks), %lld real clips, 8x16 frames, layers %s, fp16 qk cache, "
      "batch %lld, head %s on CPU, %d threads\n",
      fs::path(model).filename().c_str(), static_cast<long long>(man.backbone.width),
      static_cast<long long>(man.backbone.depth), static_cast<long long>(clips),
      oc.views.layers.c_str(), static_cast<long long>(batch), to_string(precision),
      torch::get_num_threads());
  std::printf("train samples/s from cache:  %8.3f  (%lld steps)\n", disk,
              static_cast<long long>(cache_steps));
  std::printf("train samples/s from memory: %8.3f  (cache/memory %.1f%%)\n", mem, 100 * disk / mem);
  std::printf("train samples/s from memory, fp32: %8.3f  (%s/fp32 %.2fx)\n", mem_fp32,
              to_string(precision), mem / mem_fp32);
  std::printf(
      "train samples/s online:      %8.3f  (%lld steps; decode+views %.1f s, backbone %.1f s, "
      "head %.1f s; backbone load %.1f s not counted)\n",
      on, static_cast<long long>(online_steps), st.decode_s, st.backbone_s,
      online_s - st.decode_s - st.backbone_s, load_s);
  std::printf("cache/online = %.1fx (target >= 10x)\n", disk / on);
  std::printf(
      "bytes read per sample from the cache: %.0f (%.1f MiB); online: %lld frames decoded\n",
      bytes_per_sample, bytes_per_sample / 1048576.0,
      static_cast<long long>(st.frames_decoded / std::max<int64_t>(1, st.views)));
  std::printf("peak RSS MiB: %.0f after the cached steps, %.0f after the online ones\n", rss_cached,
              rss_end);

  const nlohmann::json j = {
      {"bench", "train"},
      {"quick", quick},
      {"model", fs::path(model).filename().string()},
      {"width", man.backbone.width},
      {"depth", man.backbone.depth},
      {"grid", man.backbone.grid},
      {"frames", man.frames},
      {"layers", data.layers()},
      {"clips", clips},
      {"batch", batch},
      {"threads", torch::get_num_threads()},
      {"cache_steps", cache_steps},
      {"online_steps", online_steps},
      {"samples_per_s_cache", disk},
      {"samples_per_s_memory", mem},
      {"samples_per_s_memory_fp32", mem_fp32},
      {"head_precision", to_string(precision)},
      {"samples_per_s_online", on},
      {"cache_over_online", disk / on},
      {"online_decode_s", st.decode_s},
      {"online_backbone_s", st.backbone_s},
      {"online_total_s", online_s},
      {"online_frames_per_sample", static_cast<double>(st.frames_decoded) /
                                       static_cast<double>(std::max<int64_t>(1, st.views))},
      {"bytes_per_sample", bytes_per_sample},
      {"peak_rss_mib", rss_cached},
      {"peak_rss_online_mib", rss_end}};
  std::cout << "BENCH_JSON " << j.dump() << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
