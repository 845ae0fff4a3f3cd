// Readers for CLIP vision-tower weights: OpenAI TorchScript archives (ViT-B-16.pt, ...)
// and Hugging Face CLIPModel/CLIPVisionModel safetensors (+ config.json beside them).
// Both are normalised to OpenAI's `visual.*` names and validated against the
// architecture read from the tensors themselves. Building the model is clip_vit.h's job;
// this file never runs a forward pass and does not read the text tower.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace evl {

// A CLIP ViT's shape, read from its weights (see infer_arch).
struct VitArch {
  int64_t width = 0;                      // C
  int64_t depth = 0;                      // number of residual blocks
  int64_t heads = 0;                      // H; C / 64 unless the file says otherwise
  int64_t patch = 0;                      // patch side in pixels
  int64_t grid = 0;                       // patches per side at image_size
  int64_t image_size = 0;                 // native input side = grid * patch
  int64_t embed_dim = 0;                  // E, output of `proj`; 0 when the file has no projection
  std::string activation = "quick_gelu";  // "quick_gelu" (x*sigmoid(1.702x)) or "gelu" (erf)
  int64_t tokens() const { return grid * grid + 1; }  // L, CLS included
};

// Weights in OpenAI's names without the "visual." prefix: "conv1.weight" (C,3,P,P),
// "class_embedding" (C), "positional_embedding" (L,C), "ln_pre.weight", ...,
// "transformer.resblocks.<i>.attn.in_proj_weight" (3C,C), ..., "ln_post.*", "proj" (C,E).
// Tensors are CPU, in the file's dtype, and may view a memory-mapped file (they keep the
// mapping alive). heads/activation are set when the file states them (0 / "" otherwise).
struct ClipWeights {
  std::map<std::string, torch::Tensor> tensors;
  int64_t heads = 0;
  std::string activation;
  std::string format;  // "openai-torchscript" | "hf-safetensors"
};

// "openai-torchscript" or "hf-safetensors" from the file's first bytes. Throws evl::Error
// naming the file and listing the accepted formats when it is neither (or unreadable).
std::string detect_weight_format(const std::string& path);

// Readers; throw evl::Error naming the file on truncation, a non-CLIP archive, a bad
// safetensors header (offsets past the data, overlapping, sizes that disagree with the
// shape), or an unsupported dtype. Keys are not validated here (see infer_arch).
ClipWeights read_openai_torchscript(const std::string& path);
ClipWeights read_hf_safetensors(const std::string& path);  // honours <dir>/config.json
ClipWeights read_clip_weights(const std::string& path);    // dispatches on the format

// What evl reads from a Hugging Face config.json (CLIPVisionConfig, or a CLIPModel
// config with it under "vision_config"): num_attention_heads (required, > 0) and
// hidden_act ("" when absent). Throws evl::Error naming `where` for invalid JSON,
// a non-object, a missing or non-positive head count, a non-string activation.
struct HfVisionConfig {
  int64_t heads = 0;
  std::string activation;
};
HfVisionConfig parse_hf_vision_config(const std::string& json_text, const std::string& where);

// Reads width, depth, patch, grid and embed_dim from the tensors and checks every key:
// missing, unexpected and mis-shaped keys are listed by name in one evl::Error that names
// `path`. heads = weights.heads or width / 64.
VitArch infer_arch(const ClipWeights& weights, const std::string& path);

// xxh64 of the file's bytes as 16 lower-case hex digits (the cache's backbone hash).
std::string xxh64_file_hex(const std::string& path);

// A read-only memory-mapped safetensors file. Thread-safe after construction.
class SafetensorsFile {
 public:
  struct Entry {
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte offsets into the data section
  };
  explicit SafetensorsFile(const std::string& path);  // throws evl::Error
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor viewing the mapping (it keeps the mapping alive). Throws on unknown name.
  torch::Tensor tensor(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any CPU dtype among F16/BF16/F32/F64/I64/I32/U8) as safetensors, keys in
// map order, header padded to 8 bytes. Throws evl::Error on I/O failure.
void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace evl
