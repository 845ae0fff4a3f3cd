// evl_eval's work (see evaluator.h): the head over every cached view, views
// fused per clip in the official way, the score file and the metrics report.
#include "evaluate/evaluator.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "common/log.h"
#include "common/progress.h"
#include "extract/dataset_list.h"
#include "train/cached_dataset.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace evl {

FuseMode parse_fuse_mode(const std::string& text) {
  if (text == "prob" || text == "probs" || text == "probabilities") return FuseMode::kProbabilities;
  if (text == "logits") return FuseMode::kLogits;
  EVL_THROW(UsageError, "--fuse '", text, "': expected prob (mean of softmax) or logits");
}

ScoreKind score_kind(FuseMode mode) {
  return mode == FuseMode::kLogits ? ScoreKind::kLogits : ScoreKind::kProbabilities;
}

InferenceHead load_inference_head(const std::string& path, int64_t backbone_heads) {
  EVL_CHECK(fs::is_regular_file(path), "checkpoint '", path, "' does not exist or is not a file");
  InferenceHead out;
  const StateDict state = read_state_dict(path, &out.config_ini);
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

torch::Tensor fuse_views(const torch::Tensor& logits, FuseMode mode) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) > 0, "expected (V, K) logits, got ",
              logits.sizes());
  auto x = logits.detach().to(torch::kCPU, torch::kDouble);
  if (mode == FuseMode::kProbabilities) x = x.softmax(-1);
  return x.mean(0).to(torch::kFloat);
}

std::string summary_line(const Metrics& m) {
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "top-1 %.2f%%  top-5 %.2f%%  mean class %.2f%%  (%lld labelled videos)",
                100.0 * m.top1, 100.0 * m.top5, 100.0 * m.mean_class_accuracy,
                static_cast<long long>(m.num_labelled));
  return buf;
}

namespace {

void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    EVL_CHECK(f.good(), "cannot write '", tmp, "'");
    f << text;
    f.flush();
    EVL_CHECK(f.good(), "writing '", tmp, "' failed (disk full?)");
  }
  fs::rename(tmp, path);
}

}  // namespace

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
  head->eval();
  torch::InferenceMode guard;

  // Records in clip order, batched across clips; each clip's logits are
  // gathered and fused when its last view has been scored.
  std::vector<std::pair<int64_t, int64_t>> order;  // (clip position, record)
  for (size_t c = 0; c < clips.size(); ++c)
    for (const int64_t r : clips[c].records) order.emplace_back(static_cast<int64_t>(c), r);
  const int64_t k = hc.num_classes, n = static_cast<int64_t>(clips.size());
  const int64_t views = manifest.views_per_clip();
  EvalReport report;
  ScoreFile& sf = report.scores;
  sf.scores.assign(static_cast<size_t>(n * k), 0.f);
  sf.kind = score_kind(fuse);
  sf.num_views = views;
  sf.model = fs::path(cfg.checkpoint).filename().string();
  for (const auto& c : clips) {
    sf.video_ids.push_back(c.video_id);
    sf.labels.push_back(c.label);
    if (static_cast<int64_t>(c.records.size()) != views)
      log::warn("cache '", cfg.cache, "': video '", c.video_id, "' has ", c.records.size(),
                " views, the manifest says ", views, "; fusing the ones present");
  }

  Progress progress("eval", static_cast<int64_t>(order.size()), "views");
  std::vector<torch::Tensor> pending;  // logits (1, K) of the current clip's views
  int64_t current = 0;
  auto flush = [&] {
    const auto fused = fuse_views(torch::cat(pending, 0), fuse);
    std::copy_n(fused.data_ptr<float>(), k, sf.scores.begin() + current * k);
    pending.clear();
  };
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(cfg.batch_size)) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(cfg.batch_size));
    std::vector<int64_t> idx;
    for (size_t i = start; i < end; ++i) idx.push_back(order[i].second);
    FeatureBatch b = data.load(idx);
    for (auto* v : {&b.x, &b.q, &b.k})
      for (auto& t : *v) t = t.to(device);
    const auto logits = head->forward(b.x, b.q, b.k).to(torch::kCPU, torch::kFloat);
    EVL_CHECK(torch::isfinite(logits).all().item<bool>(), "non-finite logits for records ",
              data.reader().keys()[static_cast<size_t>(idx.front())], "..",
              data.reader().keys()[static_cast<size_t>(idx.back())], " of cache '", cfg.cache,
              "' (checkpoint '", cfg.checkpoint, "')");
    for (size_t i = start; i < end; ++i) {
      if (order[i].first != current) {
        flush();
        current = order[i].first;
      }
      pending.push_back(logits[static_cast<int64_t>(i - start)].unsqueeze(0));
    }
    progress.advance(static_cast<int64_t>(end - start));
  }
  if (!pending.empty()) flush();
  progress.finish();

  write_scores(cfg.scores, sf);
  report.views = static_cast<int64_t>(order.size());
  report.missing_clips = std::max<int64_t>(0, manifest.num_clips - n);
  report.metrics = compute_metrics(sf.scores.data(), n, k, sf.labels);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.json = {{"cache", cfg.cache},
                 {"checkpoint", cfg.checkpoint},
                 {"checkpoint_format", loaded.official ? "official" : "evl"},
                 {"scores", cfg.scores},
                 {"fuse", fuse == FuseMode::kLogits ? "logits" : "prob"},
                 {"num_videos", n},
                 {"num_views", views},
                 {"missing_videos", report.missing_clips},
                 {"seconds", report.seconds},
                 {"metrics", metrics_to_json(report.metrics, names)}};
  if (!cfg.json.empty()) write_text(cfg.json, report.json.dump(2) + "\n");
  return report;
}

}  // namespace evl
