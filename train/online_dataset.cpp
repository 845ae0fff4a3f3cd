// OnlineDataset (online_dataset.h): the extraction pipeline's per-clip work
// (extract/pipeline.cpp: load_clip_views, backbone forward, storage dtype),
// done per training batch instead of once into a cache.
#include "train/online_dataset.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "common/check.h"
#include "extract/pipeline.h"

namespace evl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The checks evl_extract makes on the same settings, with evl_train_head's flag names.
void validate(const OnlineConfig& cfg, const std::string& list, OnlineDataset::Views views) {
  EVL_CHECK_USAGE(!list.empty(), "--online needs --list");
  EVL_CHECK_USAGE(!cfg.backbone.empty(), "--online needs --backbone");
  EVL_CHECK_USAGE(cfg.frames >= 1, "--frames must be >= 1, got ", cfg.frames);
  EVL_CHECK_USAGE(cfg.sampling == "dense" || cfg.sampling == "tsn",
                  "--sampling must be dense or tsn, got '", cfg.sampling, "'");
  EVL_CHECK_USAGE(cfg.sampling == "tsn" || cfg.stride >= 1, "--stride must be >= 1");
  EVL_CHECK_USAGE(cfg.temporal_views >= 1 && cfg.spatial_views >= 1,
                  "--temporal-views and --spatial-views must be >= 1");
  EVL_CHECK_USAGE(cfg.spatial_views == 1 || cfg.spatial_views == 3,
                  "--spatial-views must be 1 or 3 (official crops), got ", cfg.spatial_views);
  EVL_CHECK_USAGE(views == OnlineDataset::Views::kTest || cfg.train_views >= 1,
                  "--train-views must be >= 1 for online training, got ", cfg.train_views);
}

std::vector<EpochSampler::Clip> sampler_clips(int64_t clips, int64_t views) {
  std::vector<EpochSampler::Clip> out(static_cast<size_t>(clips));
  for (int64_t c = 0; c < clips; ++c) {
    out[static_cast<size_t>(c)].clip_index = c;
    for (int64_t v = 0; v < views; ++v) out[static_cast<size_t>(c)].items.push_back(c * views + v);
  }
  return out;
}

std::vector<ClipEntry> read_list(const OnlineConfig& cfg, const std::string& list,
                                 OnlineDataset::Views views) {
  validate(cfg, list, views);
  auto entries = read_dataset_list(list);
  EVL_CHECK(!entries.empty(), "dataset list '", list, "' holds no clips");
  return entries;
}

int64_t views_of(const OnlineConfig& cfg, OnlineDataset::Views views) {
  return views == OnlineDataset::Views::kTrain ? cfg.train_views
                                               : cfg.temporal_views * cfg.spatial_views;
}

}  // namespace

ExtractConfig online_extract_config(const OnlineConfig& cfg, const std::string& list,
                                    OnlineDataset::Views views, uint64_t seed,
                                    const std::string& device) {
  ExtractConfig e;
  e.list = list;
  e.root = cfg.root;
  e.backbone = cfg.backbone;
  e.frames = cfg.frames;
  e.stride = cfg.stride;
  e.sampling = cfg.sampling;
  e.temporal_views = cfg.temporal_views;
  e.spatial_views = cfg.spatial_views;
  e.train_views = views == OnlineDataset::Views::kTrain ? cfg.train_views : 0;
  e.flip = cfg.flip;
  e.photometric = cfg.photometric;
  e.input_size = cfg.input_size;
  e.seed = seed;
  e.layers = cfg.layers;
  e.store = "qk";  // Q/K straight from the backbone, as a qk cache holds them
  e.dtype = cfg.dtype;
  e.precision = cfg.backbone_precision;
  e.device = device;
  return e;
}

OnlineBackbone::OnlineBackbone(const OnlineConfig& cfg, const std::string& device_name)
    : device(device_name), precision(resolve_precision(cfg.backbone_precision, device)) {
  EVL_CHECK_USAGE(!cfg.backbone.empty(), "--online needs --backbone");
  BackboneOptions opts;
  opts.input_size = cfg.input_size;
  opts.device = device;
  opts.precision = precision;
  loaded = load_backbone(cfg.backbone, opts);
}

OnlineDataset::OnlineDataset(const OnlineConfig& cfg, const std::string& list, Views views,
                             uint64_t seed, int64_t decoder_layers,
                             std::shared_ptr<OnlineBackbone> backbone)
    : list_(list),
      root_(cfg.root),
      entries_(read_list(cfg, list, views)),
      views_per_clip_(views_of(cfg, views)),
      backbone_(std::move(backbone)),
      sampler_(sampler_clips(static_cast<int64_t>(entries_.size()), views_per_clip_)) {
  EVL_CHECK(backbone_ != nullptr, "OnlineDataset needs a backbone");
  extract_ = online_extract_config(cfg, list, views, seed, backbone_->device.str());
  manifest_ = make_manifest(extract_, backbone_->loaded, num_clips());
  sampling_ = sampling_config(extract_, manifest_.backbone.input_size);
  rounding_ = manifest_.dtype == cache::DType::kF16    ? torch::kHalf
              : manifest_.dtype == cache::DType::kBF16 ? torch::kBFloat16
                                                       : torch::kFloat;
  const auto available = static_cast<int64_t>(manifest_.layers.size());
  const int64_t m = decoder_layers > 0 ? decoder_layers : available;
  EVL_CHECK_USAGE(m <= available, "--layers '", cfg.layers, "' taps ", available,
                  " blocks, the head needs ", m, " (--decoder-layers)");
  blocks_.assign(manifest_.layers.end() - m, manifest_.layers.end());
}

