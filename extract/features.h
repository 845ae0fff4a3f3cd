// Views -> per-layer decoder inputs: the frozen backbone run over the views of
// one or more clips in fixed-size forwards, its outputs regrouped per block as
// (V, T, L, C). The one code path behind evl_extract (into cache records),
// evl_train_head --online (into training batches) and evl_predict (into the
// head), so the three compute the same features from the same pixels.
//
// Letters: V views, T frames, L tokens per frame (with CLS), C width,
// M blocks, S input size.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "cache/cache.h"
#include "extract/clip_vit.h"

namespace evl {

struct ViewFeatures {
  std::vector<torch::Tensor> x;  // M tensors (V, T, L, C) float32: block outputs
  std::vector<torch::Tensor> q;  // M tensors (V, T, L, C) float32: the blocks' Q (empty: not asked)
  std::vector<torch::Tensor> k;  // same for K
};

// Runs `model` over `images` (V*T, 3, S, S), views contiguous, in forwards of
// at most `views_per_forward` views, and calls `sink(first_view, chunk)` after
// each forward with that chunk's features (V', T, L, C) on the CPU. `blocks`:
// sorted 0-based block indices (resolve_blocks). Forwards are cut at the same
// view boundaries for the same V and views_per_forward, which is what makes
// extraction reproducible: GEMM results may depend on the batch shape.
// No autograd. Throws what the model throws on bad shapes.
void backbone_features(ClipVisionImpl& model, const torch::Tensor& images, int64_t frames,
                       const std::vector<int64_t>& blocks, bool with_qk, int64_t views_per_forward,
                       const std::function<void(int64_t, const ViewFeatures&)>& sink);

// The same, gathered: all V views' features, float32 on the CPU.
ViewFeatures backbone_features(ClipVisionImpl& model, const torch::Tensor& images, int64_t frames,
                               const std::vector<int64_t>& blocks, bool with_qk,
                               int64_t views_per_forward);

// `t` rounded through the storage dtype and back to float32, exactly as a cache
// record stores it and its reader returns it (the identity for fp32). int8/fp8
// quantize-dequantize along the last axis (cache/quantize.h) and throw
// evl::Error for NaN/inf or out-of-range values, which they cannot store.
torch::Tensor round_through_storage(const torch::Tensor& t, cache::DType dtype);

}  // namespace evl
