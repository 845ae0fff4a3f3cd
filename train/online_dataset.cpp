// OnlineDataset (online_dataset.h): the extraction pipeline's per-clip work
// (extract/views.h load_clip_views, extract/features.h backbone_features, the
// storage rounding), done per training batch instead of once into a cache.
#include "train/online_dataset.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "common/check.h"
#include "extract/features.h"
#include "extract/pipeline.h"

namespace evl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
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
  EVL_CHECK_USAGE(!list.empty(), "--online needs --list");
  EVL_CHECK_USAGE(!cfg.backbone.empty(), "--online needs --backbone");
  validate_view_settings(
      cfg.views,
      views == OnlineDataset::Views::kTrain ? ViewUse::kOnlineTrain : ViewUse::kTestViews,
      ViewTool::kOnline);
  auto entries = read_dataset_list(list);
  EVL_CHECK(!entries.empty(), "dataset list '", list, "' holds no clips");
  return entries;
}

}  // namespace

ExtractConfig online_extract_config(const OnlineConfig& cfg, const std::string& list,
                                    OnlineDataset::Views views, uint64_t seed,
                                    const std::string& device) {
  ExtractConfig e;
  e.list = list;
  e.root = cfg.root;
  e.backbone = cfg.backbone;
  e.views = cfg.views;
  if (views == OnlineDataset::Views::kTest) e.views.train_views = 0;  // test views
  e.seed = seed;
  e.store = "qk";  // Q/K straight from the backbone, as a qk cache holds them
  e.device = device;
  return e;
}

OnlineBackbone::OnlineBackbone(const OnlineConfig& cfg, const std::string& device_name)
    : device(device_name),
      precision(resolve_precision(cfg.views.precision, PrecisionUse::kBackbone, device.is_cuda(),
                                  "--backbone-precision")) {
  EVL_CHECK_USAGE(!cfg.backbone.empty(), "--online needs --backbone");
  BackboneOptions opts;
  opts.input_size = cfg.views.input_size;
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
      backbone_(std::move(backbone)),
      sampler_({}) {
  EVL_CHECK(backbone_ != nullptr, "OnlineDataset needs a backbone");
  extract_ = online_extract_config(cfg, list, views, seed, backbone_->device.str());
  views_per_clip_ = extract_.views.views_per_clip();
  sampler_ = EpochSampler(sampler_clips(num_clips(), views_per_clip_));
  manifest_ = make_manifest(extract_, backbone_->loaded, num_clips());
  sampling_ = sampling_config(extract_.views, seed, manifest_.backbone.input_size);
  rounding_ = manifest_.dtype;
  const auto available = static_cast<int64_t>(manifest_.layers.size());
  const int64_t m = decoder_layers > 0 ? decoder_layers : available;
  EVL_CHECK_USAGE(m <= available, "--layers '", cfg.views.layers, "' taps ", available,
                  " blocks, the head needs ", m, " (--decoder-layers)");
  blocks_.assign(manifest_.layers.end() - m, manifest_.layers.end());
}

int64_t OnlineDataset::max_label() const {
  int64_t m = -1;
  for (const auto& e : entries_) m = std::max(m, e.label);
  return m;
}

std::string OnlineDataset::item_name(int64_t item) const {
  const int64_t clip = item / views_per_clip_;
  if (item < 0 || clip >= num_clips()) return str("item ", item);
  return str("clip ", clip, " view ", item % views_per_clip_, " ('",
             entries_[static_cast<size_t>(clip)].path, "')");
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
  std::vector<torch::Tensor> images;  // each (T, 3, S, S), in item order
  for (int64_t r = 0; r < n; ++r) {
    const int64_t item = items[static_cast<size_t>(r)];
    const int64_t clip = item / k;
    batch.labels[r] = entries_[static_cast<size_t>(clip)].label;
    batch.clip_index[static_cast<size_t>(r)] = clip;
    images.push_back(views[slot.at(clip)][static_cast<size_t>(item % k)].pixels);
  }
  {
    std::lock_guard<std::mutex> lock(backbone_->forward_mu);
    // Rounded through the storage dtype exactly as evl_extract stores a record.
    backbone_features(
        *backbone_->loaded.model, torch::cat(images, 0), t, blocks_,
        /*with_qk=*/true, std::max<int64_t>(1, extract_.batch_size),
        [&](int64_t r0, const ViewFeatures& f) {
          const int64_t rows = f.x.front().size(0);
          for (size_t i = 0; i < blocks_.size(); ++i) {
            batch.x[i].narrow(0, r0, rows).copy_(round_through_storage(f.x[i], rounding_));
            batch.q[i].narrow(0, r0, rows).copy_(round_through_storage(f.q[i], rounding_));
            batch.k[i].narrow(0, r0, rows).copy_(round_through_storage(f.k[i], rounding_));
          }
        });
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
