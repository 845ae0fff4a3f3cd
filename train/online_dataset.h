// The online training source of evl_train_head --online: per batch it decodes
// the clips, makes their views, runs the frozen CLIP backbone and hands the
// decoder inputs to the training loop, with no cache. It is the official
// recipe's data path (for datasets too large to cache) and the honest baseline
// of the cached one: for the same list, settings and seed it yields the
// samples a cache made by evl_extract would hold, in the same order.
//
// Equivalence with a cache extracted by `evl_extract` with the settings of
// extract_config() (what a test checks):
//  - items are (clip, view) pairs numbered clip * K + view, K = views per clip,
//    as the records of a complete cache (keys sort in that order);
//  - views come from the same code (extract/views.h load_clip_views) with the
//    same ViewSettings and seed, so they are the same pixels;
//  - features come from the same code (extract/features.h backbone_features)
//    in forwards of the same size, get the storage rounding of --dtype (fp16 by
//    default) and come back as float32, like the cache's qk records;
//  - train_batch is the same EpochSampler over the same clips.
// Features can still differ from a cache's in the last bit of the rounding:
// GEMM results may depend on the batch composition, which differs (evl_extract
// batches consecutive clips, a training batch is a random set).
//
// Fresh views (the default for training, as the official loader): instead of
// replaying K fixed views, every epoch draws a new view of every clip (new
// temporal start, crop and RandAugment). Draw d of clip c is item d * N + c
// (N clips) and is exactly view d of a cache extracted with --train-views > d
// (extract/views.h: view v depends only on (seed, clip, v)); epoch e uses draw
// e, so a step's views are a pure function of (seed, step) and resume is exact.
// OnlineConfig::replay_views restores the replay of the K views (the
// cache-equivalence above).
//
// Costs: in replay mode every training view of a clip is decoded when any one
// is needed (load_clip_views makes all K at once), so decode time grows with K;
// a fresh draw decodes only its own frames. The backbone runs only on the views
// asked for.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "extract/clip_vit.h"
#include "extract/dataset_list.h"
#include "extract/extract_config.h"
#include "extract/view_settings.h"
#include "extract/views.h"
#include "train/cached_dataset.h"

namespace evl {

// evl_train_head --online: the lists, the backbone, and the view and feature
// settings (extract/view_settings.h, with evl_extract's flag names; the backbone
// precision is --backbone-precision). The training list gets K = views.train_views
// >= 1 augmented views per clip; the validation list gets the test views
// (temporal_views x spatial_views). Views are drawn from TrainConfig::seed exactly
// as `evl_extract --seed` draws them.
struct OnlineConfig {
  bool enabled = false;       // --online
  std::string list;           // training dataset list (evl_extract --list format)
  std::string val_list;       // optional validation list
  std::string root;           // prefix for relative paths in the lists
  std::string backbone;       // CLIP weights (.pt / .safetensors)
  bool replay_views = false;  // --replay-views: replay K = train_views views per clip
  ViewSettings views = [] {
    ViewSettings v;
    v.train_views = 1;  // online training needs K >= 1 (evl_extract's default is 0: test views)
    return v;
  }();
};

// The frozen backbone of an online run: loaded once, shared by the training
// and validation sources (one forward at a time).
struct OnlineBackbone {
  // Throws evl::Error naming the file, UsageError for a bad precision/input size.
  OnlineBackbone(const OnlineConfig& cfg, const std::string& device);
  LoadedBackbone loaded;
  torch::Device device;
  Precision precision;
  std::mutex forward_mu;
};

// Time spent and work done by an OnlineDataset (for the benchmark).
struct OnlineStats {
  double decode_s = 0;    // decoding + view preprocessing (wall time, in parallel)
  double backbone_s = 0;  // backbone forward + rounding
  int64_t clips_decoded = 0, frames_decoded = 0, views = 0;
};

class OnlineDataset : public FeatureSource {
 public:
  enum class Views {
    kTrain,  // cfg.views.train_views augmented views per clip
    kTest,   // cfg.views.temporal_views x spatial_views test views per clip
  };
  // Reads the list (paths resolved against cfg.root). `seed` draws the training
  // views (evl_extract --seed); `decoder_layers` picks the last M of the tapped
  // blocks (0: all), as CachedDataset. Throws UsageError for bad settings,
  // evl::Error for an unreadable list.
  OnlineDataset(const OnlineConfig& cfg, const std::string& list, Views views, uint64_t seed,
                int64_t decoder_layers, std::shared_ptr<OnlineBackbone> backbone);

  const cache::Manifest& manifest() const override { return manifest_; }
  int64_t layers() const override { return static_cast<int64_t>(blocks_.size()); }
  // Replay (and test views): clips x views. Fresh: the N items of draw 0;
  // train_batch also returns later draws (items >= N), which load() accepts.
  int64_t size() const override { return num_clips() * views_per_clip_; }
  int64_t max_label() const override;
  std::string where() const override { return "online list '" + list_ + "'"; }
  const std::vector<EpochSampler::Clip>& clips() const override { return sampler_.clips(); }
  std::string item_name(int64_t item) const override;
  // The sampler's clips; with fresh views, the clip of epoch e as its draw e.
  std::vector<int64_t> train_batch(uint64_t seed, int64_t step, int64_t batch) const override;
  // Decodes the clips of `items` (in parallel, each once), runs the backbone
  // over their views in forwards of extract_config().batch_size views, rounds
  // to --dtype. Throws evl::Error naming the video that failed to decode.
  FeatureBatch load(const std::vector<int64_t>& items) const override;
  uint64_t bytes_read() const override { return 0; }  // nothing is read from a cache

  // The evl_extract job whose cache this source reproduces (--out unset).
  const ExtractConfig& extract_config() const { return extract_; }
  int64_t num_clips() const { return static_cast<int64_t>(entries_.size()); }
  int64_t views_per_clip() const { return views_per_clip_; }
  bool fresh_views() const { return fresh_; }
  OnlineStats stats() const;

 private:
  std::string list_, root_;
  ExtractConfig extract_;
  SamplingConfig sampling_;
  std::vector<ClipEntry> entries_;
  int64_t views_per_clip_ = 1;
  bool fresh_ = false;  // a new draw per clip per epoch (training, not replay_views)
  cache::Manifest manifest_;
  std::vector<int64_t> blocks_;  // backbone blocks feeding the decoder (sorted)
  cache::DType rounding_ = cache::DType::kF16;
  std::shared_ptr<OnlineBackbone> backbone_;
  EpochSampler sampler_;
  mutable std::mutex stats_mu_;
  mutable OnlineStats stats_;
};

// The evl_extract job (--out unset) whose cache an OnlineDataset with these
// arguments reproduces: the same lists, backbone, views and seed, storage qk.
ExtractConfig online_extract_config(const OnlineConfig& cfg, const std::string& list,
                                    OnlineDataset::Views views, uint64_t seed,
                                    const std::string& device = "cpu");

}  // namespace evl
