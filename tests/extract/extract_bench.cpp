// bench_extract: end-to-end clip-views/s of the extraction pipeline (evl::run_extraction:
// decode, 8x16 sampling, 3 temporal test views, CLIP ViT, fp16 qk records written to a
// temporary cache) against the backbone alone on the same clips, decoded beforehand and
// fed in the same batches, in one run; plus the decode-alone rate and peak RSS, and
// the write stage (ExtractionJob::write) timed alone on the first batch's features
// for --dtype fp16, int8 and fp8 side by side: what quantizing costs the extraction.
// Default: ViT-B/16 random weights (scripts/make_clip_backbone.py, kept under the build
// dir), 6 real clips, 2 threads. --quick: the tiny test backbone, last 2 layers, 2 clips.
//   bench_extract [--quick] [--model PT] [--clips N] [--threads N] [--batch-size N]
//                 [--precision auto|fp32|bf16] [--layers SPEC] [--dir PATH]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "extract/clip_vit.h"
#include "extract/dataset_list.h"
#include "extract/pipeline.h"
#include "extract/pipeline_stages.h"
#include "extract/views.h"
#include "tests/support/bench_support.h"

namespace fs = std::filesystem;

namespace {

using evl::bench::Clock;
using evl::bench::peak_rss_mib;
using evl::bench::seconds_since;

// Reads a file once so that both measurements start from a warm page cache.
void warm_page_cache(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
  }
}

struct Args {
  bool quick = false;
  std::string model, precision = "auto", layers = "last4", dir;
  int64_t clips = 6, batch_size = 3;
  int threads = 2;
};

using evl::bench::RemoveOnExit;

void usage(std::ostream& os) {
  os << "usage: bench_extract [--quick] [--model PT] [--clips N] [--threads N] "
        "[--batch-size N] [--precision auto|fp32|bf16] [--layers SPEC] [--dir PATH]\n";
}

}  // namespace

