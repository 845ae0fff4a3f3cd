// backbone_features (features.h): chunked forwards and the per-view regrouping,
// and the storage rounding that makes --online see a cache's values.
#include "extract/features.h"

#include "cache/quantize.h"
#include "cache/torch_interop.h"
#include "common/check.h"

namespace evl {

void backbone_features(ClipVisionImpl& model, const torch::Tensor& images, int64_t frames,
                       const std::vector<int64_t>& blocks, bool with_qk, int64_t views_per_forward,
                       const std::function<void(int64_t, const ViewFeatures&)>& sink) {
  EVL_CHECK(frames >= 1 && views_per_forward >= 1, "backbone_features: frames ", frames,
            " and views per forward ", views_per_forward, " must be >= 1");
  EVL_CHECK(images.dim() == 4 && images.size(0) % frames == 0,
            "backbone_features: expected (V*T, 3, S, S) images with T=", frames, ", got ",
            images.sizes());
  torch::NoGradGuard no_grad;
  const int64_t views = images.size(0) / frames;
  const torch::Device device = model.options().device;
  for (int64_t v0 = 0; v0 < views; v0 += views_per_forward) {
    const int64_t n = std::min(views_per_forward, views - v0);
    BackboneOutput out =
        model.forward(images.narrow(0, v0 * frames, n * frames).to(device), blocks);
    EVL_CHECK(out.layers.size() == blocks.size(), "internal: the backbone returned ",
              out.layers.size(), " blocks, ", blocks.size(), " were asked for");
    ViewFeatures chunk;
    auto as_views = [&](const torch::Tensor& t) {  // (n*T, L, C) -> (n, T, L, C) on the CPU
      return t.cpu().view({n, frames, t.size(1), t.size(2)});
    };
    for (const auto& lf : out.layers) {
      chunk.x.push_back(as_views(lf.x));
      if (with_qk) {
        chunk.q.push_back(as_views(lf.q));
        chunk.k.push_back(as_views(lf.k));
      }
    }
    sink(v0, chunk);
  }
}

ViewFeatures backbone_features(ClipVisionImpl& model, const torch::Tensor& images, int64_t frames,
                               const std::vector<int64_t>& blocks, bool with_qk,
                               int64_t views_per_forward) {
  std::vector<ViewFeatures> chunks;
  backbone_features(model, images, frames, blocks, with_qk, views_per_forward,
                    [&](int64_t, const ViewFeatures& c) { chunks.push_back(c); });
  if (chunks.size() == 1) return chunks.front();
  ViewFeatures all;
  auto gather = [&](std::vector<torch::Tensor> ViewFeatures::*member, size_t i) {
    std::vector<torch::Tensor> parts;
    for (const auto& c : chunks) parts.push_back((c.*member)[i]);
    return torch::cat(parts, 0);
  };
  for (size_t i = 0; i < blocks.size() && !chunks.empty(); ++i) {
    all.x.push_back(gather(&ViewFeatures::x, i));
    if (with_qk) {
      all.q.push_back(gather(&ViewFeatures::q, i));
      all.k.push_back(gather(&ViewFeatures::k, i));
    }
  }
  return all;
}

torch::Tensor round_through_storage(const torch::Tensor& t, cache::DType dtype) {
  if (cache::is_quantized(dtype)) {
    // Groups run along the last axis and outlier channels per slice of the
    // first axis: for a block's (V, T, L, C) that is per view, the same rows
    // and slices as inside each view's record array (M, T, L, C), so this gives
    // the values a reader of the record gets.
    EVL_CHECK(t.dim() >= 1 && t.size(-1) >= 1, "round_through_storage: ", cache::to_string(dtype),
              " needs a channel axis, got ", t.sizes());
    const torch::Tensor c = t.to(torch::kCPU, torch::kFloat).contiguous();
    torch::Tensor out = torch::empty_like(c);
    cache::quantize_roundtrip(dtype, c.sizes().vec(), c.data_ptr<float>(), out.data_ptr<float>());
    return out;
  }
  const auto st = cache::torch_dtype(dtype);
  if (st == torch::kFloat) return t.to(torch::kCPU, torch::kFloat);
  return t.to(torch::kCPU, st).to(torch::kFloat);
}

}  // namespace evl
