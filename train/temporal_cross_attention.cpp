// Temporal cross attention, binned form (see the header). Equivalent to the
// official einsum over w[idx] because each query row maps its P keys to P
// distinct offset bins, so scatter + one (.., R) x (R, C) GEMM is exact.
#include "train/temporal_cross_attention.h"

#include <cmath>

namespace evl {

torch::Tensor relative_index(int64_t grid) {
  const int64_t g = grid, span = 2 * g - 1;
  auto idx = torch::empty({g * g, g * g}, torch::kLong);
  auto* p = idx.data_ptr<int64_t>();
  for (int64_t qi = 0; qi < g; ++qi)
    for (int64_t qj = 0; qj < g; ++qj)
      for (int64_t ki = 0; ki < g; ++ki)
        for (int64_t kj = 0; kj < g; ++kj)
          p[(qi * g + qj) * g * g + ki * g + kj] = (qi - ki + g - 1) * span + (qj - kj + g - 1);
  return idx;
}

TemporalCrossAttentionImpl::TemporalCrossAttentionImpl(int64_t grid, int64_t width)
    : grid_(grid), width_(width) {
  TORCH_CHECK(grid > 0 && width > 0, "TemporalCrossAttention: bad grid ", grid, " / width ", width);
  reset();
}

void TemporalCrossAttentionImpl::reset() {
  const int64_t r = (2 * grid_ - 1) * (2 * grid_ - 1);
  w1 = register_parameter("w1", torch::zeros({r, width_}));
  w2 = register_parameter("w2", torch::zeros({r, width_}));
  rel_index_ = relative_index(grid_);
}

torch::Tensor binned_attention(const torch::Tensor& q, const torch::Tensor& k, int64_t heads,
                               const torch::Tensor& rel_index, int64_t num_offsets) {
  const int64_t b = q.size(0), t = q.size(1), l = q.size(2), c = q.size(3);
  const int64_t p = l - 1, dh = c / heads;
  // (B, T', P, H, Dh) -> (B, T', H, P, Dh), CLS dropped before the softmax.
  auto qh = q.slice(2, 1).reshape({b, t, p, heads, dh}).permute({0, 1, 3, 2, 4});
  auto kh = k.slice(2, 1).reshape({b, t, p, heads, dh}).permute({0, 1, 3, 2, 4});
  auto scores = torch::matmul(qh / std::sqrt(static_cast<double>(dh)), kh.transpose(-1, -2));
  auto attn = scores.softmax(-1).mean(2);  // (B, T', P, P): softmax over keys, then head mean
  auto index = rel_index.to(attn.device()).expand({b, t, p, p});
  return torch::zeros({b, t, p, num_offsets}, attn.options()).scatter_(-1, index, attn);
}

torch::Tensor TemporalCrossAttentionImpl::forward(const torch::Tensor& q, const torch::Tensor& k,
                                                  int64_t heads) {
  TORCH_CHECK(q.dim() == 4 && q.sizes() == k.sizes(),
              "TemporalCrossAttention: expected q, k (B,T,L,C), got ", q.sizes(), " and ",
              k.sizes());
  const int64_t t = q.size(1), l = q.size(2), c = q.size(3);
  TORCH_CHECK(l == 1 + grid_ * grid_ && c == width_,
              "TemporalCrossAttention: expected L=", 1 + grid_ * grid_, " C=", width_, ", got ",
              q.sizes());
  TORCH_CHECK(c % heads == 0, "TemporalCrossAttention: width ", c, " not divisible by heads ",
              heads);
  if (t < 2) return torch::zeros_like(q).to(w1.scalar_type());
  const int64_t r = w1.size(0);
  // Frames 1..T-1 look back (w1); frames 0..T-2 look forward (w2).
  auto back = torch::matmul(
      binned_attention(q.slice(1, 1), k.slice(1, 0, t - 1), heads, rel_index_, r), w1);
  auto fwd = torch::matmul(
      binned_attention(q.slice(1, 0, t - 1), k.slice(1, 1), heads, rel_index_, r), w2);
  // Pad (B, T-1, P, C) to (B, T, L, C): CLS row first, missing frame at either end.
  return torch::constant_pad_nd(back, {0, 0, 1, 0, 1, 0}) +
         torch::constant_pad_nd(fwd, {0, 0, 1, 0, 0, 1});
}

}  // namespace evl
