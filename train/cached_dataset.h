// Batches of decoder inputs from a feature cache (cache/cache.h): per decoder
// layer x, q, k as float32 tensors (B, T, L, C). Handles both storage modes
// (compact: Q/K recomputed from the stored input of each block with the frozen
// ln_1 + q/k weights) and fp16/bf16/fp32 caches. Also the deterministic
// step-based training sampler. No augmentation: views were made at extraction.
#pragma once

#include <torch/torch.h>

#include <array>
#include <memory>
#include <vector>

#include "cache/cache.h"

namespace evl {

// Letters: B batch, M decoder layers, T frames, L tokens per frame, C width.
struct FeatureBatch {
  std::vector<torch::Tensor> x, q, k;  // M tensors (B, T, L, C), float32, CPU
  torch::Tensor labels;                // (B) int64 (-1 unknown)
  std::vector<int64_t> clip_index;     // per row
};

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
  void fill(const cache::RecordView& record, int64_t row, FeatureBatch& batch) const;
  // Convenience for evaluators: records -> a batch.
  FeatureBatch convert(const std::vector<cache::Record>& records) const;

 private:
  cache::Manifest manifest_;
  std::string where_;
  int64_t layers_ = 0, offset_ = 0, frames_ = 0, tokens_ = 0, width_ = 0;
  // Compact mode: per decoder layer (ln weight, ln bias, Wq, bq, Wk, bk).
  std::vector<std::array<torch::Tensor, 6>> qk_;
};

// A cache opened for training or evaluation.
class CachedDataset {
 public:
  CachedDataset(const std::string& cache_dir, int64_t decoder_layers);

  const cache::Manifest& manifest() const { return reader_->manifest(); }
  const cache::CacheReader& reader() const { return *reader_; }
  const FeatureConverter& converter() const { return converter_; }
  int64_t num_clips() const { return static_cast<int64_t>(reader_->clips().size()); }
  int64_t max_label() const;  // -1 if no record is labelled

  // Loads records (indices into reader().keys()) into one batch.
  FeatureBatch load(const std::vector<int64_t>& records) const;
  // Bytes of feature arrays read so far (for throughput figures).
  uint64_t bytes_read() const { return bytes_read_; }

  // The official step-based sampler, over clips: epoch e is a permutation of
  // the clips drawn from (seed, e); the stream of epochs is cut into batches of
  // `batch` clips, so step s takes positions [s*batch, (s+1)*batch). Each clip
  // contributes one of its cached views, drawn afresh from (seed, e, clip).
  // Pure function of its arguments: resuming at any step is exact.
  std::vector<int64_t> train_batch(uint64_t seed, int64_t step, int64_t batch) const;

 private:
  std::unique_ptr<cache::CacheReader> reader_;
  FeatureConverter converter_;
  mutable uint64_t bytes_read_ = 0;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> epoch_perm_;
};

}  // namespace evl
