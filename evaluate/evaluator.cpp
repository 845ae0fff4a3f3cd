// evl_eval's work (see evaluator.h): the head over every cached view, views
// fused per clip in the official way, the score file and the metrics report.
#include "evaluate/evaluator.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/atomic_file.h"
#include "common/check.h"
#include "common/log.h"
#include "common/progress.h"
#include "train/cached_dataset.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace evl {

ScoreKind score_kind(FuseMode mode) {
  return mode == FuseMode::kLogits ? ScoreKind::kLogits : ScoreKind::kProbabilities;
}

InferenceHead load_inference_head(const std::string& path, int64_t backbone_heads) {
  EVL_CHECK(fs::is_regular_file(path), "checkpoint '", path, "' does not exist or is not a file");
  InferenceHead out;
  const StateDict state = read_state_dict(path, &out.config_ini, &out.meta);
  out.official = out.config_ini.find("[head]") == std::string::npos;
  if (!out.official) {  // evl checkpoint: the recorded [head] config decides heads/dropouts
    auto loaded = load_head_checkpoint(path);
    out.head = loaded.head;
    out.config = loaded.config;
    return out;
  }
  // Official files record nothing but parameters; the decoder uses the
  // backbone's head count there (model.py), which only the caller knows.
  out.config = infer_head_config(state, path, backbone_heads);
  EVL_CHECK(out.config.width % out.config.heads == 0, "checkpoint '", path, "': width ",
            out.config.width, " is not divisible by the backbone's ", out.config.heads, " heads");
  out.head = EvlHead(out.config);
  load_head_state(out.head, state, path);
  out.head->eval();
  return out;
}

void check_head_fits_cache(const HeadConfig& head, const cache::Manifest& m,
                           const std::string& cache_dir, const std::string& checkpoint) {
  const std::string where =
      str("cache '", cache_dir, "' does not fit checkpoint '", checkpoint, "': ");
  EVL_CHECK(head.width == m.backbone.width, where, "width: the cache's backbone has ",
            m.backbone.width, " channels, the head expects ", head.width);
  EVL_CHECK(head.frames <= 0 || head.frames == m.frames, where, "frames: the cache has ", m.frames,
            " frames per view, the head was trained on ", head.frames);
  EVL_CHECK(head.grid <= 0 || head.grid == m.backbone.grid, where, "grid: the cache has ",
            m.backbone.grid, "x", m.backbone.grid, " patches, the head expects ", head.grid, "x",
            head.grid, " (check --input-size of the extraction)");
  EVL_CHECK(head.decoder_layers <= static_cast<int64_t>(m.layers.size()), where,
            "decoder layers: the cache holds ", m.layers.size(), " layers, the head has ",
            head.decoder_layers, " (re-extract with --layers last", head.decoder_layers, ")");
}

std::string summary_line(const Metrics& m) {
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "top-1 %.2f%%  top-5 %.2f%%  mean class %.2f%%  (%lld labelled videos)",
                100.0 * m.top1, 100.0 * m.top5, 100.0 * m.mean_class_accuracy,
                static_cast<long long>(m.num_labelled));
  return buf;
}

