// score_clips and the view fusion of scoring.h.
#include "train/scoring.h"

#include "common/check.h"
#include "common/progress.h"

namespace evl {

FuseMode parse_fuse_mode(const std::string& text) {
  if (text == "prob" || text == "probs" || text == "probabilities") return FuseMode::kProbabilities;
  if (text == "logits") return FuseMode::kLogits;
  EVL_THROW(UsageError, "--fuse '", text, "': expected prob (mean of softmax) or logits");
}

torch::Tensor fuse_views(const torch::Tensor& logits, FuseMode mode) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) > 0, "expected (V, K) logits, got ",
              logits.sizes());
  auto x = logits.detach().to(torch::kCPU, torch::kDouble);
  if (mode == FuseMode::kProbabilities) x = x.softmax(-1);
  return x.mean(0).to(torch::kFloat);
}

ClipScores score_clips(EvlHead& head, const FeatureSource& data, int64_t batch,
                       const torch::Device& device, FuseMode mode, Progress* progress) {
  EVL_CHECK(batch >= 1, "score_clips: batch must be >= 1, got ", batch);
  torch::NoGradGuard no_grad;
  head->eval();
  const auto& clips = data.clips();
  // (clip position, item) in clip order; a clip's logits are fused once its
  // last view has been scored.
  std::vector<std::pair<size_t, int64_t>> order;
  for (size_t c = 0; c < clips.size(); ++c)
    for (const int64_t item : clips[c].items) order.emplace_back(c, item);
  ClipScores out;
  std::vector<torch::Tensor> pending;  // (1, K) logits of the current clip's views
  size_t current = 0;
  int64_t label = -1;
  auto flush = [&] {
    const auto fused = fuse_views(torch::cat(pending, 0), mode);
    out.scores.insert(out.scores.end(), fused.data_ptr<float>(),
                      fused.data_ptr<float>() + fused.numel());
    out.labels.push_back(label);
    out.clip_index.push_back(clips[current].clip_index);
    out.views.push_back(static_cast<int64_t>(pending.size()));
    pending.clear();
  };
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch)) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(batch));
    std::vector<int64_t> items;
    for (size_t i = start; i < end; ++i) items.push_back(order[i].second);
    FeatureBatch b = data.load(items);
    to_device(b, device);
    const auto logits = head->forward(b.x, b.q, b.k).to(torch::kCPU, torch::kFloat);
    EVL_CHECK(torch::isfinite(logits).all().item<bool>(), "non-finite logits for ", data.where(),
              " items ", data.item_name(items.front()), " .. ", data.item_name(items.back()));
    out.num_classes = logits.size(1);
    for (size_t i = start; i < end; ++i) {
      if (order[i].first != current) {
        flush();
        current = order[i].first;
      }
      label = b.labels[static_cast<int64_t>(i - start)].item<int64_t>();
      pending.push_back(logits[static_cast<int64_t>(i - start)].unsqueeze(0));
    }
    if (progress) progress->advance(static_cast<int64_t>(end - start));
  }
  if (!pending.empty()) flush();
  return out;
}

}  // namespace evl
