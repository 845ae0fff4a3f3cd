// The EVL decoder head (docs/OFFICIAL_EVL.md §3-§5), parameter-for-parameter the official
// EVLDecoder + proj under the official registered names (the checkpoint
// format): decoder.cls_token, decoder.decoder_layers.N.{attn,mlp,norm1..3},
// decoder.temporal_conv.N, decoder.temporal_pos_embed.N,
// decoder.cross_attention.N.{w1,w2}, proj.0 (LayerNorm), proj.2 (Linear).
// It consumes cached backbone features; the frozen backbone is not part of it.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "train/temporal_cross_attention.h"
#include "train/train_config.h"

namespace evl {

// Letters: B batch, T frames, L tokens per frame (with CLS), C width, H heads,
// K classes, N = T*L memory tokens, M decoder layers.

// Multi-head attention with separate q/k/v/out projections (all with bias),
// scale 1/sqrt(C/H), softmax over keys; no dropout.
class DecoderAttentionImpl : public torch::nn::Cloneable<DecoderAttentionImpl> {
 public:
  DecoderAttentionImpl(int64_t width, int64_t heads);
  void reset() override;
  // q (B, Q, C), k and v (B, N, C) -> (B, Q, C)
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t width_, heads_;
};
TORCH_MODULE(DecoderAttention);

// Dropout masks as a function of the sample, for training that must not depend
// on how a batch is split (--batch-split micro-batches, data-parallel ranks).
// While a DropoutRows lives on this thread, every dropout of a head in
// training mode draws its mask for the whole global batch of `global_rows`
// rows from (seed, site) -- site = the how-manieth dropout of this forward --
// and applies rows [row_offset, row_offset + B) of it to its (B, ...) input:
// a sample's masks are the same whichever micro-batch or rank computes it.
// The distribution is nn.Dropout's (keep with probability 1 - p, scale by
// 1 / (1 - p)). Without one, the heads use torch::dropout on LibTorch's
// generator (tools that train nothing never see the difference).
class DropoutRows {
 public:
  DropoutRows(uint64_t seed, int64_t global_rows);
  ~DropoutRows();
  DropoutRows(const DropoutRows&) = delete;
  DropoutRows& operator=(const DropoutRows&) = delete;
  // Before each forward: the rows its batch holds (resets the site count).
  void begin_forward(int64_t row_offset);
  static DropoutRows* current();
  torch::Tensor apply(const torch::Tensor& x, double p);

 private:
  uint64_t seed_;
  int64_t rows_, offset_ = 0, site_ = 0;
  std::vector<torch::Tensor> masks_;  // per site: (rows, ...) bool, CPU
  DropoutRows* previous_;
};

// Dropout with probability p in training mode (DropoutRows when one is live).
torch::Tensor head_dropout(const torch::Tensor& x, double p, bool training);

// fc1 (C -> 4C), QuickGELU, Dropout, fc2 (4C -> C).
class DecoderMlpImpl : public torch::nn::Cloneable<DecoderMlpImpl> {
 public:
  DecoderMlpImpl(int64_t width, int64_t hidden, double dropout);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);  // (.., C) -> (.., C)
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  int64_t width_, hidden_;
  double p_;
};
TORCH_MODULE(DecoderMlp);

// Pre-LN cross attention of the query over the frame tokens, then the MLP:
//   x += attn(norm1(x), norm3(y), norm3(y));  x += mlp(norm2(x))
class DecoderLayerImpl : public torch::nn::Cloneable<DecoderLayerImpl> {
 public:
  explicit DecoderLayerImpl(const HeadConfig& config);
  void reset() override;
  // x (B, 1, C) query, y (B, N, C) memory -> (B, 1, C)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& y);
  DecoderAttention attn{nullptr};
  DecoderMlp mlp{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};

 private:
  HeadConfig config_;
};
TORCH_MODULE(DecoderLayer);

// The official EVLDecoder: query token, M decoder layers and the per-layer
// temporal modules (absent from the state dict when switched off, as there).
class EvlDecoderImpl : public torch::nn::Cloneable<EvlDecoderImpl> {
 public:
  explicit EvlDecoderImpl(const HeadConfig& config);
  void reset() override;
  // x, q, k: M tensors (B, T, L, C) each -> query after the last layer (B, C)
  torch::Tensor forward(const std::vector<torch::Tensor>& x, const std::vector<torch::Tensor>& q,
                        const std::vector<torch::Tensor>& k);
  torch::Tensor cls_token;  // (C), zero-init as the official code ends up
  torch::nn::ModuleList decoder_layers{nullptr}, temporal_conv{nullptr}, cross_attention{nullptr};
  torch::nn::ParameterList temporal_pos_embed{nullptr};  // M x (T, C), zero-init

 private:
  HeadConfig config_;
};
TORCH_MODULE(EvlDecoder);

// decoder + proj (LayerNorm -> Dropout -> Linear). Use .eval() for inference
// (disables both dropouts). Not thread-safe for concurrent training steps.
class EvlHeadImpl : public torch::nn::Cloneable<EvlHeadImpl> {
 public:
  explicit EvlHeadImpl(const HeadConfig& config);
  void reset() override;
  // x: M block outputs; q, k: M per-head queries/keys of those blocks; each
  // (B, T, L, C), float32 (or under autocast). Returns logits (B, K).
  // q/k may be empty vectors when temporal cross attention is off.
  torch::Tensor forward(const std::vector<torch::Tensor>& x, const std::vector<torch::Tensor>& q,
                        const std::vector<torch::Tensor>& k);
  const HeadConfig& config() const { return config_; }
  EvlDecoder decoder{nullptr};
  torch::nn::Sequential proj{nullptr};

 private:
  HeadConfig config_;
};
TORCH_MODULE(EvlHead);

// Parameters under the official key names (no "module." prefix), in
// registration order.
std::vector<std::pair<std::string, torch::Tensor>> head_state(const EvlHead& head);

// Copies `state` (official names, "module." already stripped) into the head.
// Throws evl::Error naming `where` and the key on a missing/unexpected key or
// a shape mismatch.
void load_head_state(EvlHead& head, const std::vector<std::pair<std::string, torch::Tensor>>& state,
                     const std::string& where);

}  // namespace evl
