// ClipVision against PyTorch references written by tests/fixtures/backbone/make_tiny_clip.py
// (nn.MultiheadAttention on the same fp16-rounded weights): per-block X, Q, K, the image
// embedding, the 48px run with an interpolated position embedding, block selection.
// Built twice: without EVL_GPU_TESTS (unit) and with it (label gpu; skips without CUDA).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "common/check.h"
#include "extract/clip_vit.h"
#include "tests/support/rounding_budget.h"
#include "tests/support/torch_support.h"

namespace evl {
namespace {

const std::string kDir = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/backbone/";

std::map<std::string, torch::Tensor> load_ref() {
  return evl::test::load_tensor_dict(kDir + "tiny_clip_ref.pt");
}

constexpr auto rel_err = evl::test::rel_max_error;  // max |a-b| / max |b|, in float64

// Tolerances, relative to max |reference| (the references are float64, see
// make_tiny_clip.py), from the unit roundoff u of what the backbone rounds to:
//  - float32 compute (u = 2^-24): vit_rounding_budget (tests/support/rounding_budget.h).
//  - bf16 GEMM operands (u = 2^-9, float32 accumulation and everything else
//    float32): each GEMM on the path (qkv, scores, mix, out_proj, fc1, fc2 per
//    block; patch conv; proj) rounds both operands once, <= 2 u of relative
//    change per GEMM, and those add; plus the float32 budget.
[[maybe_unused]] double fp32_tol(const VitArch& a) {
  return test::vit_rounding_budget(a.depth, a.width, a.patch, a.tokens()) *
         test::unit_roundoff(torch::kFloat);
}
[[maybe_unused]] double low_precision_gemm_tol(const VitArch& a, double u) {
  return 2.0 * static_cast<double>(6 * a.depth + 2) * u + fp32_tol(a);
}
[[maybe_unused]] double bf16_tol(const VitArch& a) {
  return low_precision_gemm_tol(a, std::ldexp(1.0, -9));
}
// fp16 operands, and TF32 GEMMs on CUDA (a 10-bit significand too): u = 2^-11.
[[maybe_unused]] double fp16_tol(const VitArch& a) {
  return low_precision_gemm_tol(a, std::ldexp(1.0, -11));
}

void expect_matches_reference(LoadedBackbone& bb, const torch::Device& dev, double tol) {
  auto ref = load_ref();
  auto out = bb.model->forward(ref["images"].to(dev), {0, 1, 2}, /*with_embedding=*/true);
  ASSERT_EQ(out.layers.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const auto& l = out.layers[i];
    EXPECT_EQ(l.block, i);
    EXPECT_EQ(l.x.scalar_type(), torch::kFloat);
    EXPECT_EQ(l.x.device(), dev);
    EXPECT_LE(rel_err(l.x, ref[str("x.", i)]), tol) << "X of block " << i;
    EXPECT_LE(rel_err(l.q, ref[str("q.", i)]), tol) << "Q of block " << i;
    EXPECT_LE(rel_err(l.k, ref[str("k.", i)]), tol) << "K of block " << i;
  }
  EXPECT_LE(rel_err(out.embedding, ref["embedding"]), tol);
}

#ifndef EVL_GPU_TESTS

TEST(ClipVit, OpenAITorchScriptMatchesPyTorchReference) {
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt");
  EXPECT_EQ(bb.format, "openai-torchscript");
  EXPECT_EQ(bb.arch.width, 32);
  EXPECT_EQ(bb.arch.depth, 3);
  EXPECT_EQ(bb.arch.heads, 2);  // read from the scripted MultiheadAttention
  EXPECT_EQ(bb.arch.patch, 8);
  EXPECT_EQ(bb.arch.grid, 4);
  EXPECT_EQ(bb.arch.image_size, 32);
  EXPECT_EQ(bb.arch.embed_dim, 16);
  EXPECT_EQ(bb.arch.tokens(), 17);
  EXPECT_EQ(bb.file_hash.size(), 16u);
  expect_matches_reference(bb, torch::kCPU, fp32_tol(bb.arch));
}

TEST(ClipVit, HFSafetensorsMatchesPyTorchReference) {
  auto bb = load_backbone(kDir + "tiny_clip_hf.safetensors");
  EXPECT_EQ(bb.format, "hf-safetensors");
  EXPECT_EQ(bb.arch.heads, 2);  // from config.json
  EXPECT_EQ(bb.arch.activation, "quick_gelu");
  EXPECT_EQ(bb.arch.embed_dim, 16);
  expect_matches_reference(bb, torch::kCPU, fp32_tol(bb.arch));
}

TEST(ClipVit, OnlyRequestedBlocksAreReturnedAndMatch) {
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt");
  auto ref = load_ref();
  auto out = bb.model->forward(ref["images"], resolve_blocks("-2", 3));
  ASSERT_EQ(out.layers.size(), 1u);
  EXPECT_EQ(out.layers[0].block, 1);
  EXPECT_FALSE(out.embedding.defined());
  EXPECT_LE(rel_err(out.layers[0].q, ref["q.1"]), fp32_tol(bb.arch));
  EXPECT_LE(rel_err(out.layers[0].x, ref["x.1"]), fp32_tol(bb.arch));
}

TEST(ClipVit, QKWeightsReproduceQAndKFromThePreviousBlockOutput) {
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt");
  auto ref = load_ref();
  auto w = bb.model->qk_weights(2);
  // float32 from the float64 block output: its rounding, the LayerNorm and the
  // projection (3 stages of inner products of length <= C, as in fp32_tol).
  const double tol = 3 * std::sqrt(32.0) * std::ldexp(1.0, -24);
  auto h = torch::layer_norm(ref["x.1"].to(torch::kFloat), {32}, w.ln_weight, w.ln_bias, 1e-5);
  EXPECT_LE(rel_err(torch::linear(h, w.q_weight, w.q_bias), ref["q.2"]), tol);
  EXPECT_LE(rel_err(torch::linear(h, w.k_weight, w.k_bias), ref["k.2"]), tol);
  EXPECT_THROW(bb.model->qk_weights(3), c10::Error);
}

TEST(ClipVit, InterpolatedPositionEmbeddingMatchesTorchBicubic) {
  auto ref = load_ref();
  BackboneOptions opt;
  opt.input_size = 48;
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt", opt);
  EXPECT_EQ(bb.model->input_size(), 48);
  // The grid resize alone, against F.interpolate(bicubic, align_corners=False) in Python.
  auto w = read_clip_weights(kDir + "tiny_clip_openai.pt");
  auto pe = interpolate_pos_embed(w.tensors.at("positional_embedding").to(torch::kFloat), 6);
  // Bicubic = two 1-D passes of 4 taps whose weights (|w| summing to <= 1.25)
  // are themselves computed in float32 (<= 4 roundings each): <= 2 (4 + 4) u
  // per pass at <= 1.25 max |input| scale, so 2 (4 + 4) 1.25^2 u overall.
  EXPECT_LE(rel_err(pe, ref["pos_embed48"]), 2 * (4 + 4) * 1.25 * 1.25 * std::ldexp(1.0, -24));
  auto out = bb.model->forward(ref["images48"], {2}, true);
  EXPECT_LE(rel_err(out.layers[0].x, ref["x48.last"]), fp32_tol(bb.arch));
  EXPECT_LE(rel_err(out.embedding, ref["embedding48"]), fp32_tol(bb.arch));
  // Native-size images are now the wrong size.
  EXPECT_THROW(bb.model->forward(ref["images"], {0}), c10::Error);
}

TEST(ClipVit, Bf16StaysWithinOnePercentOfReference) {
  BackboneOptions opt;
  opt.precision = Precision::kBf16;
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt", opt);
  auto ref = load_ref();
  auto out = bb.model->forward(ref["images"], {0, 1, 2}, true);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(out.layers[i].x.scalar_type(), torch::kFloat);
    EXPECT_LE(rel_err(out.layers[i].x, ref[str("x.", i)]), bf16_tol(bb.arch)) << i;
    EXPECT_LE(rel_err(out.layers[i].q, ref[str("q.", i)]), bf16_tol(bb.arch)) << i;
  }
  // It is bf16 indeed: further from the reference than float32 rounding goes.
  EXPECT_GT(rel_err(out.layers[2].x, ref["x.2"]), fp32_tol(bb.arch));
}

// forward reuses internal buffers across blocks and calls: what it returned earlier must
// not change when it runs again (same or another batch size), and a smaller batch after a
// larger one must still be exact.
TEST(ClipVit, ReturnedFeaturesSurviveLaterCallsAndBatchChanges) {
  for (auto prec : {Precision::kFp32, Precision::kBf16}) {
    BackboneOptions opt;
    opt.precision = prec;
    auto bb = load_backbone(kDir + "tiny_clip_openai.pt", opt);
    auto ref = load_ref();
    const double tol = prec == Precision::kFp32 ? fp32_tol(bb.arch) : bf16_tol(bb.arch);
    auto first = bb.model->forward(ref["images"], {0, 1, 2});
    auto again = bb.model->forward(ref["images"] * 0.5, {0, 1, 2});  // same shape
    auto one = bb.model->forward(ref["images"].narrow(0, 0, 1), {0, 1, 2});
    for (int i = 0; i < 3; ++i) {
      EXPECT_LE(rel_err(first.layers[i].x, ref[str("x.", i)]), tol) << to_string(prec) << i;
      EXPECT_LE(rel_err(first.layers[i].q, ref[str("q.", i)]), tol) << to_string(prec) << i;
      EXPECT_LE(rel_err(first.layers[i].k, ref[str("k.", i)]), tol) << to_string(prec) << i;
      EXPECT_LE(rel_err(one.layers[i].x, ref[str("x.", i)].narrow(0, 0, 1)), tol);
      EXPECT_GT(rel_err(again.layers[i].x, ref[str("x.", i)]), 1e-3);  // really other input
    }
  }
}

TEST(ClipVit, CloneGivesAnIndependentEqualModel) {
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt");
  auto copy = std::dynamic_pointer_cast<ClipVisionImpl>(bb.model->clone());
  ASSERT_TRUE(copy);
  auto ref = load_ref();
  auto out = copy->forward(ref["images"], {2});
  EXPECT_LE(rel_err(out.layers[0].x, ref["x.2"]), fp32_tol(bb.arch));
}

TEST(ClipVit, BadInputsAndOptionsThrow) {
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt");
  EXPECT_THROW(bb.model->forward(torch::zeros({2, 3, 32}), {0}), c10::Error);
  EXPECT_THROW(bb.model->forward(torch::zeros({1, 3, 32, 32}), {3}), c10::Error);
  EXPECT_THROW(bb.model->forward(torch::zeros({1, 3, 32, 32}), {1, 0}), c10::Error);
  BackboneOptions odd;
  odd.input_size = 36;
  EXPECT_THROW(load_backbone(kDir + "tiny_clip_openai.pt", odd), UsageError);
  BackboneOptions half;
  half.precision = Precision::kFp16;
  EXPECT_THROW(load_backbone(kDir + "tiny_clip_openai.pt", half), UsageError);
}

TEST(ResolveBlocks, LastMExplicitAndNegativeIndices) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(resolve_blocks("last4", 12), (V{8, 9, 10, 11}));
  EXPECT_EQ(resolve_blocks("last 2", 24), (V{22, 23}));
  EXPECT_EQ(resolve_blocks("all", 3), (V{0, 1, 2}));
  EXPECT_EQ(resolve_blocks("11,8,9,10", 12), (V{8, 9, 10, 11}));
  EXPECT_EQ(resolve_blocks("-4,-3,-2,-1", 12), (V{8, 9, 10, 11}));
  EXPECT_EQ(resolve_blocks("0, -1", 12), (V{0, 11}));
  for (const char* bad :
       {"last0", "last13", "12", "-13", "1,1", "3,-9", "x", "", "last", "1,,2", "2a"})
    EXPECT_THROW(resolve_blocks(bad, 12), UsageError) << bad;
}

#else  // EVL_GPU_TESTS

TEST(ClipVitGpu, Fp16OnCudaWithinOnePercentOfReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (LibTorch built without it)";
  BackboneOptions opt;
  opt.device = torch::Device(torch::kCUDA, 0);
  opt.precision = Precision::kFp16;
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt", opt);
  expect_matches_reference(bb, opt.device, fp16_tol(bb.arch));
}

TEST(ClipVitGpu, Fp32OnCudaMatchesReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (LibTorch built without it)";
  BackboneOptions opt;
  opt.device = torch::Device(torch::kCUDA, 0);
  auto bb = load_backbone(kDir + "tiny_clip_openai.pt", opt);
  expect_matches_reference(bb, opt.device, fp16_tol(bb.arch));  // TF32 may be on for matmuls
}

#endif

}  // namespace
}  // namespace evl
