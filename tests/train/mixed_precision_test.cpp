// GradScaler against the rules of torch.cuda.amp.GradScaler (which cannot run
// on this CPU-only build, so the expected values are worked out by hand from
// its documented update rule), and the autocast guard.
#include "train/mixed_precision.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "common/check.h"

using namespace evl;

namespace {

// y = w . x, loss = mean((y - t)^2); one parameter tensor.
struct Tiny {
  torch::Tensor w = torch::tensor({0.5f, -1.0f, 2.0f}).requires_grad_(true);
  torch::Tensor loss(float gain = 1.0f) const {
    auto x = torch::tensor({{1.0f, 2.0f, 3.0f}, {-1.0f, 0.5f, 0.25f}}) * gain;
    return (torch::mv(x, w) - torch::tensor({1.0f, 2.0f})).pow(2).mean();
  }
};

}  // namespace

TEST(GradScaler, DisabledIsAPlainStep) {
  Tiny a, b;
  torch::optim::AdamW oa({a.w}, torch::optim::AdamWOptions(1e-2));
  torch::optim::AdamW ob({b.w}, torch::optim::AdamWOptions(1e-2));
  GradScaler off(false);
  for (int i = 0; i < 3; ++i) {
    oa.zero_grad(), ob.zero_grad();
    off.scale(a.loss()).backward();
    b.loss().backward();
    EXPECT_TRUE(off.step(oa));
    ob.step();
  }
  EXPECT_TRUE(torch::equal(a.w, b.w));
}

TEST(GradScaler, PowerOfTwoScaleGivesTheUnscaledStepExactly) {
  // Scaling by 2^16 and unscaling by 2^-16 is exact in binary floating point
  // (no overflow or underflow here), so the update equals the plain one bit for bit.
  Tiny a, b;
  torch::optim::AdamW oa({a.w}, torch::optim::AdamWOptions(1e-2).weight_decay(0.05));
  torch::optim::AdamW ob({b.w}, torch::optim::AdamWOptions(1e-2).weight_decay(0.05));
  GradScaler on(true);
  for (int i = 0; i < 4; ++i) {
    oa.zero_grad(), ob.zero_grad();
    on.scale(a.loss()).backward();
    b.loss().backward();
    EXPECT_TRUE(on.step(oa));
    ob.step();
    EXPECT_TRUE(torch::equal(a.w.grad(), b.w.grad()));  // unscaled in place
  }
  EXPECT_TRUE(torch::equal(a.w, b.w));
  EXPECT_EQ(on.current_scale(), 65536.0);
  EXPECT_EQ(on.growth_tracker(), 4);
}

TEST(GradScaler, OverflowSkipsTheStepAndBacksOff) {
  Tiny a;
  const auto before = a.w.detach().clone();
  torch::optim::AdamW opt({a.w}, torch::optim::AdamWOptions(1e-2));
  GradScaler s(true, /*init_scale=*/3e38, 2.0, 0.5, 2000);
  opt.zero_grad();
  s.scale(a.loss(10.0f)).backward();  // grad * 3e38 overflows float32
  ASSERT_FALSE(torch::isfinite(a.w.grad()).all().item<bool>());
  EXPECT_FALSE(s.step(opt));
  EXPECT_TRUE(torch::equal(a.w, before));  // no update
  EXPECT_TRUE(opt.state().empty());        // AdamW never saw the step
  EXPECT_EQ(s.current_scale(), 1.5e38);
  EXPECT_EQ(s.growth_tracker(), 0);
}

TEST(GradScaler, GrowsAfterTheIntervalOfCleanSteps) {
  Tiny a;
  torch::optim::AdamW opt({a.w}, torch::optim::AdamWOptions(1e-3));
  GradScaler s(true, 8.0, 2.0, 0.5, /*growth_interval=*/3);
  std::vector<double> scales;
  for (int i = 0; i < 7; ++i) {
    opt.zero_grad();
    s.scale(a.loss()).backward();
    EXPECT_TRUE(s.step(opt));
    scales.push_back(s.current_scale());
  }
  EXPECT_EQ(scales, (std::vector<double>{8, 8, 16, 16, 16, 32, 32}));
  EXPECT_EQ(s.growth_tracker(), 1);
  EXPECT_THROW(s.load_state(-1.0, 0), Error);
  s.load_state(1024.0, 2);
  EXPECT_EQ(s.current_scale(), 1024.0);
}

TEST(Autocast, CpuBf16GuardCastsMatmulsAndRestores) {
  const auto x = torch::randn({4, 8}), w = torch::randn({3, 8});
  ASSERT_FALSE(at::autocast::is_cpu_enabled());
  {
    AutocastGuard g(Precision::kBf16, torch::Device("cpu"));
    EXPECT_TRUE(at::autocast::is_cpu_enabled());
    const auto y = torch::linear(x, w);
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    // Same as casting the operands by hand.
    EXPECT_TRUE(torch::equal(y, torch::linear(x.to(torch::kBFloat16), w.to(torch::kBFloat16))));
  }
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  EXPECT_EQ(torch::linear(x, w).scalar_type(), torch::kFloat);
  {
    AutocastGuard off(Precision::kFp32, torch::Device("cpu"));
    EXPECT_FALSE(at::autocast::is_cpu_enabled());
  }
}
