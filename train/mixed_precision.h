// Mixed precision for head training. CUDA: fp16 autocast plus dynamic loss
// scaling, as the official recipe (torch.cuda.amp.autocast + GradScaler, with
// GradScaler's defaults). CPU: bf16 autocast (bf16 has fp32's exponent range,
// so it needs no loss scaling). Which precision "auto" picks, and the warning for
// bf16 on a CPU without AVX-512, are common/precision.h's rules (use kTraining).
// LibTorch 1.13 has the autocast switches but no C++ GradScaler; GradScaler
// below follows torch.cuda.amp.GradScaler's rules.
#pragma once

#include <torch/torch.h>

#include "common/precision.h"

#include <string>
#include <vector>

namespace evl {

// Enables autocast for `device` in this scope (nothing for fp32); restores the
// previous state and clears the cast cache when the outermost guard ends.
class AutocastGuard {
 public:
  AutocastGuard(Precision precision, const torch::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false, cuda_ = false, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

// Dynamic loss scaling (torch.cuda.amp.GradScaler defaults: initial scale
// 2^16, growth x2 after 2000 clean steps, backoff x0.5 on an overflow). Usage
// per optimiser step: backward of scale(loss) for every micro-batch, then
// step(): unscales the gradients, skips the optimiser step if any gradient is
// inf/NaN, and updates the scale. Disabled, it is the identity and always steps.
class GradScaler {
 public:
  explicit GradScaler(bool enabled, double init_scale = 65536.0, double growth_factor = 2.0,
                      double backoff_factor = 0.5, int64_t growth_interval = 2000);

  bool enabled() const { return enabled_; }
  torch::Tensor scale(const torch::Tensor& loss) const;
  // Returns true if the optimiser stepped (false: skipped for an overflow).
  bool step(torch::optim::Optimizer& optimizer);

  double current_scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  void load_state(double scale, int64_t growth_tracker);

 private:
  bool enabled_;
  double scale_, growth_, backoff_;
  int64_t interval_, growth_tracker_ = 0;
};

}  // namespace evl
