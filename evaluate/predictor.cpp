// evl_predict's work (see predictor.h): settings resolved from the checkpoint's
// recorded cache, then decode -> views -> backbone -> head -> fused softmax.
#include "evaluate/predictor.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <sstream>

#include "common/check.h"
#include "common/log.h"
#include "evaluate/metrics.h"
#include "extract/dataset_list.h"
#include "extract/features.h"

namespace fs = std::filesystem;

namespace evl {

namespace {

// The value of `key` in the top (section-less) part of an INI text, or "".
std::string top_level_value(const std::string& ini, const std::string& key) {
  std::istringstream is(ini);
  std::string line;
  while (std::getline(is, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#' || line[b] == ';') continue;
    if (line[b] == '[') break;
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      const auto first = s.find_first_not_of(" \t\r"), last = s.find_last_not_of(" \t\r");
      return first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
    };
    if (trim(line.substr(0, eq)) == key) return trim(line.substr(eq + 1));
  }
  return "";
}

// The manifest of the cache a checkpoint was trained (or validated) on, when
// its config names one that still exists. Test views come from the val cache.
// Checkpoints that record their test provenance (CheckpointMeta) need no cache:
// evl_predict works from any directory and after the cache is deleted.
std::optional<std::pair<cache::Manifest, std::string>> recorded_manifest(
    const InferenceHead& head, const std::string& checkpoint) {
  if (!head.meta.test_provenance.empty())
    return std::make_pair(cache::Manifest::from_json(head.meta.test_provenance,
                                                     "checkpoint '" + checkpoint + "' provenance"),
                          "the provenance recorded in checkpoint '" + checkpoint + "'");
  const std::string& ini = head.config_ini;
  for (const char* key : {"val-cache", "cache"}) {
    const std::string dir = top_level_value(ini, key);
    if (dir.empty() || !fs::is_regular_file(fs::path(dir) / "manifest.json")) continue;
    try {
      return std::make_pair(cache::Manifest::load(dir), "the manifest of cache '" + dir + "'");
    } catch (const Error& e) {
      log::warn("ignoring the recorded cache: ", e.what());
    }
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::pair<int64_t, float>> top_k(const std::vector<float>& p, int64_t k) {
  std::vector<int64_t> idx(p.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  const auto kk = std::clamp<int64_t>(k, 1, static_cast<int64_t>(p.size()));
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)];
  });
  std::vector<std::pair<int64_t, float>> out;
  for (int64_t i = 0; i < kk; ++i)
    out.emplace_back(idx[static_cast<size_t>(i)],
                     p[static_cast<size_t>(idx[static_cast<size_t>(i)])]);
  return out;
}

Predictor::Predictor(const PredictConfig& cfg) : cfg_(cfg), device_(cfg.device) {
  EVL_CHECK_USAGE(!cfg.backbone.empty() && !cfg.checkpoint.empty(),
                  "--backbone and --checkpoint are required");
  EVL_CHECK_USAGE(cfg.topk >= 1, "--topk must be >= 1, got ", cfg.topk);
  EVL_CHECK_USAGE(cfg.batch_size >= 1, "--batch-size must be >= 1, got ", cfg.batch_size);
  EVL_CHECK_USAGE(!device_.is_cuda() || torch::cuda::is_available(), "--device ", cfg.device,
                  ": this LibTorch has no CUDA device available");
  auto given = [&](const char* flag) {
    return std::find(cfg.given.begin(), cfg.given.end(), flag) != cfg.given.end();
  };
  validate_view_settings(cfg.views, ViewUse::kTestViews, ViewTool::kPredict);  // what was given
  if (cfg.threads > 0) torch::set_num_threads(static_cast<int>(cfg.threads));

  EVL_CHECK(fs::is_regular_file(cfg.backbone), "backbone '", cfg.backbone,
            "' does not exist or is not a file");
  BackboneOptions bopts;
  bopts.device = device_;
  bopts.precision = resolve_precision(cfg.views.precision, PrecisionUse::kBackbone,
                                      device_.is_cuda(), "--precision");

  // Settings: flags, then the recorded cache's manifest, then the defaults.
  // The input size must be known before the backbone is built; official
  // checkpoints need the backbone's head count, so they may load twice.
  head_ = load_inference_head(cfg.checkpoint, 0);
  const auto rec = recorded_manifest(head_, cfg.checkpoint);
  source_ = rec ? rec->second : "defaults";
  const cache::Manifest* m = rec ? &rec->first : nullptr;
  ViewSettings v = cfg.views;
  if (!given("input-size")) v.input_size = m ? m->backbone.input_size : 0;
  bopts.input_size = v.input_size;
  backbone_ = load_backbone(cfg.backbone, bopts);
  const VitArch& arch = backbone_.arch;
  if (head_.official && head_.config.heads != arch.heads)  // official: decoder heads = backbone's
    head_ = load_inference_head(cfg.checkpoint, arch.heads);
  const HeadConfig& hc = head_.config;
  if (rec && rec->first.backbone.hash != backbone_.file_hash)
    log::warn("backbone '", cfg.backbone, "' differs from the one of ", rec->second, " (",
              rec->first.backbone.file, "); predictions will not match");

  if (!given("frames")) v.frames = hc.frames > 0 ? hc.frames : m ? m->frames : v.frames;
  if (!given("sampling") && m) v.sampling = m->sampling;
  if (!given("stride") && m && m->stride > 0) v.stride = m->stride;
  if (!given("temporal-views") && m) v.temporal_views = m->temporal_views;
  if (!given("spatial-views") && m) v.spatial_views = m->spatial_views;
  v.train_views = 0;
  sampling_ = sampling_config(v, 0, backbone_.model->input_size());
  if (m && m->mean.size() == 3 && m->std.size() == 3)
    for (size_t c = 0; c < 3; ++c) {
      sampling_.mean[c] = m->mean[c];
      sampling_.std[c] = m->std[c];
    }
  if (given("layers"))
    blocks_ = resolve_blocks(v.layers, arch.depth);
  else if (m)
    blocks_ = m->layers;
  else
    blocks_ = resolve_blocks(str("last", hc.decoder_layers), arch.depth);

  const std::string where = str("checkpoint '", cfg.checkpoint, "' does not fit backbone '",
                                cfg.backbone, "' and the chosen views: ");
  EVL_CHECK(hc.width == arch.width, where, "width: the backbone has ", arch.width,
            " channels, the head expects ", hc.width);
  const int64_t grid = sampling_.input_size / arch.patch;
  EVL_CHECK(hc.grid <= 0 || hc.grid == grid, where, "grid: ", sampling_.input_size,
            " px input gives ", grid, "x", grid, " patches, the head expects ", hc.grid, "x",
            hc.grid, " (set --input-size ", hc.grid * arch.patch, ")");
  EVL_CHECK(hc.frames <= 0 || hc.frames == sampling_.frames, where, "frames: --frames ",
            sampling_.frames, ", the head was trained on ", hc.frames);
  EVL_CHECK(hc.decoder_layers <= static_cast<int64_t>(blocks_.size()), where,
            "decoder layers: --layers gives ", blocks_.size(), " blocks, the head has ",
            hc.decoder_layers);
  blocks_.erase(blocks_.begin(), blocks_.end() - hc.decoder_layers);  // the last M

  if (!cfg.labels.empty()) {
    names_ = read_label_names(cfg.labels);
    EVL_CHECK(static_cast<int64_t>(names_.size()) == hc.num_classes, "label names '", cfg.labels,
              "' list ", names_.size(), " classes, checkpoint '", cfg.checkpoint, "' has ",
              hc.num_classes);
  }
  head_.head->to(device_);
  head_.head->eval();
}

std::string Predictor::describe() const {
  std::ostringstream os;
  os << sampling_.frames << " frames "
     << (sampling_.tsn ? "tsn" : str("x stride ", sampling_.stride)) << ", "
     << sampling_.spatial_views << " spatial x " << sampling_.temporal_views << " temporal views, "
     << sampling_.input_size << " px, blocks";
  for (const auto b : blocks_) os << ' ' << b;
  os << " (settings from " << source_ << ")";
  return os.str();
}

VideoPrediction Predictor::predict(const std::string& video) {
  ClipEntry entry;
  entry.path = video;
  const auto views = load_clip_views(video, entry, sampling_, 0);  // throws VideoError
  EVL_CHECK(!views.empty(), "video '", video, "': no views");
  torch::InferenceMode guard;
  const int64_t v = static_cast<int64_t>(views.size());
  std::vector<torch::Tensor> pixels;
  for (const auto& cv : views) pixels.push_back(cv.pixels);
  // M x (V, T, L, C), float32, as evl_extract computes them (without the storage rounding)
  ViewFeatures f = backbone_features(*backbone_.model, torch::cat(pixels, 0), sampling_.frames,
                                     blocks_, /*with_qk=*/true, cfg_.batch_size);
  for (auto* part : {&f.x, &f.q, &f.k})
    for (auto& t : *part) t = t.to(device_);
  const auto& x = f.x;
  const auto& q = f.q;
  const auto& k = f.k;
  const auto logits = head_.head->forward(x, q, k);  // (V, K)
  const auto fused = fuse_views(logits, FuseMode::kProbabilities);
  VideoPrediction out;
  out.video = video;
  out.views = v;
  out.probabilities.assign(fused.data_ptr<float>(), fused.data_ptr<float>() + fused.numel());
  return out;
}

nlohmann::json prediction_to_json(const VideoPrediction& p, int64_t k,
                                  const std::vector<std::string>& names) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [cls, prob] : top_k(p.probabilities, k)) {
    nlohmann::json e = {{"class", cls}, {"probability", prob}};
    if (!names.empty()) e["name"] = names[static_cast<size_t>(cls)];
    top.push_back(e);
  }
  return {{"video", p.video}, {"views", p.views}, {"top", top}};
}

}  // namespace evl
