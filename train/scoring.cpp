// score_clips and the view fusion of scoring.h.
#include "train/scoring.h"

#include "common/check.h"
#include "common/progress.h"
#include "train/distributed.h"

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
                       const torch::Device& device, FuseMode mode, Progress* progress,
                       Distributed* dist) {
  EVL_CHECK(batch >= 1, "score_clips: batch must be >= 1, got ", batch);
  torch::NoGradGuard no_grad;
  head->eval();
  const auto& clips = data.clips();
  // (clip position, item) in clip order, cut into forward batches of `batch`
  // items (batches span clips).
  std::vector<std::pair<size_t, int64_t>> order;
  for (size_t c = 0; c < clips.size(); ++c)
    for (const int64_t item : clips[c].items) order.emplace_back(c, item);
  const int64_t n = static_cast<int64_t>(order.size());
  const int64_t classes = head->config().num_classes;
  ClipScores out;
  out.num_classes = classes;
  auto logits = torch::zeros({n, classes}, torch::kFloat);
  auto labels = torch::zeros({n}, torch::kInt64);  // label + 1 (0: unknown or not this rank's)
  const int64_t rank = dist ? dist->rank() : 0, world = dist ? dist->world_size() : 1;
  for (int64_t start = 0, index = 0; start < n; start += batch, ++index) {
    if (index % world != rank) continue;
    const int64_t end = std::min(n, start + batch);
    std::vector<int64_t> items;
    for (int64_t i = start; i < end; ++i) items.push_back(order[static_cast<size_t>(i)].second);
    FeatureBatch b = data.load(items);
    to_device(b, device);
    const auto part = head->forward(b.x, b.q, b.k).to(torch::kCPU, torch::kFloat);
    EVL_CHECK(torch::isfinite(part).all().item<bool>(), "non-finite logits for ", data.where(),
              " items ", data.item_name(items.front()), " .. ", data.item_name(items.back()));
    EVL_CHECK(part.size(1) == classes, "score_clips: the head gives ", part.size(1),
              " logits, its config says ", classes);
    logits.narrow(0, start, end - start).copy_(part);
    labels.narrow(0, start, end - start).copy_(b.labels.to(torch::kInt64) + 1);
    if (progress) progress->advance(end - start);
  }
  if (dist) dist->sum({logits, labels}, "validation");
  // Fuse each clip's adjacent views.
  const auto label_of = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n;) {
    const size_t clip = order[static_cast<size_t>(i)].first;
    int64_t j = i;
    while (j < n && order[static_cast<size_t>(j)].first == clip) ++j;
    const auto fused = fuse_views(logits.narrow(0, i, j - i), mode);
    out.scores.insert(out.scores.end(), fused.data_ptr<float>(),
                      fused.data_ptr<float>() + fused.numel());
    out.labels.push_back(label_of[j - 1] - 1);
    out.clip_index.push_back(clips[clip].clip_index);
    out.views.push_back(j - i);
    i = j;
  }
  return out;
}

}  // namespace evl
