// The CLIP ViT forward with per-block X/Q/K taps, its weight loading and block selection.
// Every GEMM is a 2-D addmm/mm or one batched bmm over all (image, head) pairs; the
// residual stream and LayerNorms stay fp32 in every precision. No autograd, no training.
#include "extract/clip_vit.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/check.h"
#include "common/log.h"

namespace evl {
namespace F = torch::nn::functional;

std::string to_string(Precision p) {
  switch (p) {
    case Precision::kFP32:
      return "fp32";
    case Precision::kFP16:
      return "fp16";
    case Precision::kBF16:
      return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::kFP32;
  if (s == "fp16") return Precision::kFP16;
  if (s == "bf16") return Precision::kBF16;
  EVL_THROW(UsageError, "unknown precision '", s, "' (expected fp32, fp16 or bf16)");
}

torch::Tensor interpolate_pos_embed(const torch::Tensor& pos, int64_t new_grid) {
  TORCH_CHECK(pos.dim() == 2, "positional embedding must be (L, C), got ", pos.sizes());
  const int64_t C = pos.size(1);
  const auto g0 = static_cast<int64_t>(std::lround(std::sqrt(double(pos.size(0) - 1))));
  TORCH_CHECK(g0 * g0 + 1 == pos.size(0), "positional embedding rows ", pos.size(0),
              " are not 1 + a square grid");
  if (g0 == new_grid) return pos;
  auto grid = pos.narrow(0, 1, g0 * g0).reshape({1, g0, g0, C}).permute({0, 3, 1, 2});
  auto out =
      F::interpolate(grid.to(torch::kFloat), F::InterpolateFuncOptions()
                                                 .size(std::vector<int64_t>{new_grid, new_grid})
                                                 .mode(torch::kBicubic)
                                                 .align_corners(false));
  out = out.permute({0, 2, 3, 1}).reshape({new_grid * new_grid, C});
  return torch::cat({pos.narrow(0, 0, 1).to(torch::kFloat), out}, 0);
}

std::vector<int64_t> resolve_blocks(const std::string& spec, int64_t depth) {
  std::string s;
  for (char c : spec)
    if (!std::isspace(static_cast<unsigned char>(c))) s += c;
  std::vector<int64_t> out;
  if (s == "all") {
    for (int64_t i = 0; i < depth; ++i) out.push_back(i);
    return out;
  }
  if (s.rfind("last", 0) == 0) {
    int64_t m = 0;
    try {
      size_t used = 0;
      m = std::stoll(s.substr(4), &used);
      EVL_CHECK_USAGE(used == s.size() - 4, "bad layer spec '", spec, "'");
    } catch (const std::logic_error&) {
      EVL_THROW(UsageError, "bad layer spec '", spec, "': expected lastM, all or indices");
    }
    EVL_CHECK_USAGE(m >= 1 && m <= depth, "layer spec '", spec, "': M must be in 1..", depth,
                    " for a ", depth, "-block backbone");
    for (int64_t i = depth - m; i < depth; ++i) out.push_back(i);
    return out;
  }
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int64_t i = 0;
    try {
      size_t used = 0;
      i = std::stoll(item, &used);
      EVL_CHECK_USAGE(used == item.size(), "bad layer spec '", spec, "': '", item, "'");
    } catch (const std::logic_error&) {
      EVL_THROW(UsageError, "bad layer spec '", spec, "': '", item,
                "' is not an index (expected lastM, all or comma-separated indices)");
    }
    EVL_CHECK_USAGE(i >= -depth && i < depth, "layer spec '", spec, "': block ", i,
                    " is out of range for a ", depth, "-block backbone");
    out.push_back(i < 0 ? i + depth : i);
  }
  EVL_CHECK_USAGE(!out.empty(), "empty layer spec '", spec, "'");
  std::sort(out.begin(), out.end());
  EVL_CHECK_USAGE(std::adjacent_find(out.begin(), out.end()) == out.end(), "layer spec '", spec,
                  "' names a block twice");
  return out;
}

// ---------------------------------------------------------------- module

ClipVisionImpl::ClipVisionImpl(VitArch arch, BackboneOptions options)
    : arch_(std::move(arch)), options_(options) {
  reset();
}

void ClipVisionImpl::reset() {
  const auto& a = arch_;
  TORCH_CHECK(a.width > 0 && a.depth > 0 && a.heads > 0 && a.patch > 0 && a.grid > 0,
              "ClipVision: incomplete architecture");
  input_size_ = options_.input_size ? options_.input_size : a.image_size;
  EVL_CHECK_USAGE(input_size_ % a.patch == 0, "input size ", input_size_,
                  " is not a multiple of the backbone's patch size ", a.patch);
  const bool cuda = options_.device.is_cuda();
  EVL_CHECK_USAGE(options_.precision != Precision::kFP16 || cuda,
                  "precision fp16 needs a CUDA device; use fp32 or bf16 on CPU");
  dtype_ = options_.precision == Precision::kFP16   ? torch::kHalf
           : options_.precision == Precision::kBF16 ? torch::kBFloat16
                                                    : torch::kFloat;
  const int64_t C = a.width, g = input_size_ / a.patch;
  const auto f32 = torch::TensorOptions().device(options_.device).dtype(torch::kFloat);
  const auto low = f32.dtype(dtype_);
  auto buf = [&](const std::string& name, std::vector<int64_t> shape, bool compute) {
    return register_buffer(name, torch::zeros(shape, compute ? low : f32));
  };
  patch_weight_ = buf("patch_weight", {C, 3 * a.patch * a.patch}, true);
  class_embedding_ = buf("class_embedding", {C}, false);
  pos_embed_ = buf("positional_embedding", {g * g + 1, C}, false);
  ln_pre_weight_ = buf("ln_pre_weight", {C}, false);
  ln_pre_bias_ = buf("ln_pre_bias", {C}, false);
  ln_post_weight_ = buf("ln_post_weight", {C}, false);
  ln_post_bias_ = buf("ln_post_bias", {C}, false);
  if (a.embed_dim > 0) proj_ = buf("proj", {C, a.embed_dim}, false);
  blocks_.assign(a.depth, Block{});
  for (int64_t i = 0; i < a.depth; ++i) {
    Block& b = blocks_[i];
    const auto p = str("resblocks_", i, "_");
    b.ln_1_weight = buf(p + "ln_1_weight", {C}, false);
    b.ln_1_bias = buf(p + "ln_1_bias", {C}, false);
    b.in_proj_weight = buf(p + "in_proj_weight", {3 * C, C}, true);
    b.in_proj_bias = buf(p + "in_proj_bias", {3 * C}, true);
    b.out_proj_weight = buf(p + "out_proj_weight", {C, C}, true);
    b.out_proj_bias = buf(p + "out_proj_bias", {C}, true);
    b.ln_2_weight = buf(p + "ln_2_weight", {C}, false);
    b.ln_2_bias = buf(p + "ln_2_bias", {C}, false);
    b.c_fc_weight = buf(p + "c_fc_weight", {4 * C, C}, true);
    b.c_fc_bias = buf(p + "c_fc_bias", {4 * C}, true);
    b.c_proj_weight = buf(p + "c_proj_weight", {C, 4 * C}, true);
    b.c_proj_bias = buf(p + "c_proj_bias", {C}, true);
  }
}

void ClipVisionImpl::load(const ClipWeights& w) {
  torch::NoGradGuard no_grad;
  auto set = [&](torch::Tensor& dst, const std::string& key) {
    dst.copy_(w.tensors.at(key).reshape(dst.sizes()));
  };
  set(patch_weight_, "conv1.weight");
  set(class_embedding_, "class_embedding");
  const auto& pos = w.tensors.at("positional_embedding").to(torch::kFloat);
  const int64_t g = input_size_ / arch_.patch;
  if (g != arch_.grid)
    log::warn("backbone: input size ", input_size_, " differs from the weights' native ",
              arch_.image_size, "; positional embedding grid resized ", arch_.grid, "x", arch_.grid,
              " -> ", g, "x", g, " by bicubic interpolation");
  pos_embed_.copy_(interpolate_pos_embed(pos, g));
  set(ln_pre_weight_, "ln_pre.weight");
  set(ln_pre_bias_, "ln_pre.bias");
  set(ln_post_weight_, "ln_post.weight");
  set(ln_post_bias_, "ln_post.bias");
  if (proj_.defined()) set(proj_, "proj");
  for (int64_t i = 0; i < arch_.depth; ++i) {
    Block& b = blocks_[i];
    const auto p = str("transformer.resblocks.", i, ".");
    set(b.ln_1_weight, p + "ln_1.weight");
    set(b.ln_1_bias, p + "ln_1.bias");
    set(b.in_proj_weight, p + "attn.in_proj_weight");
    set(b.in_proj_bias, p + "attn.in_proj_bias");
    set(b.out_proj_weight, p + "attn.out_proj.weight");
    set(b.out_proj_bias, p + "attn.out_proj.bias");
    set(b.ln_2_weight, p + "ln_2.weight");
    set(b.ln_2_bias, p + "ln_2.bias");
    set(b.c_fc_weight, p + "mlp.c_fc.weight");
    set(b.c_fc_bias, p + "mlp.c_fc.bias");
    set(b.c_proj_weight, p + "mlp.c_proj.weight");
    set(b.c_proj_bias, p + "mlp.c_proj.bias");
  }
}

ClipVisionImpl::QKWeights ClipVisionImpl::qk_weights(int64_t block) const {
  TORCH_CHECK(block >= 0 && block < arch_.depth, "qk_weights: block ", block,
              " out of range for depth ", arch_.depth);
  const Block& b = blocks_[block];
  const int64_t C = arch_.width;
  auto f = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kFloat).clone(); };
  return {f(b.ln_1_weight),
          f(b.ln_1_bias),
          f(b.in_proj_weight.narrow(0, 0, C)),
          f(b.in_proj_bias.narrow(0, 0, C)),
          f(b.in_proj_weight.narrow(0, C, C)),
          f(b.in_proj_bias.narrow(0, C, C))};
}

