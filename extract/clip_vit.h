// The frozen CLIP ViT image encoder of EVL: patch embedding, CLS token, positional
// embedding (bicubically resized for non-native inputs), ln_pre, pre-LN blocks, ln_post and
// proj. forward() returns, per requested block, the block output X and that block's
// unscaled Q/K exactly as the official EVL code defines them. Inference only: no autograd,
// no dropout, no training; weights are loaded by load_backbone (see weights.h).
//
// Letters: N images, L tokens per image (CLS at index 0), C width, H heads, E embed dim.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/precision.h"
#include "extract/weights.h"

namespace evl {

struct LayerFeatures {
  int64_t block = 0;  // 0-based backbone block index
  torch::Tensor x;    // (N, L, C) block output (residual stream after the MLP)
  torch::Tensor q;    // (N, L, C) ln_1(block input) @ Wq^T + bq, unscaled; head h at h*Dh..
  torch::Tensor k;    // (N, L, C) same with Wk, bk
};

struct BackboneOutput {
  std::vector<LayerFeatures> layers;  // in the order of the requested (sorted) blocks
  torch::Tensor embedding;            // (N, E) ln_post(CLS) @ proj, only when requested
};

// Precision (common/precision.h) of the backbone: kFp32: everything fp32. kFp16 (CUDA) /
// kBf16 (CPU; fast with avx512_bf16/AMX): GEMM operands (weights, converted once at load,
// and activations) in fp16/bf16; LayerNorm, softmax, the MLP activation, the biases after
// the attention and the residual stream in fp32.

struct BackboneOptions {
  int64_t input_size = 0;  // input side in pixels; 0 = the weights' native size
  torch::Device device = torch::kCPU;
  Precision precision = Precision::kFp32;
};

// The model. Parameters are frozen (requires_grad false) and stored in the compute dtype;
// positional_embedding is already resized to options.input_size. Not thread-safe to call
// forward concurrently from several threads on one instance (LibTorch intra-op threads
// are used inside); clone() for per-thread copies.
class ClipVisionImpl : public torch::nn::Cloneable<ClipVisionImpl> {
 public:
  ClipVisionImpl(VitArch arch, BackboneOptions options);
  void reset() override;

  // images: (N, 3, S, S) normalised float, S = input_size(); any device/dtype (converted).
  // blocks: sorted unique 0-based indices (see resolve_blocks); may be empty.
  // Returns float32 tensors on the model's device. Runs only as many blocks as needed
  // (all of them when with_embedding). Throws c10::Error/evl::Error on bad shapes.
  BackboneOutput forward(const torch::Tensor& images, const std::vector<int64_t>& blocks,
                         bool with_embedding = false);

  // Frozen ln_1 and Q/K in-projection of `block`, as float32 CPU copies of the values the
  // model computes with (bf16/fp16-rounded in those precisions), for the cache's compact
  // mode: q = layer_norm(x, ln_weight, ln_bias) @ q_weight^T + q_bias. Shapes (C), (C,C), (C).
  struct QKWeights {
    torch::Tensor ln_weight, ln_bias, q_weight, q_bias, k_weight, k_bias;
  };
  QKWeights qk_weights(int64_t block) const;

  // Copies OpenAI-named weights (see ClipWeights) into the model, converting dtype and
  // resizing the positional embedding (with a warning) when input_size differs.
  void load(const ClipWeights& weights);

  const VitArch& arch() const { return arch_; }
  const BackboneOptions& options() const { return options_; }
  int64_t input_size() const { return input_size_; }

 private:
  // Weights in the GEMM dtype; LayerNorm parameters, out_proj/c_fc/c_proj biases fp32.
  // c_fc_bias holds activation_scale * bias (1.702 for QuickGELU; see run_block).
  struct Block {
    torch::Tensor ln_1_weight, ln_1_bias, in_proj_weight, in_proj_bias, out_proj_weight,
        out_proj_bias, ln_2_weight, ln_2_bias, c_fc_weight, c_fc_bias, c_proj_weight, c_proj_bias;
  };
  // Updates the fp32 residual stream x (N, L, C) in place and returns it.
  torch::Tensor run_block(const Block& b, const torch::Tensor& x, LayerFeatures* keep) const;

  // Intermediates of run_block, allocated on first use and reused while the batch shape
  // stays the same: on the 2-vCPU VMs this runs on, touching freshly mapped memory for
  // every multi-MB temporary costs as much as the GEMMs. Part of why forward is not
  // thread-safe on one instance; clone() starts with an empty one.
  struct Workspace {
    std::map<std::string, torch::Tensor> buffers;
    torch::Tensor get(const std::string& name, std::vector<int64_t> shape,
                      const torch::TensorOptions& opt);
  };
  mutable Workspace ws_;

  VitArch arch_;
  BackboneOptions options_;
  int64_t input_size_ = 0;
  torch::ScalarType dtype_ = torch::kFloat;  // GEMM dtype
  torch::Tensor patch_weight_;     // (C, 3*P*P), (c, i, j) order = conv1.weight.flatten(1)
  torch::Tensor class_embedding_;  // (C) fp32
  torch::Tensor pos_embed_;        // (L, C) fp32 at input_size_
  torch::Tensor ln_pre_weight_, ln_pre_bias_, ln_post_weight_, ln_post_bias_;  // (C) fp32
  torch::Tensor proj_;  // (C, E) fp32, undefined when E == 0
  std::vector<Block> blocks_;
};
TORCH_MODULE(ClipVision);

// "last4" / "last 4" (the last M blocks), "all", or explicit comma-separated indices
// ("8,9,10,11", "-4,-3,-2,-1"; negatives count from the end) -> sorted 0-based indices.
// Throws UsageError naming the spec on a malformed spec, out-of-range index or duplicate.
std::vector<int64_t> resolve_blocks(const std::string& spec, int64_t depth);

// Resizes a (1 + g0*g0, C) positional embedding to (1 + g1*g1, C): the CLS row is kept,
// the grid is resized with bicubic interpolation (align_corners=false), as CLIP users do
// for 336px. Returns the input unchanged when g0 == g1. Float32 in, float32 out.
torch::Tensor interpolate_pos_embed(const torch::Tensor& pos, int64_t new_grid);

struct LoadedBackbone {
  ClipVision model{nullptr};
  VitArch arch;
  std::string format;     // "openai-torchscript" | "hf-safetensors"
  std::string file_hash;  // xxh64 hex of the weight file's bytes
};

// Reads, validates and builds the backbone in one go (see weights.h for the formats and
// errors). Throws evl::Error naming the file; UsageError for an input_size that is not a
// multiple of the patch, or a precision the device cannot run (fp16 on CPU, bf16 on CUDA).
LoadedBackbone load_backbone(const std::string& path, const BackboneOptions& options = {});

}  // namespace evl