int64_t OnlineDataset::max_label() const {
  int64_t m = -1;
  for (const auto& e : entries_) m = std::max(m, e.label);
  return m;
}

OnlineStats OnlineDataset::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

FeatureBatch OnlineDataset::load(const std::vector<int64_t>& items) const {
  const int64_t k = views_per_clip_;
  for (const int64_t item : items)
    EVL_CHECK(item >= 0 && item < size(), where(), ": item ", item, " out of range [0, ", size(),
              ")");
  // Each clip once, in order of first appearance.
  std::vector<int64_t> clips;
  std::map<int64_t, size_t> slot;
  for (const int64_t item : items)
    if (slot.emplace(item / k, clips.size()).second) clips.push_back(item / k);

  // 1. Decode and make the views, clips in parallel (one decoder thread each).
  auto t0 = Clock::now();
  std::vector<std::vector<ClipView>> views(clips.size());
  std::vector<std::string> errors(clips.size());
  tbb::parallel_for(size_t(0), clips.size(), [&](size_t i) {
    const ClipEntry& entry = entries_[static_cast<size_t>(clips[i])];
    const std::string path = resolve_video_path(entry, root_);
    try {
      views[i] = load_clip_views(path, entry, sampling_, clips[i]);
      EVL_CHECK(static_cast<int64_t>(views[i].size()) == k, "expected ", k, " views, got ",
                views[i].size());
    } catch (const std::exception& e) {
      // Training cannot skip a clip (the step's samples would change): stop, naming it.
      errors[i] = str("video '", path, "' (line ", entry.line, " of list '", list_,
                      "') cannot be used for online training: ", e.what());
    }
  });
  for (const auto& e : errors) EVL_CHECK(e.empty(), e);
  int64_t frames = 0;
  for (const auto& vs : views)
    for (const auto& v : vs) frames += static_cast<int64_t>(v.frame_indices.size());
  const double decode_s = seconds_since(t0);

  // 2. The backbone over the requested views, in forwards of batch_size views.
  t0 = Clock::now();
  const auto n = static_cast<int64_t>(items.size());
  const int64_t t = manifest_.frames;
  const int64_t tokens = 1 + manifest_.backbone.grid * manifest_.backbone.grid;
  const int64_t width = manifest_.backbone.width;
  FeatureBatch batch;
  for (size_t i = 0; i < blocks_.size(); ++i)
    for (auto* v : {&batch.x, &batch.q, &batch.k})
      v->push_back(torch::empty({n, t, tokens, width}));
  batch.labels = torch::full({n}, -1, torch::kLong);
  batch.clip_index.assign(items.size(), -1);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t clip = items[static_cast<size_t>(r)] / k;
    batch.labels[r] = entries_[static_cast<size_t>(clip)].label;
    batch.clip_index[static_cast<size_t>(r)] = clip;
  }
  // Rounded through the storage dtype exactly as evl_extract stores a record.
  auto round = [&](const torch::Tensor& f) {
    return rounding_ == torch::kFloat ? f.to(torch::kCPU)
                                      : f.to(torch::kCPU, rounding_).to(torch::kFloat);
  };
  const int64_t chunk = std::max<int64_t>(1, extract_.batch_size);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    std::vector<torch::Tensor> images;  // each (T, 3, S, S)
    for (int64_t r = r0; r < r0 + rows; ++r) {
      const int64_t item = items[static_cast<size_t>(r)];
      images.push_back(views[slot.at(item / k)][static_cast<size_t>(item % k)].pixels);
    }
    BackboneOutput out;
    {
      std::lock_guard<std::mutex> lock(backbone_->forward_mu);
      torch::NoGradGuard no_grad;
      out = backbone_->loaded.model->forward(torch::cat(images, 0).to(backbone_->device), blocks_);
    }
    EVL_CHECK(out.layers.size() == blocks_.size(), "internal: backbone returned ",
              out.layers.size(), " layers, asked for ", blocks_.size());
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const auto& lf = out.layers[i];
      batch.x[i].narrow(0, r0, rows).copy_(round(lf.x).view({rows, t, tokens, width}));
      batch.q[i].narrow(0, r0, rows).copy_(round(lf.q).view({rows, t, tokens, width}));
      batch.k[i].narrow(0, r0, rows).copy_(round(lf.k).view({rows, t, tokens, width}));
    }
  }
  const double backbone_s = seconds_since(t0);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.decode_s += decode_s;
  stats_.backbone_s += backbone_s;
  stats_.clips_decoded += static_cast<int64_t>(clips.size());
  stats_.frames_decoded += frames;
  stats_.views += n;
  return batch;
}

}  // namespace evl
