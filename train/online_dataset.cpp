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
  fresh_ = views == Views::kTrain && !cfg.replay_views;
  views_per_clip_ = fresh_ ? 1 : extract_.views.views_per_clip();
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

namespace {

// What an item of an OnlineDataset is: the clip and its view index (fresh: the draw).
struct ItemView {
  int64_t clip = 0, view = 0;
};

ItemView item_view(int64_t item, bool fresh, int64_t clips, int64_t views_per_clip) {
  if (fresh) return {item % clips, item / clips};
  return {item / views_per_clip, item % views_per_clip};
}

}  // namespace

std::string OnlineDataset::item_name(int64_t item) const {
  if (item < 0 || (!fresh_ && item >= size())) return str("item ", item);
  const ItemView iv = item_view(item, fresh_, num_clips(), views_per_clip_);
  return str("clip ", iv.clip, fresh_ ? " draw " : " view ", iv.view, " ('",
             entries_[static_cast<size_t>(iv.clip)].path, "')");
}

std::vector<int64_t> OnlineDataset::train_batch(uint64_t seed, int64_t step, int64_t batch) const {
  std::vector<int64_t> items = sampler_.batch(seed, step, batch);
  if (!fresh_) return items;
  // The sampler's item for clip c is c (one per clip); epoch e -> draw e.
  const int64_t n = num_clips();
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t epoch = (step * batch + static_cast<int64_t>(i)) / n;
    items[i] += epoch * n;
  }
  return items;
}

OnlineStats OnlineDataset::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

FeatureBatch OnlineDataset::load(const std::vector<int64_t>& items) const {
  const int64_t k = views_per_clip_;
  for (const int64_t item : items)
    EVL_CHECK(item >= 0 && (fresh_ || item < size()), where(), ": item ", item,
              " out of range [0, ", size(), ")");
  // The units to decode, each once, in order of first appearance: a clip with
  // all its K views (replay, test views), or one fresh draw of a clip.
  struct Unit {
    int64_t clip, first_view, views;
  };
  std::vector<Unit> units;
  std::map<int64_t, size_t> slot;  // unit key (clip, or the fresh item) -> units index
  auto key_of = [&](int64_t item) { return fresh_ ? item : item / k; };
  for (const int64_t item : items)
    if (slot.emplace(key_of(item), units.size()).second) {
      const ItemView iv = item_view(item, fresh_, num_clips(), k);
      units.push_back(fresh_ ? Unit{iv.clip, iv.view, 1} : Unit{iv.clip, 0, k});
    }

  // 1. Decode and make the views, units in parallel (one decoder thread each).
  auto t0 = Clock::now();
  std::vector<std::vector<ClipView>> views(units.size());
  std::vector<std::string> errors(units.size());
  tbb::parallel_for(size_t(0), units.size(), [&](size_t i) {
    const Unit& u = units[i];
    const ClipEntry& entry = entries_[static_cast<size_t>(u.clip)];
    const std::string path = resolve_video_path(entry, root_);
    try {
      SamplingConfig s = sampling_;
      if (fresh_) {
        s.first_train_view = u.first_view;
        s.train_views = 1;
      }
      views[i] = load_clip_views(path, entry, s, u.clip);
      EVL_CHECK(static_cast<int64_t>(views[i].size()) == u.views, "expected ", u.views,
                " views, got ", views[i].size());
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
    const ItemView iv = item_view(item, fresh_, num_clips(), k);
    batch.labels[r] = entries_[static_cast<size_t>(iv.clip)].label;
    batch.clip_index[static_cast<size_t>(r)] = iv.clip;
    const auto& unit_views = views[slot.at(key_of(item))];
    images.push_back(unit_views[fresh_ ? 0 : static_cast<size_t>(iv.view)].pixels);
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
  stats_.clips_decoded += static_cast<int64_t>(units.size());
  stats_.frames_decoded += frames;
  stats_.views += n;
  return batch;
}

}  // namespace evl
