// Batches of decoder inputs from a feature cache (cache/cache.h): per decoder
// layer x, q, k as float32 tensors (B, T, L, C). Handles both storage modes
// (compact: Q/K recomputed from the stored input of each block with the frozen
// ln_1 + q/k weights) and fp16/bf16/fp32 caches, and int8/fp8 ones (dequantized
// straight into the batch). Also the deterministic
// step-based training sampler. No augmentation: views were made at extraction.
#pragma once

#include <torch/torch.h>

#include <array>
#include <memory>
#include <mutex>
#include <vector>

#include "cache/cache.h"

namespace evl {

// Letters: B batch, M decoder layers, T frames, L tokens per frame, C width.
struct FeatureBatch {
  std::vector<torch::Tensor> x, q, k;  // M tensors (B, T, L, C), float32, CPU
  torch::Tensor labels;                // (B) int64 (-1 unknown)
  std::vector<int64_t> clip_index;     // per row
};

// Moves the features and labels to `device` (nothing on the CPU).
void to_device(FeatureBatch& batch, const torch::Device& device);

// Turns cache records into decoder inputs for the last `decoder_layers` of the
// cache's layers (0: all). Immutable after construction; thread-safe.
class FeatureConverter {
 public:
  // Reads qk_weights.evl from `cache_dir` in compact mode. Throws evl::Error
  // (naming the cache) if decoder_layers exceeds the cache's layers.
  FeatureConverter(const cache::Manifest& manifest, const std::string& cache_dir,
                   int64_t decoder_layers);

  int64_t layers() const { return layers_; }  // M
  FeatureBatch allocate(int64_t batch) const;
  // Fills row `row` of `batch` from one record; checks array names and shapes.
  // With a `pass` (CacheReader::with_record_streamed), hashes each frame of the
  // record just before converting it, so that verifying the checksum costs no
  // second read of the record from memory; the caller finishes the pass.
  void fill(const cache::RecordView& record, int64_t row, FeatureBatch& batch,
            cache::ChecksumPass* pass = nullptr) const;
  // Convenience for evaluators: records -> a batch.
  FeatureBatch convert(const std::vector<cache::Record>& records) const;

 private:
  cache::Manifest manifest_;
  std::string where_;
  int64_t layers_ = 0, offset_ = 0, frames_ = 0, tokens_ = 0, width_ = 0;
  // Block `block` (T, L, C) of a record's array into `dst` (T, L, C) float32.
  void convert_block(const cache::ArrayView& a, int64_t block, torch::Tensor dst,
                     cache::ChecksumPass* pass) const;

  // Compact mode: per decoder layer (ln weight, ln bias, Wq, bq, Wk, bk).
  std::vector<std::array<torch::Tensor, 6>> qk_;
};

// The official step-based sampler, over clips: epoch e is a permutation of the
// clips drawn from (seed, e); the stream of epochs is cut into batches of
// `batch` clips, so step s takes positions [s*batch, (s+1)*batch). Each clip
// contributes one of its items (views), drawn afresh from (seed, e, clip).
// Pure function of (seed, step, batch) and the clip list: resuming is exact.
class EpochSampler {
 public:
  struct Clip {
    int64_t clip_index = 0;      // identity of the clip (mixes into the view draw)
    std::vector<int64_t> items;  // its views, as item ids of the source
  };
  explicit EpochSampler(std::vector<Clip> clips);
  std::vector<int64_t> batch(uint64_t seed, int64_t step, int64_t batch) const;
  int64_t num_clips() const { return static_cast<int64_t>(clips_.size()); }
  const std::vector<Clip>& clips() const { return clips_; }

 private:
  std::vector<Clip> clips_;
  mutable int64_t cached_epoch_ = -1;  // one epoch's permutation, kept between steps
  mutable std::vector<int64_t> epoch_perm_;
};

// Where the training loop gets decoder inputs: a feature cache (CachedDataset)
// or the online path (decode + frozen backbone per batch, train/online_dataset.h).
// Items are views of clips, numbered 0..size()-1.
class FeatureSource {
 public:
  virtual ~FeatureSource() = default;
  // Provenance (backbone, layers, frames, sampling, views) the head is built for.
  virtual const cache::Manifest& manifest() const = 0;
  virtual int64_t layers() const = 0;     // decoder layers M in every batch
  virtual int64_t size() const = 0;       // items (clip views)
  virtual int64_t max_label() const = 0;  // -1 if nothing is labelled
  virtual std::string where() const = 0;  // for messages, e.g. "cache 'DIR'"
  // The clips in list order, each with its items (views); every item once.
  virtual const std::vector<EpochSampler::Clip>& clips() const = 0;
  // An item for messages, e.g. "record '0000000042/002'".
  virtual std::string item_name(int64_t item) const = 0;
  // Training items of optimiser step `step` (EpochSampler over the clips).
  virtual std::vector<int64_t> train_batch(uint64_t seed, int64_t step, int64_t batch) const = 0;
  // Items -> one batch (float32, CPU).
  virtual FeatureBatch load(const std::vector<int64_t>& items) const = 0;
  // Feature bytes read from storage so far (0 for sources without storage).
  virtual uint64_t bytes_read() const = 0;
};

// A cache opened for training or evaluation. Items are the cache's records.
class CachedDataset : public FeatureSource {
 public:
  CachedDataset(const std::string& cache_dir, int64_t decoder_layers);

  const cache::Manifest& manifest() const override { return reader_->manifest(); }
  int64_t layers() const override { return converter_.layers(); }
  int64_t size() const override { return reader_->size(); }
  int64_t max_label() const override;
  std::string where() const override { return "cache '" + dir_ + "'"; }
  const std::vector<EpochSampler::Clip>& clips() const override { return sampler_.clips(); }
  std::string item_name(int64_t item) const override;
  const cache::CacheReader& reader() const { return *reader_; }
  const FeatureConverter& converter() const { return converter_; }
  int64_t num_clips() const { return sampler_.num_clips(); }

  // Loads records (indices into reader().keys()) into one batch. The memory of
  // the previous batch is reused when its caller has dropped every tensor and
  // view of it (its storage is held here alone): a fresh float32 batch of
  // ViT-B/16 features page-faults on first touch for about as long as filling
  // it takes (bench_loader). A batch still referenced anywhere is never reused.
  FeatureBatch load(const std::vector<int64_t>& records) const override;
  uint64_t bytes_read() const override { return bytes_read_; }
  // Each clip contributes one of its cached views.
  std::vector<int64_t> train_batch(uint64_t seed, int64_t step, int64_t batch) const override {
    return sampler_.batch(seed, step, batch);
  }

 private:
  std::string dir_;
  std::unique_ptr<cache::CacheReader> reader_;
  FeatureConverter converter_;
  EpochSampler sampler_;
  mutable uint64_t bytes_read_ = 0;
  // The last batch load() returned (shared with its caller), for reuse.
  mutable std::mutex spare_mutex_;
  mutable FeatureBatch spare_;
  FeatureBatch take_spare(int64_t batch) const;
};

}  // namespace evl
