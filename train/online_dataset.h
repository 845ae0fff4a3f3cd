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
//    same SamplingConfig and seed, so they are the same pixels;
//  - features get the storage rounding of --dtype (fp16 by default) and come
//    back as float32, like the cache's qk records;
//  - train_batch is the same EpochSampler over the same clips.
// Features can still differ from a cache's in the last bit of the rounding:
// GEMM results may depend on the batch composition, which differs (evl_extract
// batches consecutive clips, a training batch is a random set).
//
// Costs: every training view of a clip is decoded when any one is needed
// (load_clip_views makes all K at once), so decode time grows with K; the
// backbone runs only on the views asked for.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "extract/clip_vit.h"
#include "extract/dataset_list.h"
#include "extract/extract_config.h"
#include "extract/views.h"
#include "train/cached_dataset.h"
#include "train/train_config.h"

namespace evl {

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
    kTrain,  // cfg.train_views augmented views per clip
    kTest,   // cfg.temporal_views x cfg.spatial_views test views per clip
  };
  // Reads the list (paths resolved against cfg.root). `seed` draws the training
  // views (evl_extract --seed); `decoder_layers` picks the last M of cfg.layers
  // (0: all), as CachedDataset. Throws UsageError for bad settings, evl::Error
  // for an unreadable list.
  OnlineDataset(const OnlineConfig& cfg, const std::string& list, Views views, uint64_t seed,
                int64_t decoder_layers, std::shared_ptr<OnlineBackbone> backbone);

  const cache::Manifest& manifest() const override { return manifest_; }
  int64_t layers() const override { return static_cast<int64_t>(blocks_.size()); }
  int64_t size() const override { return num_clips() * views_per_clip_; }
  int64_t max_label() const override;
  std::string where() const override { return "online list '" + list_ + "'"; }
  std::vector<int64_t> train_batch(uint64_t seed, int64_t step, int64_t batch) const override {
    return sampler_.batch(seed, step, batch);
  }
  // Decodes the clips of `items` (in parallel, each once), runs the backbone
  // over their views in forwards of extract_config().batch_size views, rounds
  // to --dtype. Throws evl::Error naming the video that failed to decode.
  FeatureBatch load(const std::vector<int64_t>& items) const override;
  uint64_t bytes_read() const override { return 0; }  // nothing is read from a cache

  // The evl_extract settings whose cache this source reproduces (--out unset).
  const ExtractConfig& extract_config() const { return extract_; }
  int64_t num_clips() const { return static_cast<int64_t>(entries_.size()); }
  int64_t views_per_clip() const { return views_per_clip_; }
  OnlineStats stats() const;

 private:
  std::string list_, root_;
  ExtractConfig extract_;
  SamplingConfig sampling_;
  std::vector<ClipEntry> entries_;
  int64_t views_per_clip_ = 1;
  cache::Manifest manifest_;
  std::vector<int64_t> blocks_;  // backbone blocks feeding the decoder (sorted)
  torch::ScalarType rounding_ = torch::kHalf;
  std::shared_ptr<OnlineBackbone> backbone_;
  EpochSampler sampler_;
  mutable std::mutex stats_mu_;
  mutable OnlineStats stats_;
};

// The evl_extract job (flags of extract/extract_config.h, --out unset) whose
// cache an OnlineDataset with these arguments reproduces.
ExtractConfig online_extract_config(const OnlineConfig& cfg, const std::string& list,
                                    OnlineDataset::Views views, uint64_t seed,
                                    const std::string& device = "cpu");

}  // namespace evl
