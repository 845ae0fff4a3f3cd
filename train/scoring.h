// Per-clip scores of a head over every view of a feature source, with the
// official view fusion: the one code path behind evl_train_head's validation
// (metrics.jsonl) and evl_eval (the score file), so both give the same numbers
// on the same features and checkpoint. Metrics are computed from these scores
// by evaluate/metrics.h (compute_metrics: one ranking and tie rule everywhere).
//
// Letters: V views of one clip, K classes, N clips.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "train/cached_dataset.h"
#include "train/head.h"

namespace evl {

class Progress;
class Distributed;

// How the views of one clip are combined.
//   kProbabilities: mean over views of softmax(logits) (the official rule)
//   kLogits:        mean over views of the logits
enum class FuseMode { kProbabilities, kLogits };
// "prob" / "probs" / "probabilities" or "logits"; throws evl::UsageError naming --fuse.
FuseMode parse_fuse_mode(const std::string& text);

// Fuses the per-view logits of one clip, (V, K) -> (K) float32 on the CPU.
// Softmax and mean run in double, so the result does not depend on the batch
// the views were computed in, nor on the order of the views.
torch::Tensor fuse_views(const torch::Tensor& logits, FuseMode mode);

struct ClipScores {
  int64_t num_classes = 0;          // K
  std::vector<float> scores;        // (N, K) row-major, fused per clip
  std::vector<int64_t> labels;      // (N) -1 when unknown
  std::vector<int64_t> clip_index;  // (N) the clip's position in its dataset list
  std::vector<int64_t> views;       // (N) views fused
  int64_t num_clips() const { return static_cast<int64_t>(labels.size()); }
};

// Runs `head` in eval mode, fp32 and without gradients (the official
// evaluation has no autocast) over every item of `data`, clips in data.clips()
// order with their views adjacent, `batch` items per forward (batches span
// clips), and fuses each clip's views. Advances `progress` (may be null) per
// item. Throws evl::Error naming the source and the items for non-finite
// logits.
// With `dist` (data-parallel training, train/distributed.h), rank r runs the
// forward batches r, r + W, ... of that same sequence and the per-view logits
// are summed over ranks into zeros (exact), so every rank fuses the very
// logits a single process computes: the same numbers, sharded.
ClipScores score_clips(EvlHead& head, const FeatureSource& data, int64_t batch,
                       const torch::Device& device, FuseMode mode, Progress* progress = nullptr,
                       Distributed* dist = nullptr);

}  // namespace evl