EvalReport run_eval(const EvalConfig& cfg) {
  EVL_CHECK_USAGE(!cfg.cache.empty() && !cfg.checkpoint.empty() && !cfg.scores.empty(),
                  "--cache, --checkpoint and --scores are required");
  EVL_CHECK_USAGE(cfg.batch_size > 0, "--batch-size must be positive, got ", cfg.batch_size);
  const FuseMode fuse = parse_fuse_mode(cfg.fuse);
  const torch::Device device(cfg.device);
  EVL_CHECK_USAGE(!device.is_cuda() || torch::cuda::is_available(), "--device ", cfg.device,
                  ": this LibTorch has no CUDA device available");
  if (cfg.threads > 0) torch::set_num_threads(static_cast<int>(cfg.threads));
  const auto t0 = std::chrono::steady_clock::now();

  const cache::Manifest manifest = cache::Manifest::load(cfg.cache);
  InferenceHead loaded = load_inference_head(cfg.checkpoint, manifest.backbone.heads);
  const HeadConfig& hc = loaded.config;
  check_head_fits_cache(hc, manifest, cfg.cache, cfg.checkpoint);
  check_recorded_provenance(loaded.meta.provenance, manifest, hc.decoder_layers, cfg.checkpoint,
                            "cache '" + cfg.cache + "'");
  if (manifest.train_views > 0)
    log::warn("cache '", cfg.cache, "' holds augmented training views (", manifest.train_views,
              " per clip), not test views; scoring them anyway");
  std::vector<std::string> names;
  if (!cfg.labels.empty()) {
    names = read_label_names(cfg.labels);
    EVL_CHECK(static_cast<int64_t>(names.size()) == hc.num_classes, "label names '", cfg.labels,
              "' list ", names.size(), " classes, checkpoint '", cfg.checkpoint, "' has ",
              hc.num_classes);
  }

  CachedDataset data(cfg.cache, hc.decoder_layers);
  const auto& clips = data.reader().clips();
  for (const auto& c : clips)
    EVL_CHECK(c.label < hc.num_classes, "cache '", cfg.cache, "': video '", c.video_id,
              "' has label ", c.label, ", but checkpoint '", cfg.checkpoint, "' has only ",
              hc.num_classes, " classes");

  EvlHead head = loaded.head;
  head->to(device);
  const int64_t views = manifest.views_per_clip();
  for (const auto& c : clips)
    if (static_cast<int64_t>(c.records.size()) != views)
      log::warn("cache '", cfg.cache, "': video '", c.video_id, "' has ", c.records.size(),
                " views, the manifest says ", views, "; fusing the ones present");

  Progress progress("eval", data.size(), "views");
  const ClipScores scored = score_clips(head, data, cfg.batch_size, device, fuse, &progress);
  progress.finish();
  const int64_t k = hc.num_classes, n = static_cast<int64_t>(clips.size());
  EVL_CHECK(scored.num_clips() == n && scored.num_classes == k, "internal: scored ",
            scored.num_clips(), " clips x ", scored.num_classes, " classes, expected ", n, " x ",
            k);
  EvalReport report;
  ScoreFile& sf = report.scores;
  sf.scores = scored.scores;
  sf.kind = score_kind(fuse);
  sf.num_views = views;
  // The run's name recorded by evl_train_head, else the checkpoint's file name.
  sf.model = run_name_from_ini(loaded.config_ini);
  if (sf.model.empty()) sf.model = fs::path(cfg.checkpoint).filename().string();
  for (const auto& c : clips) {
    sf.video_ids.push_back(c.video_id);
    sf.labels.push_back(c.label);
  }

  write_scores(cfg.scores, sf);
  report.views = data.size();
  report.missing_clips = std::max<int64_t>(0, manifest.num_clips - n);
  report.metrics = compute_metrics(sf.scores.data(), n, k, sf.labels);
  const int64_t labelled = report.metrics.num_labelled;
  if (labelled + report.missing_clips > 0)
    report.top1_counting_missing = report.metrics.top1 * static_cast<double>(labelled) /
                                   static_cast<double>(labelled + report.missing_clips);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.json = {{"cache", cfg.cache},
                 {"checkpoint", cfg.checkpoint},
                 {"checkpoint_format", loaded.official ? "official" : "evl"},
                 {"scores", cfg.scores},
                 {"fuse", fuse == FuseMode::kLogits ? "logits" : "prob"},
                 {"num_videos", n},
                 {"num_views", views},
                 {"missing_videos", report.missing_clips},
                 {"top1_counting_missing_as_wrong", report.top1_counting_missing},
                 {"seconds", report.seconds},
                 {"metrics", metrics_to_json(report.metrics, names)}};
  if (!cfg.json.empty()) write_file_atomic(cfg.json, report.json.dump(2) + "\n");
  return report;
}

}  // namespace evl