int main(int argc, char** argv) try {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + s);
      return argv[++i];
    };
    if (s == "--quick") {
      args.quick = true;
    } else if (s == "--model") {
      args.model = next();
    } else if (s == "--clips") {
      args.clips = std::stoll(next());
    } else if (s == "--threads") {
      args.threads = std::stoi(next());
    } else if (s == "--batch-size") {
      args.batch_size = std::stoll(next());
    } else if (s == "--precision") {
      args.precision = next();
    } else if (s == "--layers") {
      args.layers = next();
    } else if (s == "--dir") {
      args.dir = next();
    } else if (s == "--help") {
      usage(std::cout);
      return 0;
    } else {
      usage(std::cerr);
      return 2;
    }
  }
  const std::string src = EVL_SOURCE_DIR;
  if (args.quick) {
    if (args.model.empty()) args.model = src + "/tests/fixtures/backbone/tiny_clip_openai.pt";
    args.layers = "last2";
    args.clips = std::min<int64_t>(args.clips, 2);
  }
  if (args.model.empty()) {
    args.model = evl::bench::b16_backbone();
    if (args.model.empty()) return 1;
  }

  // The clips: real ~10-18 s action videos in EVL_SHARED_DIR/data/real/videos/action/.
  const std::vector<std::string> all_videos = evl::bench::real_action_clips();
  if (args.clips < 1 || args.clips > static_cast<int64_t>(all_videos.size())) {
    std::cerr << "error: --clips must be in [1, " << all_videos.size() << "]\n";
    return 2;
  }
  const fs::path work = fs::path(args.dir.empty() ? fs::temp_directory_path().string() : args.dir) /
                        ("evl_bench_extract_" + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  const RemoveOnExit cleanup{work};
  const std::string list = (work / "clips.txt").string();
  {
    std::ofstream out(list);
    for (int64_t i = 0; i < args.clips; ++i) out << all_videos[i] << " " << i << "\n";
  }

  evl::ExtractConfig cfg;
  cfg.list = list;
  cfg.backbone = args.model;
  cfg.out = (work / "cache").string();
  cfg.views.frames = 8;
  cfg.views.stride = 16;
  cfg.views.temporal_views = 3;
  cfg.views.spatial_views = 1;
  cfg.views.layers = args.layers;
  cfg.store = "qk";
  cfg.views.dtype = "fp16";
  cfg.views.precision = args.precision;
  cfg.threads = args.threads;
  cfg.batch_size = args.batch_size;
  const int64_t views_per_clip = cfg.views.temporal_views * cfg.views.spatial_views;

  torch::set_num_threads(args.threads);
  evl::BackboneOptions bopts;
  bopts.precision =
      args.precision == "auto" ? evl::Precision::kFp32 : evl::parse_precision(args.precision);
  std::printf(
      "bench_extract: %s, %lld clips x %lld views (8x16), layers %s, qk fp16, "
      "batch %lld views, precision %s, %d threads, OMP_WAIT_POLICY=%s\n",
      args.model.c_str(), static_cast<long long>(args.clips),
      static_cast<long long>(views_per_clip), args.layers.c_str(),
      static_cast<long long>(args.batch_size), evl::to_string(bopts.precision), args.threads,
      getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)");
  std::fflush(stdout);

  // Warm-up: weights and videos into the page cache; LibTorch's thread pool started.
  warm_page_cache(args.model);
  const std::vector<evl::ClipEntry> entries = evl::read_dataset_list(list);
  for (const auto& e : entries) warm_page_cache(e.path);
  auto t0 = Clock::now();
  double load_s = 0;
  evl::SamplingConfig scfg;
  std::vector<int64_t> blocks;
  {
    evl::LoadedBackbone bb = evl::load_backbone(args.model, bopts);
    load_s = seconds_since(t0);
    scfg.frames = cfg.views.frames;
    scfg.stride = cfg.views.stride;
    scfg.temporal_views = cfg.views.temporal_views;
    scfg.spatial_views = cfg.views.spatial_views;
    scfg.input_size = bb.arch.image_size;
    blocks = evl::resolve_blocks(args.layers, bb.arch.depth);
    bb.model->forward(torch::randn({cfg.views.frames, 3, bb.arch.image_size, bb.arch.image_size}),
                      blocks);
  }

  // 1. The pipeline, end to end (load, decode, views, backbone, fp16 records, commits).
  const evl::ExtractSummary summary = evl::run_extraction(cfg, nullptr);
  const double pipeline_rss = peak_rss_mib();
  const double views = static_cast<double>(summary.views_written);
  if (summary.clips_failed > 0 || summary.views_written != args.clips * views_per_clip) {
    std::cerr << "error: the pipeline wrote " << summary.views_written << " views ("
              << summary.clips_failed << " clips failed)\n";
    return 1;
  }

  // 2. Decoding alone, sequential on one thread (what the pipeline has to hide).
  t0 = Clock::now();
  std::vector<std::vector<evl::ClipView>> decoded;
  for (size_t i = 0; i < entries.size(); ++i)
    decoded.push_back(
        evl::load_clip_views(entries[i].path, entries[i], scfg, static_cast<int64_t>(i)));
  const double decode_s = seconds_since(t0);

  // 3. The backbone alone on those views, in the pipeline's batches: groups of
  // max(1, batch/views) consecutive clips, forwarded in chunks of batch*frames images.
  evl::LoadedBackbone bb = evl::load_backbone(args.model, bopts);
  const int64_t group = std::max<int64_t>(1, cfg.batch_size / views_per_clip);
  const int64_t chunk = cfg.batch_size * cfg.views.frames;
  std::vector<torch::Tensor> batches;
  for (size_t g = 0; g < decoded.size(); g += static_cast<size_t>(group)) {
    std::vector<torch::Tensor> images;
    for (size_t c = g; c < std::min(decoded.size(), g + static_cast<size_t>(group)); ++c)
      for (const auto& v : decoded[c]) images.push_back(v.pixels);
    batches.push_back(torch::cat(images, 0));
  }
  std::vector<evl::BackboneOutput> group0;  // the first batch's features, for step 4
  t0 = Clock::now();
  for (const auto& all : batches)
    for (int64_t r = 0; r < all.size(0); r += chunk) {
      evl::BackboneOutput out =
          bb.model->forward(all.narrow(0, r, std::min(chunk, all.size(0) - r)), blocks);
      if (&all == &batches.front()) group0.push_back(std::move(out));
    }
  const double backbone_s = seconds_since(t0);

  // 4. The write stage alone (ExtractionJob::write: conversion to the storage
  // dtype, records, checksums, LMDB, durable commit) on the first batch's
  // features, per dtype, side by side: what int8/fp8 quantization costs.
  const int64_t group_views = batches.front().size(0) / cfg.views.frames;
  evl::Batch write_batch;
  for (int64_t c = 0; c * views_per_clip < group_views; ++c) {
    auto w = std::make_unique<evl::ClipWork>();
    w->clip_index = c;
    w->entry = &entries[static_cast<size_t>(c)];
    w->views = decoded[static_cast<size_t>(c)];
    for (size_t j = 0; j < blocks.size(); ++j) {
      auto views_of = [&](torch::Tensor evl::LayerFeatures::*member) {  // (V, T, L, C)
        std::vector<torch::Tensor> parts;
        for (const auto& o : group0) parts.push_back(o.layers[j].*member);
        const torch::Tensor all = torch::cat(parts, 0);
        return all.view({group_views, cfg.views.frames, all.size(1), all.size(2)})
            .narrow(0, c * views_per_clip, views_per_clip);
      };
      w->features.x.push_back(views_of(&evl::LayerFeatures::x));
      w->features.q.push_back(views_of(&evl::LayerFeatures::q));
      w->features.k.push_back(views_of(&evl::LayerFeatures::k));
    }
    write_batch.push_back(std::move(w));
  }
  group0.clear();
  const double write_views = static_cast<double>(write_batch.size() * views_per_clip);
  struct WriteStage {
    std::string dtype;
    double write_s = 1e30, convert_s = 1e30;
    uint64_t bytes = 0;
  };
  std::vector<WriteStage> stages;
  {
    std::vector<std::unique_ptr<evl::ExtractionJob>> jobs;
    for (const char* dtype : {"fp16", "int8", "fp8"}) {
      evl::ExtractConfig wc = cfg;
      wc.views.dtype = dtype;
      wc.out = (work / (std::string("write_") + dtype)).string();
      jobs.push_back(std::make_unique<evl::ExtractionJob>(wc));
      stages.push_back({dtype});
    }
    for (int rep = 0; rep < 2; ++rep)  // interleaved, best of 2
      for (size_t d = 0; d < jobs.size(); ++d) {
        const evl::ExtractSummary before = jobs[d]->summary();
        const std::string fatal = jobs[d]->write(write_batch);
        if (!fatal.empty()) throw std::runtime_error(fatal);
        const evl::ExtractSummary& after = jobs[d]->summary();
        stages[d].write_s = std::min(stages[d].write_s, after.write_seconds - before.write_seconds);
        stages[d].convert_s =
            std::min(stages[d].convert_s, after.convert_seconds - before.convert_seconds);
      }
    for (size_t d = 0; d < jobs.size(); ++d) stages[d].bytes = jobs[d]->finish(false).bytes_written;
  }

  const double e2e = views / summary.seconds;
  const double e2e_steady = views / std::max(1e-9, summary.seconds - load_s);
  const double alone = views / backbone_s;
  const double decode_rate = views / decode_s;
  std::printf(
      "pipeline   %7.2f s  %7.2f clip-views/s (incl. backbone load %.2f s); "
      "%.2f clip-views/s excluding the load\n",
      summary.seconds, e2e, load_s, e2e_steady);
  std::printf("backbone   %7.2f s  %7.2f clip-views/s (same batches, pre-decoded inputs)\n",
              backbone_s, alone);
  std::printf("decode     %7.2f s  %7.2f clip-views/s (sequential, 1 thread, %lld frames)\n",
              decode_s, decode_rate, static_cast<long long>(summary.frames_decoded));
  std::printf(
      "end-to-end / backbone-alone = %.1f%% excluding the backbone load, %.1f%% "
      "including it (target >= 90%%)\n",
      100 * e2e_steady / alone, 100 * e2e / alone);
  const double view_s = summary.seconds / views;  // the pipeline's time per clip-view
  std::printf(
      "write stage in the pipeline: %.2f s of %.2f s (%.1f%%; conversion to fp16 %.2f s), "
      "overlapping the backbone\n",
      summary.write_seconds, summary.seconds, 100 * summary.write_seconds / summary.seconds,
      summary.convert_seconds);
  nlohmann::json write_stage = nlohmann::json::object();
  for (const auto& st : stages) {
    const double per_view = st.write_s / write_views;
    std::printf(
        "write stage alone, %-4s: %.1f ms per clip-view (conversion %.1f ms) = %.2f%% of the "
        "pipeline's %.2f s per clip-view; vs fp16 %+.2f%%; %.2f MiB per clip-view\n",
        st.dtype.c_str(), 1e3 * per_view, 1e3 * st.convert_s / write_views, 100 * per_view / view_s,
        view_s, 100 * (st.write_s - stages[0].write_s) / write_views / view_s,
        static_cast<double>(st.bytes) / 2 / write_views / 1048576.0);
    write_stage[st.dtype] = {
        {"write_s_per_view", per_view},
        {"convert_s_per_view", st.convert_s / write_views},
        {"share_of_pipeline", per_view / view_s},
        {"extra_over_fp16_share", (st.write_s - stages[0].write_s) / write_views / view_s},
        {"bytes_per_clip_view", static_cast<double>(st.bytes) / 2 / write_views}};
  }
  std::printf(
      "written %.1f MiB, %.0f B per clip-view; peak RSS after the pipeline %.0f MiB, "
      "at the end %.0f MiB\n",
      static_cast<double>(summary.bytes_written) / 1048576.0,
      static_cast<double>(summary.bytes_written) / views, pipeline_rss, peak_rss_mib());

  nlohmann::json j = {{"bench", "extract"},
                      {"quick", args.quick},
                      {"model", fs::path(args.model).filename().string()},
                      {"width", bb.arch.width},
                      {"depth", bb.arch.depth},
                      {"image_size", bb.arch.image_size},
                      {"clips", args.clips},
                      {"views_per_clip", views_per_clip},
                      {"frames", cfg.views.frames},
                      {"stride", cfg.views.stride},
                      {"layers", args.layers},
                      {"precision", evl::to_string(bopts.precision)},
                      {"threads", args.threads},
                      {"batch_size", args.batch_size},
                      {"pipeline_s", summary.seconds},
                      {"backbone_load_s", load_s},
                      {"pipeline_views_per_s", e2e},
                      {"pipeline_views_per_s_excl_load", e2e_steady},
                      {"backbone_s", backbone_s},
                      {"backbone_views_per_s", alone},
                      {"decode_s", decode_s},
                      {"decode_views_per_s", decode_rate},
                      {"ratio", e2e_steady / alone},
                      {"ratio_incl_load", e2e / alone},
                      {"frames_decoded", summary.frames_decoded},
                      {"bytes_written", summary.bytes_written},
                      {"bytes_per_clip_view", static_cast<double>(summary.bytes_written) / views},
                      {"pipeline_write_s", summary.write_seconds},
                      {"pipeline_convert_s", summary.convert_seconds},
                      {"write_stage_views", static_cast<int64_t>(write_views)},
                      {"write_stage", write_stage},
                      {"peak_rss_mib", pipeline_rss},
                      {"peak_rss_end_mib", peak_rss_mib()}};
  std::cout << "BENCH_JSON " << j.dump() << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
