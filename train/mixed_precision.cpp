// See mixed_precision.h. The unscale-and-check is done with plain tensor ops
// (one fused isfinite reduction per parameter, a single host sync per step),
// so the same code runs on CPU (where the tests exercise it) and CUDA.
#include "train/mixed_precision.h"

#include <ATen/autocast_mode.h>

#include <cmath>

#include "common/check.h"

namespace evl {

AutocastGuard::AutocastGuard(Precision precision, const torch::Device& device) {
  if (precision == Precision::kFp32) return;
  active_ = true;
  cuda_ = device.is_cuda();
  const auto dtype = precision == Precision::kFp16 ? at::kHalf : at::kBFloat16;
  if (cuda_) {
    was_enabled_ = at::autocast::is_enabled();
    was_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
  } else {
    was_enabled_ = at::autocast::is_cpu_enabled();
    was_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(was_dtype_);
  } else {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
}

GradScaler::GradScaler(bool enabled, double init_scale, double growth_factor, double backoff_factor,
                       int64_t growth_interval)
    : enabled_(enabled),
      scale_(init_scale),
      growth_(growth_factor),
      backoff_(backoff_factor),
      interval_(growth_interval) {
  EVL_CHECK(init_scale > 0 && growth_factor > 1 && backoff_factor > 0 && backoff_factor < 1 &&
                growth_interval > 0,
            "GradScaler: invalid settings");
}

torch::Tensor GradScaler::scale(const torch::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool GradScaler::step(torch::optim::Optimizer& optimizer) {
  if (!enabled_) {
    optimizer.step();
    return true;
  }
  torch::NoGradGuard no_grad;
  const double inv = 1.0 / scale_;
  std::vector<torch::Tensor> finite;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto g = p.mutable_grad();
      finite.push_back(torch::isfinite(g).all());
      g.mul_(inv);
    }
  const bool ok = finite.empty() || torch::stack(finite).all().item<bool>();
  if (ok) {
    optimizer.step();
    if (++growth_tracker_ == interval_) {
      scale_ *= growth_;
      growth_tracker_ = 0;
    }
  } else {
    scale_ *= backoff_;
    growth_tracker_ = 0;
  }
  return ok;
}

void GradScaler::load_state(double scale, int64_t growth_tracker) {
  EVL_CHECK(scale > 0 && std::isfinite(scale) && growth_tracker >= 0, "loss scaler state: scale ",
            scale, ", growth tracker ", growth_tracker, " is not valid");
  scale_ = scale;
  growth_tracker_ = growth_tracker;
}

}  // namespace evl
