// The EVL temporal cross attention ("cross-frame attention", docs/OFFICIAL_EVL.md §3.7),
// in its cheap binned form: per-head softmax attention of frame t's patch
// queries over frame t±1's patch keys (CLS excluded), averaged over heads,
// binned into relative-offset slots and multiplied by the learned tables w1/w2.
// It never materialises the official (P, P, C) gather of w[idx].
#pragma once

#include <torch/torch.h>

namespace evl {

// Letters: B batch, T frames, L = 1 + P tokens per frame, P = g*g patches,
// C width, H heads, R = (2g-1)^2 relative offsets.
class TemporalCrossAttentionImpl : public torch::nn::Cloneable<TemporalCrossAttentionImpl> {
 public:
  TemporalCrossAttentionImpl(int64_t grid, int64_t width);
  void reset() override;

  // q, k: (B, T, L, C), the backbone block's per-head queries/keys (after ln_1
  // and the in-projection with bias, unscaled; head h = channels h*C/H..).
  // Returns (B, T, L, C): CLS rows zero, frame 0 gets only the w2 (t+1) term,
  // frame T-1 only the w1 (t-1) term. Thread-compatible (no shared state).
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, int64_t heads);

  torch::Tensor w1;  // (R, C), previous frame; zero-init
  torch::Tensor w2;  // (R, C), next frame; zero-init

  int64_t grid() const { return grid_; }

 private:
  int64_t grid_, width_;
  torch::Tensor rel_index_;  // (P, P) int64; idx[q,k] = (qi-ki+g-1)(2g-1) + (qj-kj+g-1)
};
TORCH_MODULE(TemporalCrossAttention);

// Head-averaged softmax attention of q's patches over k's patches, binned to
// relative offsets: q, k (B, T', L, C) -> (B, T', P, R). Exposed for tests.
torch::Tensor binned_attention(const torch::Tensor& q, const torch::Tensor& k, int64_t heads,
                               const torch::Tensor& rel_index, int64_t num_offsets);

// The (P, P) relative index table of a g x g grid (row-major patches).
torch::Tensor relative_index(int64_t grid);

}  // namespace evl
