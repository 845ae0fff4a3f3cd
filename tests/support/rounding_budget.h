// Rounding-error budgets of the two networks (the CLIP ViT backbone, the EVL
// head), for tests that compare them with float64 references or with another
// float32 evaluation. Each is a count of units of roundoff u relative to the
// scale (max |.|) of the result, derived from the network's shape alone.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "train/train_config.h"

namespace evl::test {

// Unit roundoff of a dtype: 2^-24 for float32, 2^-53 for float64.
inline double unit_roundoff(torch::ScalarType t) {
  return t == torch::kDouble ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
}

// Rounding-error budget of one forward + backward pass of the head, in units of
// u, relative to the scale (max |.|) of the result: an inner product of length
// n commits ~sqrt(n) u (the probabilistic bound of Higham & Mary, SIAM J. Sci.
// Comput. 2019), and the pass chains `stages` such operations, whose errors add
// (LayerNorm and softmax keep every stage at unit scale). Per decoder layer,
// forward: temporal conv; cross attention (scores, softmax, head mean, binned
// sum); Y = X + conv + pos + tca; norm3, norm1; q/k/v projections; scores;
// softmax; mix; out_proj; residual; norm2; fc1; act; fc2; residual (19). Then
// the classifier's LayerNorm, linear and the cross entropy (3). Backward doubles it.
// (The forward pass alone is within half of it.)
inline double rounding_budget(const HeadConfig& cfg) {
  const int64_t tokens = cfg.frames * (1 + cfg.grid * cfg.grid);
  const int64_t hidden = std::lround(cfg.mlp_ratio * static_cast<double>(cfg.width));
  const int64_t n = std::max({cfg.width, hidden, tokens});
  const int64_t stages = 2 * (19 * cfg.decoder_layers + 3);
  return static_cast<double>(stages) * std::sqrt(static_cast<double>(n));
}

// The same for the forward pass of the CLIP ViT backbone: per block ln_1, qkv,
// scores, softmax, mix, out_proj, residual, ln_2, fc1, activation, fc2,
// residual (12); patch conv, + class/position, ln_pre, ln_post, proj (5); n =
// the longest inner product (the patch conv's 3 P^2, the MLP's 4C, the tokens).
inline double vit_rounding_budget(int64_t depth, int64_t width, int64_t patch, int64_t tokens) {
  const int64_t n = std::max({3 * patch * patch, 4 * width, tokens});
  return static_cast<double>(12 * depth + 5) * std::sqrt(static_cast<double>(n));
}

}  // namespace evl::test
