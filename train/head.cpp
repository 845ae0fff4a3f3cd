// The EVL decoder head: modules, forward and state (de)serialisation by name.
// Initialisation follows the official code (docs/OFFICIAL_EVL.md §3.2): xavier q/k/v/
// out and fc1/fc2, zero attention biases, N(0, 1e-6) MLP biases, zero query,
// zero position embeddings and TCA tables, PyTorch defaults for conv and proj.
#include "train/head.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>

#include "common/check.h"
#include "common/random.h"

namespace evl {

namespace {

torch::Tensor linear(const torch::nn::Linear& m, const torch::Tensor& x) {
  return torch::linear(x, m->weight, m->bias);  // faster than Linear::forward under autocast
}

}  // namespace

DecoderAttentionImpl::DecoderAttentionImpl(int64_t width, int64_t heads)
    : width_(width), heads_(heads) {
  TORCH_CHECK(width % heads == 0, "DecoderAttention: width ", width, " not divisible by heads ",
              heads);
  reset();
}

void DecoderAttentionImpl::reset() {
  auto make = [&](const char* name) {
    auto lin = register_module(name, torch::nn::Linear(width_, width_));
    torch::NoGradGuard no_grad;
    torch::nn::init::xavier_uniform_(lin->weight);
    lin->bias.zero_();
    return lin;
  };
  q_proj = make("q_proj");
  k_proj = make("k_proj");
  v_proj = make("v_proj");
  out_proj = make("out_proj");
}

torch::Tensor DecoderAttentionImpl::forward(const torch::Tensor& q, const torch::Tensor& k,
                                            const torch::Tensor& v) {
  const int64_t b = q.size(0), nq = q.size(1), nk = k.size(1), dh = width_ / heads_;
  auto qh = linear(q_proj, q).view({b, nq, heads_, dh}).transpose(1, 2);  // (B, H, Q, Dh)
  auto kh = linear(k_proj, k).view({b, nk, heads_, dh}).transpose(1, 2);  // (B, H, N, Dh)
  auto vh = linear(v_proj, v).view({b, nk, heads_, dh}).transpose(1, 2);
  auto aff =
      torch::matmul(qh / std::sqrt(static_cast<double>(dh)), kh.transpose(-1, -2)).softmax(-1);
  auto mix = torch::matmul(aff, vh).transpose(1, 2).reshape({b, nq, width_});
  return linear(out_proj, mix);
}

namespace {
thread_local DropoutRows* t_dropout_rows = nullptr;
}  // namespace

DropoutRows::DropoutRows(uint64_t seed, int64_t global_rows)
    : seed_(seed), rows_(global_rows), previous_(t_dropout_rows) {
  EVL_CHECK(global_rows > 0, "DropoutRows: global_rows must be positive, got ", global_rows);
  t_dropout_rows = this;
}

DropoutRows::~DropoutRows() { t_dropout_rows = previous_; }

DropoutRows* DropoutRows::current() { return t_dropout_rows; }

void DropoutRows::begin_forward(int64_t row_offset) {
  offset_ = row_offset;
  site_ = 0;
}

torch::Tensor DropoutRows::apply(const torch::Tensor& x, double p) {
  const int64_t b = x.size(0);
  EVL_CHECK(offset_ >= 0 && offset_ + b <= rows_, "dropout rows [", offset_, ", ", offset_ + b,
            ") lie outside the global batch of ", rows_);
  const auto site = static_cast<size_t>(site_++);
  auto shape = x.sizes().vec();
  shape[0] = rows_;
  if (site == masks_.size()) {
    auto gen =
        at::make_generator<at::CPUGeneratorImpl>(rng::step_seed(seed_, static_cast<int64_t>(site)));
    masks_.push_back(torch::empty(shape, torch::kFloat).bernoulli_(1.0 - p, gen).to(torch::kBool));
  }
  const auto& mask = masks_[site];
  EVL_CHECK(mask.sizes() == torch::IntArrayRef(shape), "dropout site ", site, ": input ", x.sizes(),
            " differs from the shape its mask was drawn for, ", mask.sizes());
  const auto rows = mask.narrow(0, offset_, b).to(x.device(), x.scalar_type());
  return x * rows * (1.0 / (1.0 - p));
}

torch::Tensor head_dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  if (auto* rows = DropoutRows::current()) return rows->apply(x, p);
  return torch::dropout(x, p, true);
}

