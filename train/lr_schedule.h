// The learning-rate schedule of the official recipe (docs/OFFICIAL_EVL.md §6.2): cosine
// annealing per step from the base LR to 0 over all steps
// (CosineAnnealingLR(T_max=steps), eta_min 0), with an optional linear warmup
// that the official code does not have (warmup 0 reproduces it exactly).
#pragma once

#include <cmath>
#include <cstdint>

namespace evl {

// LR used by optimiser step `step` (0-based) of `total` steps.
inline double lr_at_step(double base_lr, int64_t step, int64_t total, int64_t warmup = 0) {
  const double pi = 3.14159265358979323846;
  if (warmup > 0 && step < warmup)
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = static_cast<double>(total - warmup);
  if (span <= 0) return base_lr;
  return base_lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(step - warmup) / span));
}

}  // namespace evl
