// Numerics of the EVL head against an independent PyTorch implementation
// (tests/train/make_head_reference.py, written from docs/OFFICIAL_EVL.md §3-§6),
// which computes its references in float64 from float32 parameters and inputs:
// logits, loss, gradients and parameters after 3 AdamW + cosine steps, with the
// C++ head run in float32 (the training dtype) and in float64. Also checks the
// binned temporal cross attention against a brute-force float64 loop.
//
// No tolerance here is a number read off a machine: each is the unit roundoff u
// of the dtype under test (2^-24 float32, 2^-53 float64) times a budget that
// follows from the problem's sizes, or, for the AdamW steps, the measured
// gradient deviations propagated through AdamW's closed-form derivative, or
// AdamW's closed-form bound on how far a coordinate can move.
#include "train/head.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/rounding_budget.h"
#include "tests/support/torch_support.h"
#include "train/lr_schedule.h"

namespace {

const std::string kFixtures = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/head/";

c10::Dict<c10::IValue, c10::IValue> load_reference() {
  return evl::test::load_pickle_dict(kFixtures + "head_reference.pt");
}

using evl::test::rounding_budget;
using evl::test::unit_roundoff;

struct Fixture {
  c10::Dict<c10::IValue, c10::IValue> ref = load_reference();
  evl::HeadConfig cfg;
  std::vector<torch::Tensor> x, q, k;