DecoderMlpImpl::DecoderMlpImpl(int64_t width, int64_t hidden, double dropout)
    : width_(width), hidden_(hidden), p_(dropout) {
  reset();
}

void DecoderMlpImpl::reset() {
  fc1 = register_module("fc1", torch::nn::Linear(width_, hidden_));
  dropout = register_module("dropout", torch::nn::Dropout(p_));
  fc2 = register_module("fc2", torch::nn::Linear(hidden_, width_));
  torch::NoGradGuard no_grad;
  for (auto* lin : {&fc1, &fc2}) {
    torch::nn::init::xavier_uniform_((*lin)->weight);
    torch::nn::init::normal_((*lin)->bias, 0.0, 1e-6);
  }
}

torch::Tensor DecoderMlpImpl::forward(const torch::Tensor& x) {
  auto h = linear(fc1, x);
  h = h * torch::sigmoid(1.702 * h);  // QuickGELU
  return linear(fc2, head_dropout(h, p_, is_training()));
}

DecoderLayerImpl::DecoderLayerImpl(const HeadConfig& config) : config_(config) { reset(); }

void DecoderLayerImpl::reset() {
  const int64_t c = config_.width;
  attn = register_module("attn", DecoderAttention(c, config_.heads));
  const auto hidden = static_cast<int64_t>(std::lround(config_.mlp_ratio * static_cast<double>(c)));
  mlp = register_module("mlp", DecoderMlp(c, hidden, config_.mlp_dropout));
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c}).eps(1e-5)); };
  norm1 = register_module("norm1", ln());
  norm2 = register_module("norm2", ln());
  norm3 = register_module("norm3", ln());
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& y) {
  auto y_norm = norm3(y);
  auto out = x + attn(norm1(x), y_norm, y_norm);
  return out + mlp(norm2(out));
}

EvlDecoderImpl::EvlDecoderImpl(const HeadConfig& config) : config_(config) { reset(); }