namespace {

// QuickGELU x*sigmoid(1.702x) or erf-GELU, in place on the fc1 output.
void activation_(torch::Tensor& m, const std::string& kind) {
  if (kind == "gelu") {
    m = torch::gelu(m);
  } else {
    m.mul_(torch::sigmoid(m * 1.702));
  }
}

}  // namespace

torch::Tensor ClipVisionImpl::run_block(const Block& b, const torch::Tensor& x,
                                        LayerFeatures* keep) const {
  const int64_t N = x.size(0), L = x.size(1), C = arch_.width, H = arch_.heads, D = C / H;
  auto ln = [&](const torch::Tensor& t, const torch::Tensor& w, const torch::Tensor& bias) {
    return torch::layer_norm(t, {C}, w, bias, 1e-5).to(dtype_).view({N * L, C});
  };
  auto qkv = torch::addmm(b.in_proj_bias, ln(x, b.ln_1_weight, b.ln_1_bias),
                          b.in_proj_weight.t());  // (N*L, 3C)
  if (keep) {
    keep->q = qkv.narrow(1, 0, C).to(torch::kFloat).reshape({N, L, C});
    keep->k = qkv.narrow(1, C, C).to(torch::kFloat).reshape({N, L, C});
  }
  // One layout copy to (3, N*H, L, D); then one batched GEMM per attention product.
  auto heads = qkv.view({N, L, 3, H, D}).permute({2, 0, 3, 1, 4}).contiguous();
  heads = heads.view({3, N * H, L, D});
  auto att = torch::empty({N * H, L, L}, qkv.options());
  torch::baddbmm_out(att, att, heads[0], heads[1].transpose(1, 2), /*beta=*/0,
                     /*alpha=*/1.0 / std::sqrt(static_cast<double>(D)));
  att = torch::softmax(att, -1);
  auto mix = torch::bmm(att, heads[2]);  // (N*H, L, D)
  mix = mix.view({N, H, L, D}).permute({0, 2, 1, 3}).reshape({N * L, C});
  auto y = torch::addmm(b.out_proj_bias, mix, b.out_proj_weight.t());
  auto out = x + y.view({N, L, C});  // fp32 residual stream
  auto m = torch::addmm(b.c_fc_bias, ln(out, b.ln_2_weight, b.ln_2_bias), b.c_fc_weight.t());
  activation_(m, arch_.activation);
  out.add_(torch::addmm(b.c_proj_bias, m, b.c_proj_weight.t()).view({N, L, C}));
  if (keep) keep->x = out;
  return out;
}

