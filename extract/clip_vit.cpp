// The CLIP ViT forward with per-block X/Q/K taps, its weight loading and block selection.
// Every GEMM is a 2-D addmm/mm or one batched bmm over all (image, head) pairs; the
// residual stream, LayerNorms, softmax and the MLP activation run in fp32 in every precision
// (only GEMM operands are bf16/fp16). Intermediates live in a per-instance workspace reused
// across blocks and calls (see Workspace in clip_vit.h). No autograd, no training.
#include "extract/clip_vit.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/check.h"
#include "common/log.h"

namespace evl {
namespace F = torch::nn::functional;

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

namespace {
// The factor folded into c_fc_bias and the fc output for the activation (see run_block).
double activation_scale(const std::string& activation) {
  return activation == "gelu" ? 1.0 : 1.702;
}
}  // namespace

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
  EVL_CHECK_USAGE(options_.precision != Precision::kFp16 || cuda,
                  "precision fp16 needs a CUDA device; use fp32 or bf16 on CPU");
  dtype_ = options_.precision == Precision::kFp16   ? torch::kHalf
           : options_.precision == Precision::kBf16 ? torch::kBFloat16
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
  ws_ = Workspace{};  // clone() copy-constructs, then resets: never share buffers
  blocks_.assign(a.depth, Block{});
  for (int64_t i = 0; i < a.depth; ++i) {
    Block& b = blocks_[i];
    const auto p = str("resblocks_", i, "_");
    b.ln_1_weight = buf(p + "ln_1_weight", {C}, false);
    b.ln_1_bias = buf(p + "ln_1_bias", {C}, false);
    b.in_proj_weight = buf(p + "in_proj_weight", {3 * C, C}, true);
    b.in_proj_bias = buf(p + "in_proj_bias", {3 * C}, true);
    b.out_proj_weight = buf(p + "out_proj_weight", {C, C}, true);
    b.out_proj_bias = buf(p + "out_proj_bias", {C}, false);
    b.ln_2_weight = buf(p + "ln_2_weight", {C}, false);
    b.ln_2_bias = buf(p + "ln_2_bias", {C}, false);
    b.c_fc_weight = buf(p + "c_fc_weight", {4 * C, C}, true);
    b.c_fc_bias = buf(p + "c_fc_bias", {4 * C}, false);
    b.c_proj_weight = buf(p + "c_proj_weight", {C, 4 * C}, true);
    b.c_proj_bias = buf(p + "c_proj_bias", {C}, false);
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
    b.c_fc_bias.mul_(activation_scale(arch_.activation));  // see run_block
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

torch::Tensor ClipVisionImpl::Workspace::get(const std::string& name, std::vector<int64_t> shape,
                                             const torch::TensorOptions& opt) {
  auto& t = buffers[name];
  if (!t.defined() || t.sizes() != c10::IntArrayRef(shape) || t.dtype() != opt.dtype() ||
      t.device() != opt.device())
    t = torch::empty(shape, opt);
  return t;
}

// The block, written so that every large intermediate goes into a reused workspace buffer
// (fresh multi-MB tensors per op cost page faults, which are very expensive on the VMs this
// runs on) and so that no elementwise pass runs on bf16 data: ATen 1.13's bf16 silu/gelu/
// softmax kernels are 2-4x slower than the fp32 ones (measured on avx512_bf16 EPYC with the
// default AVX2 dispatch), so scores and MLP activations are widened to fp32 once, processed,
// and narrowed back for the next GEMM. Biases of the out-projection and the MLP are fp32 and
// applied in those elementwise passes instead of through addmm (mm without the bias
// "sum" post-op is 10-20% faster in oneDNN). QuickGELU(m) = m*sigmoid(1.702m) =
// silu(1.702m)/1.702: c_fc_bias is stored pre-multiplied by 1.702 (load), the fc output is
// scaled by 1.702 in the same pass that adds it, one vectorised silu runs in place, and the
// 1/1.702 rides on the residual add after c_proj.
torch::Tensor ClipVisionImpl::run_block(const Block& b, const torch::Tensor& x,
                                        LayerFeatures* keep) const {
  const int64_t N = x.size(0), L = x.size(1), C = arch_.width, H = arch_.heads, D = C / H;
  const int64_t NL = N * L;
  const bool low = dtype_ != torch::kFloat;
  const auto lo = x.options().dtype(dtype_), f32 = x.options().dtype(torch::kFloat);
  const double act_scale = activation_scale(arch_.activation);
  auto& ws = ws_;

  // ln_1 -> h (GEMM dtype). x is the fp32 residual stream, updated in place below.
  auto ln = [&](const torch::Tensor& w, const torch::Tensor& bias) {
    auto y = torch::layer_norm(x, {C}, w, bias, 1e-5).view({NL, C});
    if (!low) return y;
    return ws.get("h", {NL, C}, lo).copy_(y);
  };
  auto qkv = ws.get("qkv", {NL, 3 * C}, lo);
  torch::addmm_out(qkv, b.in_proj_bias, ln(b.ln_1_weight, b.ln_1_bias), b.in_proj_weight.t());
  if (keep) {  // always copies: qkv is a workspace buffer, overwritten by the next block
    keep->q = qkv.narrow(1, 0, C).to(torch::kFloat, false, true).view({N, L, C});
    keep->k = qkv.narrow(1, C, C).to(torch::kFloat, false, true).view({N, L, C});
  }
  // One layout copy to (3, N*H, L, D); then one batched GEMM per attention product.
  auto heads = ws.get("heads", {3, N * H, L, D}, lo);
  heads.view({3, N, H, L, D}).copy_(qkv.view({N, L, 3, H, D}).permute({2, 0, 3, 1, 4}));
  auto att = ws.get("att", {N * H, L, L}, lo);
  torch::baddbmm_out(att, att, heads[0], heads[1].transpose(1, 2), /*beta=*/0,
                     /*alpha=*/1.0 / std::sqrt(static_cast<double>(D)));
  if (low) {
    auto att32 = ws.get("att32", {N * H, L, L}, f32).copy_(att);
    at::_softmax_out(att32, att32, -1, false);
    att.copy_(att32);
  } else {
    at::_softmax_out(att, att, -1, false);
  }
  auto mixh = ws.get("mixh", {N * H, L, D}, lo);
  torch::bmm_out(mixh, att, heads[2]);
  auto mix = ws.get("mix", {N, L, H, D}, lo);
  mix.copy_(mixh.view({N, H, L, D}).permute({0, 2, 1, 3}));
  auto y = ws.get("y", {NL, C}, lo);
  torch::mm_out(y, mix.view({NL, C}), b.out_proj_weight.t());
  auto xf = x.view({NL, C});
  xf.add_(y).add_(b.out_proj_bias);

  auto m = ws.get("m", {NL, 4 * C}, lo);
  torch::mm_out(m, ln(b.ln_2_weight, b.ln_2_bias), b.c_fc_weight.t());
  auto m32 = low ? ws.get("m32", {NL, 4 * C}, f32) : m;
  torch::add_out(m32, b.c_fc_bias, m, /*alpha=*/act_scale);  // act_scale * (m + bias)
  if (arch_.activation == "gelu")
    at::gelu_(m32);
  else
    at::silu_(m32);
  if (low) m.copy_(m32);
  torch::mm_out(y, m, b.c_proj_weight.t());
  xf.add_(y, /*alpha=*/1.0 / act_scale).add_(b.c_proj_bias);
  if (keep) keep->x = x.clone();
  return x;
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