  Fixture() {
    cfg.width = get_int("C");
    cfg.heads = get_int("heads");
    cfg.decoder_layers = get_int("layers");
    cfg.frames = get_int("T");
    cfg.grid = get_int("grid");
    cfg.num_classes = get_int("classes");
    for (int64_t i = 0; i < cfg.decoder_layers; ++i) {
      x.push_back(tensor("x/" + std::to_string(i)));
      q.push_back(tensor("q/" + std::to_string(i)));
      k.push_back(tensor("k/" + std::to_string(i)));
    }
  }
  int64_t get_int(const std::string& key) const { return ref.at(key).toInt(); }
  torch::Tensor tensor(const std::string& key) const { return ref.at(key).toTensor(); }
  // The head with the fixture's (float32) parameters, converted to `dtype`.
  evl::EvlHead make_head(torch::ScalarType dtype) const {
    evl::EvlHead head(cfg);
    std::vector<std::pair<std::string, torch::Tensor>> state;
    for (const auto& kv : ref) {
      const auto& name = kv.key().toStringRef();
      if (name.rfind("param/", 0) == 0) state.emplace_back(name.substr(6), kv.value().toTensor());
    }
    evl::load_head_state(head, state, "head_reference.pt");
    head->to(dtype);
    head->eval();
    return head;
  }
  torch::Tensor forward(evl::EvlHead& head, torch::ScalarType dtype) const {
    auto cast = [dtype](std::vector<torch::Tensor> v) {
      for (auto& t : v) t = t.to(dtype);  // float32 -> float64 is exact
      return v;
    };
    return head->forward(cast(x), cast(q), cast(k));
  }
};

constexpr auto rel_error = evl::test::rel_max_error;  // max |a-b| / max |b|, in float64

// The key bias of the decoder attention adds the same q.b_k to every key's score,
// which the softmax cancels: its true gradient is 0.
bool is_k_bias(const std::string& name) {
  return name.find("attn.k_proj.bias") != std::string::npos;
}

// AdamW (PyTorch's defaults beta1 0.9, beta2 0.999, eps 1e-8), coordinate-wise.
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kAdamEps = 1e-8;

// |u_t| for the bias-corrected update u_t = mhat_t / (sqrt(vhat_t) + eps) of step
// t (0-based) is at most sqrt(sum_s w_s^2 / r_s), where mhat = sum_s w_s g_s and
// vhat = sum_s r_s g_s^2 (Cauchy-Schwarz), whatever the gradients.
double adam_update_bound(int64_t t) {
  const double bc1 = 1 - std::pow(kBeta1, t + 1), bc2 = 1 - std::pow(kBeta2, t + 1);
  double sum = 0;
  for (int64_t s = 0; s <= t; ++s) {
    const double w = (1 - kBeta1) * std::pow(kBeta1, t - s) / bc1;
    const double r = (1 - kBeta2) * std::pow(kBeta2, t - s) / bc2;
    sum += w * w / r;
  }
  return std::sqrt(sum);
}

// First-order bound on how far AdamW's parameters end up from the reference's
// when the gradient of step s deviates from the reference gradient g[s] by at
// most dg[s] (per coordinate): sum_t lr_t sum_{s<=t} |du_t/dg_s| dg_s, the
// derivative taken in closed form at the reference gradients. (An error already
// in the parameters is carried on with the factor 1 - lr wd <= 1, and its effect
// on later gradients is part of the measured dg.)
torch::Tensor adam_first_order_bound(const std::vector<torch::Tensor>& g,
                                     const std::vector<torch::Tensor>& dg,
                                     const std::vector<double>& lrs) {
  auto bound = torch::zeros_like(g[0]);
  for (size_t t = 0; t < lrs.size(); ++t) {
    const double bc1 = 1 - std::pow(kBeta1, t + 1), bc2 = 1 - std::pow(kBeta2, t + 1);
    auto m = torch::zeros_like(g[0]), v = torch::zeros_like(g[0]);
    for (size_t s = 0; s <= t; ++s) {
      m += (1 - kBeta1) * std::pow(kBeta1, t - s) * g[s];
      v += (1 - kBeta2) * std::pow(kBeta2, t - s) * g[s] * g[s];
    }
    const auto sqrt_v = v.sqrt();
    const auto denom = sqrt_v / std::sqrt(bc2) + kAdamEps;
    const auto u = m / bc1 / denom;
    auto sensitivity = torch::zeros_like(g[0]);
    for (size_t s = 0; s <= t; ++s) {
      const auto du = (1 - kBeta1) * std::pow(kBeta1, t - s) / bc1 / denom -
                      u / denom / std::sqrt(bc2) * (1 - kBeta2) * std::pow(kBeta2, t - s) * g[s] /
                          sqrt_v.clamp_min(1e-300);
      sensitivity += du.abs() * dg[s];
    }
    bound += lrs[t] * sensitivity;
  }
  return bound;
}

// Runs the reference's AdamW + cosine steps on the fixture in `dtype` and checks
// every parameter against the float64 reference.
void expect_adamw_steps_match(torch::ScalarType dtype) {
  Fixture fx;
  auto head = fx.make_head(dtype);
  const double lr = fx.ref.at("lr").toDouble(), wd = fx.ref.at("weight_decay").toDouble();
  const int64_t steps = fx.get_int("steps");
  const double u = unit_roundoff(dtype);
  torch::optim::AdamW opt(head->parameters(), torch::optim::AdamWOptions(lr).weight_decay(wd));
  std::vector<double> lrs;
  std::map<std::string, std::vector<torch::Tensor>> ref_grads, grad_dev;
  const double grad_tol = rounding_budget(fx.cfg) * u;
  double worst_grad = 0;
  for (int64_t step = 0; step < steps; ++step) {
    lrs.push_back(evl::lr_at_step(lr, step, steps));
    for (auto& group : opt.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lrs.back());
    opt.zero_grad();
    torch::cross_entropy_loss(fx.forward(head, dtype), fx.tensor("labels")).backward();
    for (const auto& [name, p] : evl::head_state(head)) {
      const auto want = fx.tensor("grad" + std::to_string(step) + "/" + name);
      ref_grads[name].push_back(want);
      grad_dev[name].push_back((p.grad().to(torch::kDouble) - want).abs());
      // The deviations fed to the bound below must themselves be rounding-sized
      // (else a wrong gradient would only widen the bound).
      if (!is_k_bias(name)) {
        const double dev = rel_error(p.grad(), want) / grad_tol;
        EXPECT_LE(dev, 1.0) << name << " at step " << step;
        worst_grad = std::max(worst_grad, dev);
      }
    }
    opt.step();
  }
  double max_move_lr = 0, wd_lr = 0;  // sum_t lr_t |u_t| at most, and sum_t lr_t wd
  for (int64_t t = 0; t < steps; ++t) {
    max_move_lr += lrs[t] * adam_update_bound(t);
    wd_lr += lrs[t] * wd;
  }
  double worst = 0, k_bias_moved = 0;
  std::string worst_name;
  for (const auto& [name, p] : evl::head_state(head)) {
    const auto got = p.detach().to(torch::kDouble), want = fx.tensor("step3/" + name);
    const auto p0 = fx.tensor("param/" + name).to(torch::kDouble);
    // How far any coordinate can move in closed form: the updates, plus the
    // decay of a parameter that is itself at most |p0| + that far from zero.
    const auto max_move = max_move_lr + wd_lr * (p0.abs() + max_move_lr);
    // Rounding of the update itself, per step: p (1 - lr wd) and p + step
    // (<= u |p| each), and the update's own operations (m, v, sqrt, bias
    // corrections, eps, division: <= 8 roundings of lr |u_t|).
    const auto update_rounding = steps * 2 * u * (p0.abs() + max_move) + 8 * u * max_move_lr;
    if (is_k_bias(name)) {  // Adam turns its zero-gradient rounding noise into moves of up to lr
      const double moved = ((got - p0).abs() / (max_move + update_rounding)).max().item<double>();
      EXPECT_LE(moved, 1.0) << name;
      EXPECT_TRUE(((want - p0).abs() <= max_move).all().item<bool>()) << name;
      k_bias_moved = std::max(k_bias_moved, moved);
      continue;
    }
    // 2x the first-order bound: room for the second-order terms, which are
    // smaller than the first-order ones wherever this bound is below the move.
    const auto allowed =
        2 * adam_first_order_bound(ref_grads[name], grad_dev[name], lrs) + update_rounding;
    const auto ratio = ((got - want).abs() / allowed).max().item<double>();
    EXPECT_LE(ratio, 1.0) << name << ": max |got - want| "
                          << (got - want).abs().max().item<double>();
    if (ratio > worst) worst = ratio, worst_name = name;
  }
  std::cout << torch::toString(dtype) << ": largest |got - want| / allowed " << worst << " ("
            << worst_name << "); key biases moved " << k_bias_moved
            << " of their bound; gradients of the 3 steps " << worst_grad << " of the budget\n";
}

void expect_logits_loss_and_gradients_match(torch::ScalarType dtype) {
  Fixture fx;
  auto head = fx.make_head(dtype);
  const double tol = rounding_budget(fx.cfg) * unit_roundoff(dtype);  // forward + backward
  const double forward_tol = tol / 2;
  auto logits = fx.forward(head, dtype);
  EXPECT_EQ(logits.scalar_type(), dtype);
  const double logits_err = rel_error(logits.detach(), fx.tensor("logits"));
  EXPECT_LE(logits_err, forward_tol);
  auto loss = torch::cross_entropy_loss(logits, fx.tensor("labels"));
  const double want_loss = fx.tensor("loss").item<double>();
  EXPECT_NEAR(loss.item<double>(), want_loss, forward_tol * want_loss);
  loss.backward();
  double worst = 0, k_bias = 0;
  for (const auto& [name, p] : evl::head_state(head)) {
    const auto want = fx.tensor("grad0/" + name);
    if (is_k_bias(name)) {
      // Zero in exact arithmetic: what is left is the rounding of a sum of terms
      // that cancel, at most the budget times the sum of their magnitudes
      // (the reference's float64 gradient, likewise, at float64's budget).
      const auto cancelled = fx.tensor("kgrad_abs/" + name);
      const double left =
          (p.grad().to(torch::kDouble).abs() / (2 * tol * cancelled)).max().item<double>();
      EXPECT_LE(left, 1.0) << name << " " << p.grad().abs().max().item<double>();
      k_bias = std::max(k_bias, left);
      EXPECT_TRUE(
          (want.abs() <= 2 * rounding_budget(fx.cfg) * unit_roundoff(torch::kDouble) * cancelled)
              .all()
              .item<bool>())
          << name;
      continue;
    }
    const double err = rel_error(p.grad(), want);
    EXPECT_LE(err, tol) << name;
    worst = std::max(worst, err);
  }
  std::cout << torch::toString(dtype) << ": logits error " << logits_err / forward_tol
            << " of the budget, gradients " << worst / tol << ", key bias gradients " << k_bias
            << " of theirs\n";
}

}  // namespace