BackboneOutput ClipVisionImpl::forward(const torch::Tensor& images,
                                       const std::vector<int64_t>& blocks, bool with_embedding) {
  torch::InferenceMode guard;
  const auto& a = arch_;
  const int64_t S = input_size_, P = a.patch, G = S / P, C = a.width;
  TORCH_CHECK(
      images.dim() == 4 && images.size(1) == 3 && images.size(2) == S && images.size(3) == S,
      "ClipVision: expected images (N, 3, ", S, ", ", S, "), got ", images.sizes());
  TORCH_CHECK(std::is_sorted(blocks.begin(), blocks.end()) &&
                  std::adjacent_find(blocks.begin(), blocks.end()) == blocks.end(),
              "ClipVision: blocks must be sorted and unique");
  TORCH_CHECK(blocks.empty() || (blocks.front() >= 0 && blocks.back() < a.depth),
              "ClipVision: block index out of range for depth ", a.depth);
  TORCH_CHECK(!with_embedding || proj_.defined(),
              "ClipVision: these weights have no projection, so no embedding");
  const int64_t N = images.size(0);
  // Patches in (c, i, j) order, row-major over the grid: conv1 as one GEMM.
  auto patches = images.to(options_.device, dtype_)
                     .view({N, 3, G, P, G, P})
                     .permute({0, 2, 4, 1, 3, 5})
                     .reshape({N * G * G, 3 * P * P});
  auto tokens = torch::mm(patches, patch_weight_.t()).to(torch::kFloat).view({N, G * G, C});
  auto x = torch::cat({class_embedding_.view({1, 1, C}).expand({N, 1, C}), tokens}, 1);
  x = torch::layer_norm(x + pos_embed_, {C}, ln_pre_weight_, ln_pre_bias_, 1e-5);

  BackboneOutput out;
  const int64_t last = with_embedding ? a.depth - 1 : (blocks.empty() ? -1 : blocks.back());
  size_t next = 0;
  for (int64_t i = 0; i <= last; ++i) {
    const bool tap = next < blocks.size() && blocks[next] == i;
    LayerFeatures f;
    f.block = i;
    x = run_block(blocks_[i], x, tap ? &f : nullptr);
    if (tap) {
      out.layers.push_back(std::move(f));
      ++next;
    }
  }
  if (with_embedding) {
    auto cls = torch::layer_norm(x.select(1, 0), {C}, ln_post_weight_, ln_post_bias_, 1e-5);
    out.embedding = torch::mm(cls, proj_);
  }
  return out;
}

LoadedBackbone load_backbone(const std::string& path, const BackboneOptions& options) {
  LoadedBackbone lb;
  ClipWeights w = read_clip_weights(path);
  lb.arch = infer_arch(w, path);
  lb.format = w.format;
  lb.file_hash = xxh64_file_hex(path);
  lb.model = ClipVision(lb.arch, options);
  lb.model->load(w);
  lb.model->eval();
  return lb;
}

}  // namespace evl
