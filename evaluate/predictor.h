// Inference on video files in one process (evl_predict): decode, the test views
// and preprocessing of extraction (extract/views.h load_clip_views), the frozen
// CLIP ViT over them (extract/features.h, as evl_extract), the EVL head, and the
// official view fusion (mean of per-view softmax probabilities). Features stay float32 and never
// touch a cache. Deliberately no batching across videos: one video per forward.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "evaluate/evaluator.h"
#include "extract/clip_vit.h"
#include "extract/view_settings.h"
#include "extract/views.h"

namespace evl {

// Letters: V views, T frames, L tokens, C width, K classes, M decoder layers.

// The view settings (extract/view_settings.h, evl_predict's subset of the
// flags) that the user did not give (not in `given`) are resolved, in this
// order, from the manifest of the cache the checkpoint was trained on (its
// recorded `val-cache`, then `cache`, when that directory still exists), then
// from the head (frames, layers = the last M blocks), then ViewSettings'
// defaults (8 x 16 dense, 1 x 1 views, the backbone's native input size).
struct PredictConfig {
  std::string backbone;    // CLIP weights (.pt / .safetensors), as for evl_extract
  std::string checkpoint;  // evl checkpoint or official EVL .pth
  std::string labels;      // optional class names (K lines)
  std::vector<std::string> videos;
  int64_t topk = 5;
  bool json = false;               // (for the main) machine-readable output
  ViewSettings views;              // test views; train_views, flip, photometric, dtype unused
  std::vector<std::string> given;  // view flags the user set (given_view_flags(vm, kPredict))
  std::string device = "cpu";
  int64_t batch_size = 16;  // views per backbone forward
  int64_t threads = 0;      // torch intra-op threads (0: leave the default)
};

struct VideoPrediction {
  std::string video;
  int64_t views = 0;                 // V fused
  std::vector<float> probabilities;  // (K) mean of per-view softmax
};

// The k most probable classes, highest first; ties go to the lower index
// (the ranking rule of metrics.h). k is clamped to [1, K].
std::vector<std::pair<int64_t, float>> top_k(const std::vector<float>& probabilities, int64_t k);

// Loads backbone and head once; predict() may then be called for many videos.
// Not thread-safe (one backbone instance).
class Predictor {
 public:
  // Throws evl::UsageError for bad settings, evl::Error for unreadable
  // backbone/checkpoint/label files or a head that does not fit the backbone
  // and views (width, grid, frames, layers), naming the file and the field.
  explicit Predictor(const PredictConfig& cfg);

  // Throws VideoError (extract/video_reader.h) naming the file when the video
  // cannot be decoded.
  VideoPrediction predict(const std::string& video);

  const HeadConfig& head_config() const { return head_.config; }
  const SamplingConfig& sampling() const { return sampling_; }
  const std::vector<int64_t>& blocks() const { return blocks_; }          // M backbone blocks
  const std::vector<std::string>& class_names() const { return names_; }  // empty or K
  // One line: frames x stride, views, blocks, and where the settings came from.
  std::string describe() const;

 private:
  PredictConfig cfg_;
  InferenceHead head_;
  LoadedBackbone backbone_;
  SamplingConfig sampling_;
  std::vector<int64_t> blocks_;
  std::vector<std::string> names_;
  std::string source_;  // "cache manifest '...'" or "defaults"
  torch::Device device_;
};

// {"video", "views", "top": [{"class", "name"?, "probability"}...]}.
nlohmann::json prediction_to_json(const VideoPrediction& p, int64_t k,
                                  const std::vector<std::string>& names);

}  // namespace evl