TEST(Head, ParameterNamesAreTheOfficialOnes) {
  evl::HeadConfig cfg;  // B/16, 4 layers, 8 frames, 400 classes
  evl::EvlHead head(cfg);
  int64_t total = 0;
  std::set<std::string> names;
  for (const auto& [name, t] : evl::head_state(head)) {
    total += t.numel();
    names.insert(name);
  }
  EXPECT_EQ(total, 33183376);  // docs/OFFICIAL_EVL.md §9.1
  for (const char* key :
       {"decoder.cls_token", "decoder.decoder_layers.3.attn.out_proj.weight",
        "decoder.decoder_layers.0.mlp.fc1.bias", "decoder.decoder_layers.2.norm3.weight",
        "decoder.temporal_conv.1.weight", "decoder.temporal_pos_embed.3",
        "decoder.cross_attention.0.w2", "proj.0.weight", "proj.2.bias"})
    EXPECT_TRUE(names.count(key)) << key;
  // Zero-init where the official code ends up zero; conv is PyTorch-default (not zero).
  auto params = head->named_parameters(true);
  EXPECT_EQ(params["decoder.cls_token"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(params["decoder.cross_attention.0.w1"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(params["decoder.temporal_pos_embed.0"].abs().sum().item<double>(), 0.0);
  const auto conv = params["decoder.temporal_conv.0.weight"];
  EXPECT_NEAR(conv.std().item<double>(), 1.0 / 3.0, 0.02);  // U(-1/sqrt3, 1/sqrt3)
  EXPECT_LE(conv.abs().max().item<double>(), 1.0 / std::sqrt(3.0) + 1e-6);

  cfg.temporal_cross_attention = false;
  int64_t no_tca = 0;
  for (const auto& [name, t] : evl::head_state(evl::EvlHead(cfg))) no_tca += t.numel();
  EXPECT_EQ(total - no_tca, 4478976);
}

TEST(Head, BinnedCrossAttentionMatchesBruteForce) {
  torch::manual_seed(0);
  const int64_t g = 3, p = g * g, c = 6, heads = 2, dh = c / heads, t = 3;
  evl::TemporalCrossAttention tca(g, c);
  {
    torch::NoGradGuard ng;
    tca->w1.normal_();
    tca->w2.normal_();
  }
  auto q = torch::randn({1, t, p + 1, c}), k = torch::randn({1, t, p + 1, c});
  auto got = tca->forward(q, k, heads);
  // The brute force in float64 on the same (float32) values.
  const auto q64 = q.to(torch::kDouble), k64 = k.to(torch::kDouble);
  const auto w1 = tca->w1.detach().to(torch::kDouble), w2 = tca->w2.detach().to(torch::kDouble);
  auto want = torch::zeros({1, t, p + 1, c}, torch::kDouble);
  for (int64_t f = 0; f < t; ++f)
    for (int dir : {-1, 1}) {
      const int64_t s = f + dir;
      if (s < 0 || s >= t) continue;
      const auto& w = dir < 0 ? w1 : w2;
      for (int64_t qi = 0; qi < p; ++qi) {
        auto avg = torch::zeros({p}, torch::kDouble);
        for (int64_t h = 0; h < heads; ++h) {
          auto qv = q64[0][f][qi + 1].slice(0, h * dh, (h + 1) * dh);
          auto kv = k64[0][s].slice(0, 1).slice(1, h * dh, (h + 1) * dh);  // (P, Dh)
          avg += torch::softmax(torch::mv(kv, qv) / std::sqrt(double(dh)), 0) / double(heads);
        }
        for (int64_t ki = 0; ki < p; ++ki) {
          const int64_t idx = (qi / g - ki / g + g - 1) * (2 * g - 1) + (qi % g - ki % g + g - 1);
          want[0][f][qi + 1] += avg[ki] * w[idx];
        }
      }
    }
  // float32 rounding of 4 chained stages (scores, softmax, head mean, binned sum),
  // each an inner product of length <= P: sqrt(P) u each (see rounding_budget).
  const double tol = 4 * std::sqrt(static_cast<double>(p)) * unit_roundoff(torch::kFloat);
  const double err = rel_error(got.detach(), want);
  EXPECT_LE(err, tol);
  std::cout << "binned vs brute force: " << err / tol << " of the budget\n";
}

TEST(Head, LogitsLossAndGradientsMatchPyTorch) {
  expect_logits_loss_and_gradients_match(torch::kFloat);
  expect_logits_loss_and_gradients_match(torch::kDouble);
}

TEST(Head, ThreeAdamWCosineStepsMatchPyTorch) {
  expect_adamw_steps_match(torch::kFloat);
  expect_adamw_steps_match(torch::kDouble);
}

// DropoutRows: nn.Dropout's distribution (keep with 1 - p, scale 1 / (1 - p)),
// and a sample's mask does not depend on which micro-batch computes it.
TEST(HeadDropout, RowsFollowTheSampleWithDropoutsDistribution) {
  using evl::DropoutRows;
  const double p = 0.3;
  const int64_t rows = 64, width = 500;
  DropoutRows whole(42, rows);
  whole.begin_forward(0);
  const auto all = whole.apply(torch::ones({rows, width}), p);
  const auto kept = all.ne(0);
  EXPECT_TRUE(torch::allclose(all.masked_select(kept),
                              torch::full({kept.sum().item<int64_t>()}, 1.0 / (1.0 - p))));
  // Binomial(n, p) dropped entries: within 5 standard deviations of n p.
  const double n = rows * width, dropped = n - kept.sum().item<double>();
  EXPECT_NEAR(dropped, n * p, 5 * std::sqrt(n * p * (1 - p)));
  // The same rows drawn as 4 micro-batches of 16 (a second site in each).
  DropoutRows split(42, rows);
  for (int64_t s = 0; s < 4; ++s) {
    split.begin_forward(16 * s);
    const auto part = split.apply(torch::ones({16, width}), p);
    EXPECT_TRUE(torch::equal(part, all.narrow(0, 16 * s, 16))) << "micro-batch " << s;
    const auto second = split.apply(torch::ones({16, 7}), p);
    EXPECT_EQ(second.sizes(), torch::IntArrayRef({16, 7}));
  }
  // Another seed, other masks; no live DropoutRows: LibTorch's dropout.
  DropoutRows other(43, rows);
  other.begin_forward(0);
  EXPECT_FALSE(torch::equal(other.apply(torch::ones({rows, width}), p), all));
}

TEST(HeadDropout, TrainingHeadGivesTheSameLogitsWhateverTheSplit) {
  using namespace evl;
  HeadConfig h;
  h.width = 16, h.heads = 2, h.decoder_layers = 2, h.frames = 3, h.grid = 2, h.num_classes = 5;
  torch::manual_seed(0);
  EvlHead head(h);
  head->train();
  std::vector<torch::Tensor> x, q, k;
  for (int64_t m = 0; m < h.decoder_layers; ++m)
    for (auto* v : {&x, &q, &k}) v->push_back(torch::randn({6, h.frames, h.tokens(), h.width}));
  auto rows = [](const std::vector<torch::Tensor>& t, int64_t a, int64_t n) {
    std::vector<torch::Tensor> out;
    for (const auto& e : t) out.push_back(e.narrow(0, a, n));
    return out;
  };
  DropoutRows whole(7, 6);
  whole.begin_forward(0);
  const auto all = head->forward(x, q, k);
  DropoutRows split(7, 6);
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < 3; ++s) {
    split.begin_forward(2 * s);
    parts.push_back(head->forward(rows(x, 2 * s, 2), rows(q, 2 * s, 2), rows(k, 2 * s, 2)));
  }
  // Equal up to the float32 rounding of other GEMM blockings (no mask differs:
  // a differing mask changes a logit by O(1)).
  EXPECT_TRUE(torch::allclose(torch::cat(parts), all, 1e-4, 1e-5));
  head->eval();
  EXPECT_TRUE(torch::equal(head->forward(x, q, k), head->forward(x, q, k)));
}