void EvlDecoderImpl::reset() {
  const auto& cfg = config_;
  const int64_t c = cfg.width;
  EVL_CHECK(c > 0 && cfg.heads > 0 && c % cfg.heads == 0 && cfg.decoder_layers > 0,
            "EVL head: width ", c, " must be a positive multiple of heads ", cfg.heads,
            " and decoder_layers (", cfg.decoder_layers, ") positive");
  cls_token = register_parameter("cls_token", torch::zeros({c}));
  decoder_layers = register_module("decoder_layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.decoder_layers; ++i) decoder_layers->push_back(DecoderLayer(cfg));
  if (cfg.temporal_conv) {
    temporal_conv = register_module("temporal_conv", torch::nn::ModuleList());
    for (int64_t i = 0; i < cfg.decoder_layers; ++i)
      temporal_conv->push_back(torch::nn::Conv1d(
          torch::nn::Conv1dOptions(c, c, 3).stride(1).padding(1).groups(c).bias(true)));
  }
  if (cfg.temporal_pos_embed) {
    EVL_CHECK(cfg.frames > 0, "EVL head: the temporal position embedding needs frames > 0");
    temporal_pos_embed = register_module("temporal_pos_embed", torch::nn::ParameterList());
    for (int64_t i = 0; i < cfg.decoder_layers; ++i)
      temporal_pos_embed->append(torch::zeros({cfg.frames, c}).requires_grad_(true));
  }
  if (cfg.temporal_cross_attention) {
    EVL_CHECK(cfg.grid > 0, "EVL head: temporal cross attention needs grid > 0");
    cross_attention = register_module("cross_attention", torch::nn::ModuleList());
    for (int64_t i = 0; i < cfg.decoder_layers; ++i)
      cross_attention->push_back(TemporalCrossAttention(cfg.grid, c));
  }
}

torch::Tensor EvlDecoderImpl::forward(const std::vector<torch::Tensor>& x,
                                      const std::vector<torch::Tensor>& q,
                                      const std::vector<torch::Tensor>& k) {
  const auto& cfg = config_;
  const auto m = static_cast<size_t>(cfg.decoder_layers);
  TORCH_CHECK(x.size() == m, "EVL head: expected ", m, " layers of features, got ", x.size());
  if (cfg.temporal_cross_attention)
    TORCH_CHECK(q.size() == m && k.size() == m, "EVL head: expected ", m,
                " layers of q and k, got ", q.size(), " and ", k.size());
  const int64_t b = x[0].size(0);
  auto query = cls_token.view({1, 1, cfg.width}).expand({b, 1, cfg.width});  // (B, 1, C)
  for (size_t i = 0; i < m; ++i) {
    const auto& xi = x[i];
    TORCH_CHECK(xi.dim() == 4 && xi.size(0) == b && xi.size(3) == cfg.width, "EVL head: layer ", i,
                ": expected x (B,T,L,C) with B=", b, " C=", cfg.width, ", got ", xi.sizes());
    const int64_t t = xi.size(1), l = xi.size(2);
    auto y = xi;
    if (cfg.temporal_conv) {
      auto conv = temporal_conv[i]->as<torch::nn::Conv1d>();
      auto seq = xi.permute({0, 2, 3, 1}).reshape({b * l, cfg.width, t});  // (B*L, C, T)
      auto out = torch::conv1d(seq, conv->weight, conv->bias, 1, 1, 1, cfg.width);
      y = y + out.view({b, l, cfg.width, t}).permute({0, 3, 1, 2});
    }
    if (cfg.temporal_pos_embed) {
      TORCH_CHECK(t == cfg.frames, "EVL head: the position embedding has ", cfg.frames,
                  " frames, features have ", t);
      y = y + temporal_pos_embed[i].view({1, t, 1, cfg.width});
    }
    if (cfg.temporal_cross_attention)
      y = y + cross_attention[i]->as<TemporalCrossAttention>()->forward(q[i], k[i], cfg.heads);
    query = decoder_layers[i]->as<DecoderLayer>()->forward(query, y.reshape({b, t * l, cfg.width}));
  }
  return query.select(1, 0);
}

EvlHeadImpl::EvlHeadImpl(const HeadConfig& config) : config_(config) { reset(); }

void EvlHeadImpl::reset() {
  decoder = register_module("decoder", EvlDecoder(config_));
  proj = register_module(
      "proj", torch::nn::Sequential(
                  torch::nn::LayerNorm(torch::nn::LayerNormOptions({config_.width}).eps(1e-5)),
                  torch::nn::Dropout(config_.cls_dropout),
                  torch::nn::Linear(config_.width, config_.num_classes)));
}

torch::Tensor EvlHeadImpl::forward(const std::vector<torch::Tensor>& x,
                                   const std::vector<torch::Tensor>& q,
                                   const std::vector<torch::Tensor>& k) {
  auto h = decoder(x, q, k);
  h = proj[0]->as<torch::nn::LayerNorm>()->forward(h);
  h = head_dropout(h, proj[1]->as<torch::nn::Dropout>()->options.p(), is_training());
  auto fc = proj[2]->as<torch::nn::Linear>();
  return torch::linear(h, fc->weight, fc->bias);
}

std::vector<std::pair<std::string, torch::Tensor>> head_state(const EvlHead& head) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : head->named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

void load_head_state(EvlHead& head, const std::vector<std::pair<std::string, torch::Tensor>>& state,
                     const std::string& where) {
  std::map<std::string, torch::Tensor> given(state.begin(), state.end());
  torch::NoGradGuard no_grad;
  for (auto& item : head->named_parameters(true)) {
    auto it = given.find(item.key());
    EVL_CHECK(it != given.end(), "checkpoint '", where, "': missing parameter '", item.key(), "'");
    EVL_CHECK(it->second.sizes() == item.value().sizes(), "checkpoint '", where, "': parameter '",
              item.key(), "' has shape ", it->second.sizes(), ", the head expects ",
              item.value().sizes());
    EVL_CHECK(it->second.is_floating_point() && torch::isfinite(it->second).all().item<bool>(),
              "checkpoint '", where, "': parameter '", item.key(),
              "' holds NaN/inf or is not floating point");
    item.value().copy_(it->second);
    given.erase(it);
  }
  EVL_CHECK(given.empty(), "checkpoint '", where, "': unexpected parameter '",
            given.empty() ? std::string() : given.begin()->first,
            "' (a temporal module switched off here, or a different model)");
}

}  // namespace evl
