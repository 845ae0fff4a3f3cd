// Compact-mode Q/K by LibTorch's layer_norm + linear on (T, L, C) blocks, the
// calls and shapes of FeatureConverter::fill (train/cached_dataset.cpp).
#include "python/src/qk.h"

#include <ATen/ATen.h>

#include <array>
#include <string>

#include "common/check.h"

namespace evl::python {

void half_to_float32(const void* src, bool bf16, int64_t n, float* out) {
  at::InferenceMode guard;
  const at::Tensor in =
      at::from_blob(const_cast<void*>(src), {n}, bf16 ? at::kBFloat16 : at::kHalf);
  at::from_blob(out, {n}, at::kFloat).copy_(in);
}

struct QKRecompute::Impl {
  int64_t width = 0;
  std::vector<std::array<at::Tensor, 6>> w;  // per layer: ln w, ln b, Wq, bq, Wk, bk
};

QKRecompute::QKRecompute(const cache::Record& weights, const std::vector<int64_t>& blocks,
                         int64_t width)
    : impl_(std::make_unique<Impl>()) {
  impl_->width = width;
  const char* const parts[] = {"ln_1.weight", "ln_1.bias",     "q_proj.weight",
                               "q_proj.bias", "k_proj.weight", "k_proj.bias"};
  for (const int64_t b : blocks) {
    std::array<at::Tensor, 6> layer;
    for (size_t p = 0; p < 6; ++p) {
      const std::string name = std::string(parts[p]) + "." + std::to_string(b);
      const cache::Array* a = weights.find(name);
      EVL_CHECK(a, "qk_weights.evl: no array '", name, "'");
      const int64_t want = (p == 2 || p == 4) ? width * width : width;
      EVL_CHECK(a->dtype == cache::DType::kF32 && a->numel() == want, "qk_weights.evl: array '",
                name, "' must be float32 with ", want, " values");
      layer[p] = at::from_blob(const_cast<uint8_t*>(a->bytes.data()), a->shape, at::kFloat).clone();
    }
    impl_->w.push_back(layer);
  }
}

QKRecompute::~QKRecompute() = default;

void QKRecompute::compute(int64_t layer, const float* x_in, int64_t frames, int64_t tokens,
                          float* q, float* k) const {
  const int64_t C = impl_->width;
  const auto& w = impl_->w.at(static_cast<size_t>(layer));
  at::InferenceMode guard;
  const at::Tensor x = at::from_blob(const_cast<float*>(x_in), {frames, tokens, C}, at::kFloat);
  const at::Tensor ln = at::layer_norm(x, {C}, w[0], w[1], 1e-5);
  at::from_blob(q, {frames, tokens, C}, at::kFloat).copy_(at::linear(ln, w[2], w[3]));
  at::from_blob(k, {frames, tokens, C}, at::kFloat).copy_(at::linear(ln, w[4], w[5]));
}

}  // namespace evl::python
