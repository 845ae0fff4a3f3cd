// Numerics of the EVL head against an independent PyTorch implementation
// (tests/train/make_head_reference.py, written from docs/OFFICIAL_EVL.md §3-§6):
// logits, loss, gradients and parameters after 3 AdamW + cosine steps, fp32.
// Also checks the binned temporal cross attention against a brute-force loop.
#include "train/head.h"

#include <gtest/gtest.h>

#include <fstream>

#include "train/lr_schedule.h"

namespace {

const std::string kFixtures = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/head/";

c10::Dict<c10::IValue, c10::IValue> load_reference() {
  std::ifstream f(kFixtures + "head_reference.pt", std::ios::binary);
  std::vector<char> buf((std::istreambuf_iterator<char>(f)), {});
  return torch::pickle_load(buf).toGenericDict();
}

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
  evl::EvlHead make_head() const {
    evl::EvlHead head(cfg);
    std::vector<std::pair<std::string, torch::Tensor>> state;
    for (const auto& kv : ref) {
      const auto& name = kv.key().toStringRef();
      if (name.rfind("param/", 0) == 0) state.emplace_back(name.substr(6), kv.value().toTensor());
    }
    evl::load_head_state(head, state, "head_reference.pt");
    head->eval();
    return head;
  }
};

double rel_error(const torch::Tensor& got, const torch::Tensor& want) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  return (got - want).abs().max().item<double>() / scale;
}

// The key bias of the decoder attention adds the same q.b_k to every key's score,
// which the softmax cancels: its true gradient is 0.
bool is_k_bias(const std::string& name) {
  return name.find("attn.k_proj.bias") != std::string::npos;
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
  auto want = torch::zeros({1, t, p + 1, c});
  for (int64_t f = 0; f < t; ++f)
    for (int dir : {-1, 1}) {
      const int64_t s = f + dir;
      if (s < 0 || s >= t) continue;
      const auto& w = dir < 0 ? tca->w1 : tca->w2;
      for (int64_t qi = 0; qi < p; ++qi) {
        auto avg = torch::zeros({p});
        for (int64_t h = 0; h < heads; ++h) {
          auto qv = q[0][f][qi + 1].slice(0, h * dh, (h + 1) * dh);
          auto kv = k[0][s].slice(0, 1).slice(1, h * dh, (h + 1) * dh);  // (P, Dh)
          avg += torch::softmax(torch::mv(kv, qv) / std::sqrt(double(dh)), 0) / double(heads);
        }
        for (int64_t ki = 0; ki < p; ++ki) {
          const int64_t idx = (qi / g - ki / g + g - 1) * (2 * g - 1) + (qi % g - ki % g + g - 1);
          want[0][f][qi + 1] += avg[ki] * w[idx];
        }
      }
    }
  EXPECT_LT(rel_error(got.detach(), want), 1e-6);
}

TEST(Head, LogitsLossAndGradientsMatchPyTorch) {
  Fixture fx;
  auto head = fx.make_head();
  auto logits = head->forward(fx.x, fx.q, fx.k);
  EXPECT_LT(rel_error(logits.detach(), fx.tensor("logits")), 1e-5);
  auto loss = torch::cross_entropy_loss(logits, fx.tensor("labels"));
  EXPECT_NEAR(loss.item<double>(), fx.tensor("loss").item<double>(),
              1e-5 * fx.tensor("loss").item<double>());
  loss.backward();
  for (const auto& [name, p] : evl::head_state(head)) {
    if (is_k_bias(name)) {  // exactly zero in exact arithmetic: both sides are rounding noise
      EXPECT_LT(p.grad().abs().max().item<double>(), 1e-6) << name;
      EXPECT_LT(fx.tensor("grad/" + name).abs().max().item<double>(), 1e-6) << name;
      continue;
    }
    EXPECT_LT(rel_error(p.grad(), fx.tensor("grad/" + name)), 1e-5) << name;
  }
}

TEST(Head, ThreeAdamWCosineStepsMatchPyTorch) {
  Fixture fx;
  auto head = fx.make_head();
  const double lr = fx.ref.at("lr").toDouble(), wd = fx.ref.at("weight_decay").toDouble();
  const int64_t steps = fx.get_int("steps");
  torch::optim::AdamW opt(head->parameters(), torch::optim::AdamWOptions(lr).weight_decay(wd));
  for (int64_t step = 0; step < steps; ++step) {
    for (auto& group : opt.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options())
          .lr(evl::lr_at_step(lr, step, steps));
    opt.zero_grad();
    torch::cross_entropy_loss(head->forward(fx.x, fx.q, fx.k), fx.tensor("labels")).backward();
    opt.step();
  }
  for (const auto& [name, p] : evl::head_state(head)) {
    if (is_k_bias(name)) {  // Adam turns its zero-gradient rounding noise into +-lr steps
      EXPECT_LE((p.detach() - fx.tensor("param/" + name)).abs().max().item<double>(), 3 * lr * 1.01)
          << name;
      continue;
    }
    EXPECT_LT(rel_error(p.detach(), fx.tensor("step3/" + name)), 1e-5) << name;
  }
}
