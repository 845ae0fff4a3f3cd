// Clip views and preprocessing, matching the official EVL pipeline: test views
// (normalise -> resize short side to S -> spatial crops at 0, margin/2, margin;
// temporal views per sampling.h, spatial-major order) and training views
// (random resized crop, the same for every frame, resized to S x S). Bilinear
// resizing is LibTorch's F.interpolate(align_corners=False), no antialias.
// Training views get RandAugment (extract/rand_augment.h) on the decoded uint8
// frames before anything else, as the official loader (its float/255 ->
// ToPILImage round trip is exact for 8-bit input, so it is skipped): one draw
// per view from rng::augment_engine(seed, clip, view), applied to every frame.
// Photometric jitter and flips are options of ours (the official code has
// neither).
//
// Shapes: T frames, H x W frame size, S output size.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/random.h"
#include "extract/dataset_list.h"
#include "extract/rand_augment.h"
#include "extract/view_settings.h"

namespace evl {

// The resolved settings the view code runs on (built from ViewSettings by
// sampling_config below; evl_predict may take mean/std from a cache manifest).
struct SamplingConfig {
  int64_t frames = 8, stride = 16;
  bool tsn = false;
  int64_t temporal_views = 1, spatial_views = 1;
  int64_t train_views = 0;       // K > 0: K augmented training views instead of test views
  int64_t first_train_view = 0;  // training views first .. first + K - 1 (--online draws one)
  int64_t input_size = 224;
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};
  bool flip = false, photometric = false;
  augment::RandAugmentSpec rand_augment;     // training views (disabled: none)
  std::vector<augment::OpDraw> augment_ops;  // every view; replaces rand_augment when set
  uint64_t seed = 0;
  int decoder_threads = 1;  // libavcodec threads per video
  // Memory bound per video: the decoded RGB frames a clip needs plus two float
  // copies of one view's frames at the decoded resolution. A clip above it
  // fails (VideoError naming the bound) instead of exhausting the machine.
  int64_t max_decoded_bytes = int64_t(4096) << 20;
};

// The SamplingConfig of `views` with training-view seed `seed` at the resolved
// input size (> 0). The only conversion from user settings to view settings.
SamplingConfig sampling_config(const ViewSettings& views, uint64_t seed, int64_t input_size);

struct ClipView {
  int32_t view_index = 0;
  std::string description;             // e.g. "test t1/3 s0/1 start=94"; ends with
                                       // " augment=OPS" (augment_ops_text) when augmented
  std::vector<int64_t> frame_indices;  // T presentation-order indices into the whole video
  torch::Tensor pixels;                // (T, 3, S, S) float32, normalised
};

// A crop rectangle in pixels.
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// Inception-style crop as the official transform.py: area fraction uniform in
// `scale`, aspect ratio log-uniform in `ratio`, 10 tries, then a centre crop
// clamped to the ratio range.
CropBox random_resized_crop_box(int64_t height, int64_t width, rng::Engine& g,
                                std::array<double, 2> scale = {0.08, 1.0},
                                std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0});

// `ops` applied to each uint8 (H, W, 3) frame (the same ops for every frame).
std::vector<torch::Tensor> augment_frames(const std::vector<torch::Tensor>& frames,
                                          const std::vector<augment::OpDraw>& ops);
// uint8 (H, W, 3) frames -> (T, 3, H, W) float32 in [0, 1].
torch::Tensor frames_to_float(const std::vector<torch::Tensor>& frames);
// (x - mean) / std per channel of (T, 3, H, W), in float32 like the official code.
torch::Tensor normalize(const torch::Tensor& x, const SamplingConfig& cfg);
// F.interpolate(x, size={h, w}, mode=bilinear, align_corners=False) of (T, 3, H, W).
torch::Tensor resize_bilinear(const torch::Tensor& x, int64_t height, int64_t width);
// Resizes (T, 3, H, W) so the short side is `size`; the long side becomes long*size/short.
torch::Tensor resize_short_side(const torch::Tensor& x, int64_t size);
// Offsets along an axis of length `length` for `views` crops of `size`:
// 1 view: margin/2; k views: margin*i/(k-1) (k = 3: 0, margin/2, margin).
std::vector<int64_t> spatial_crop_offsets(int64_t length, int64_t size, int64_t views);

// Brightness/contrast/saturation factors, the same for every frame of a view.
struct Photometric {
  double brightness = 1, contrast = 1, saturation = 1;
};
Photometric random_photometric(rng::Engine& g);
// Applies p to (T, 3, H, W) RGB in [0, 1]; result clamped to [0, 1].
torch::Tensor apply_photometric(const torch::Tensor& x, const Photometric& p);

// All views of one clip: cfg.train_views > 0 gives K training views (view
// indices cfg.first_train_view + 0 .. K-1; view v is the same whatever K and
// first are, so an online draw equals a cached view), otherwise
// spatial_views x temporal_views test views in spatial-major order. Decodes only
// the frames needed, once. Trims to [entry.start_sec, entry.end_sec) when set.
// A video that turns out shorter than indexed is resampled (with a warning).
// Deterministic given (cfg.seed, clip_index, view_index): view v draws from
// rng::view_engine(seed, clip, v) (common/random.h). Throws VideoError.
std::vector<ClipView> load_clip_views(const std::string& video_path, const ClipEntry& entry,
                                      const SamplingConfig& cfg, int64_t clip_index);

}  // namespace evl
