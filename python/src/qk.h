// ATen for the Python module: fp16/bf16 -> float32 conversion, and compact-mode Q/K: q =
// layer_norm(x_in) @ Wq^T + bq (and k) with the frozen ln_1 and in-projection weights of
// qk_weights.evl, by the same LibTorch calls as the training loader (train/cached_dataset.cpp), so
// a Python reader gets the Q/K evl_train_head trains on. Kept out of module.cpp so that only this
// file compiles ATen's headers.
//
// Letters: T frames, L tokens per frame, C width, M decoder layers.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cache/cache.h"

namespace evl::python {

// n fp16 (bf16 when `bf16`) values at `src` -> float32 at `out`, by ATen's
// vectorised conversion (the training loader's copy_; both are exact), about
// twice as fast as cache::to_float32's scalar loop.
void half_to_float32(const void* src, bool bf16, int64_t n, float* out);

class QKRecompute {
 public:
  // `weights` from cache::load_qk_weights; `blocks` the backbone block of each
  // cache layer (manifest.layers). Throws evl::Error for a missing or
  // misshapen weight array (naming it).
  QKRecompute(const cache::Record& weights, const std::vector<int64_t>& blocks, int64_t width);
  ~QKRecompute();

  // Q and K of cache layer `layer` from x_in (T, L, C) float32, the output of
  // the block before it; q, k (T, L, C) float32. Thread-safe; runs on
  // LibTorch's intra-op threads (set by torch.set_num_threads).
  void compute(int64_t layer, const float* x_in, int64_t frames, int64_t tokens, float* q,
               float* k) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace evl::python
