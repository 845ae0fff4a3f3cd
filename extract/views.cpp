// Test and training views of a clip; numerics follow the official
// video_dataset/dataset.py and transform.py (see views.h).
#include "extract/views.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "common/log.h"
#include "extract/sampling.h"
#include "extract/video_reader.h"

namespace evl {

SamplingConfig sampling_config(const ViewSettings& views, uint64_t seed, int64_t input_size) {
  EVL_CHECK(input_size > 0, "sampling_config: unresolved input size ", input_size);
  SamplingConfig s;
  s.frames = views.frames;
  s.stride = views.stride;
  s.tsn = views.tsn();
  s.temporal_views = views.temporal_views;
  s.spatial_views = views.spatial_views;
  s.train_views = views.train_views;
  s.input_size = input_size;
  s.flip = views.flip;
  s.photometric = views.photometric;
  s.rand_augment = augment::parse_rand_augment(views.rand_augment, "--rand-augment");
  s.augment_ops = augment::parse_augment_ops(views.augment_ops, "--augment-ops");
  s.seed = seed;
  return s;
}

CropBox random_resized_crop_box(int64_t height, int64_t width, rng::Engine& g,
                                std::array<double, 2> scale, std::array<double, 2> ratio) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target = rng::uniform_real(g, scale[0], scale[1]) * area;
    double aspect = std::exp(rng::uniform_real(g, log_lo, log_hi));
    int64_t w = std::llround(std::sqrt(target * aspect));
    int64_t h = std::llround(std::sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      int64_t top = rng::uniform_int(g, 0, height - h);
      int64_t left = rng::uniform_int(g, 0, width - w);
      return {top, left, h, w};
    }
  }
  // Centre-crop fallback, as transform.py: clamp the frame's ratio into range.
  double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio[0]) {
    h = std::llround(static_cast<double>(w) / ratio[0]);
  } else if (in_ratio > ratio[1]) {
    w = std::llround(static_cast<double>(h) * ratio[1]);
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

std::vector<torch::Tensor> augment_frames(const std::vector<torch::Tensor>& frames,
                                          const std::vector<augment::OpDraw>& ops) {
  if (ops.empty()) return frames;
  std::vector<torch::Tensor> out;
  for (const auto& f : frames) {
    TORCH_CHECK(f.dim() == 3 && f.size(2) == 3 && f.scalar_type() == torch::kUInt8,
                "augment_frames: expected (H,W,3) uint8, got ", f.sizes());
    const auto in = f.contiguous();
    augment::Image img(in.size(0), in.size(1));
    std::memcpy(img.pixels.data(), in.data_ptr<uint8_t>(), img.pixels.size());
    const augment::Image res = augment::apply_ops(img, ops);
    auto t = torch::empty({res.height, res.width, 3}, torch::kUInt8);
    std::memcpy(t.data_ptr<uint8_t>(), res.pixels.data(), res.pixels.size());
    out.push_back(t);
  }
  return out;
}

torch::Tensor frames_to_float(const std::vector<torch::Tensor>& frames) {
  TORCH_CHECK(!frames.empty(), "frames_to_float: no frames");
  return torch::stack(frames).permute({0, 3, 1, 2}).to(torch::kFloat32) / 255;
}

torch::Tensor normalize(const torch::Tensor& x, const SamplingConfig& cfg) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "normalize: expected (T,3,H,W), got ", x.sizes());
  auto mean =
      torch::tensor({cfg.mean[0], cfg.mean[1], cfg.mean[2]}, torch::kFloat32).view({1, 3, 1, 1});
  auto std =
      torch::tensor({cfg.std[0], cfg.std[1], cfg.std[2]}, torch::kFloat32).view({1, 3, 1, 1});
  return (x - mean) / std;
}

torch::Tensor resize_bilinear(const torch::Tensor& x, int64_t height, int64_t width) {
  TORCH_CHECK(x.dim() == 4, "resize_bilinear: expected (T,C,H,W), got ", x.sizes());
  namespace F = torch::nn::functional;
  return F::interpolate(x.contiguous(), F::InterpolateFuncOptions()
                                            .size(std::vector<int64_t>{height, width})
                                            .mode(torch::kBilinear)
                                            .align_corners(false));
}

torch::Tensor resize_short_side(const torch::Tensor& x, int64_t size) {
  int64_t h = x.size(2), w = x.size(3);
  if (h <= w) return resize_bilinear(x, size, w * size / h);
  return resize_bilinear(x, h * size / w, size);
}

std::vector<int64_t> spatial_crop_offsets(int64_t length, int64_t size, int64_t views) {
  EVL_CHECK(length >= size, "spatial crop of ", size, " does not fit in ", length, " pixels");
  EVL_CHECK(views >= 1, "spatial views must be >= 1, got ", views);
  int64_t margin = length - size;
  if (views == 1) return {margin / 2};
  std::vector<int64_t> off;
  for (int64_t i = 0; i < views; ++i) off.push_back(margin * i / (views - 1));
  return off;
}

Photometric random_photometric(rng::Engine& g) {
  Photometric p;
  p.brightness = rng::uniform_real(g, 0.6, 1.4);
  p.contrast = rng::uniform_real(g, 0.6, 1.4);
  p.saturation = rng::uniform_real(g, 0.6, 1.4);
  return p;
}

torch::Tensor apply_photometric(const torch::Tensor& x, const Photometric& p) {
  // Luma weights as torchvision's rgb_to_grayscale.
  auto gray =
      (0.299 * x.select(1, 0) + 0.587 * x.select(1, 1) + 0.114 * x.select(1, 2)).unsqueeze(1);
  auto y = (x * p.brightness).clamp(0, 1);
  auto mean = (gray * p.brightness).clamp(0, 1).mean({1, 2, 3}, true);
  y = (p.contrast * y + (1 - p.contrast) * mean).clamp(0, 1);
  auto g = (0.299 * y.select(1, 0) + 0.587 * y.select(1, 1) + 0.114 * y.select(1, 2)).unsqueeze(1);
  return (p.saturation * y + (1 - p.saturation) * g).clamp(0, 1);
}

namespace {

struct Plan {
  std::vector<int64_t> indices;  // within the trimmed range
  std::string description;
};

std::vector<ClipView> build_views(VideoReader& reader, const ClipEntry& entry,
                                  const SamplingConfig& cfg, int64_t clip_index) {
  const FrameRange range = trim_range(reader.frame_times(), entry.start_sec, entry.end_sec);
  const int64_t n = range.count, s = cfg.input_size;
  const bool train = cfg.train_views > 0;
  std::vector<Plan> plans;  // train: one per view; test: one per temporal view
  std::vector<rng::Engine> rngs;
  if (train) {
    for (int64_t v = cfg.first_train_view; v < cfg.first_train_view + cfg.train_views; ++v) {
      rngs.push_back(rng::view_engine(cfg.seed, clip_index, v));
      auto idx = cfg.tsn ? tsn_train_indices(n, cfg.frames, rngs.back())
                         : dense_train_indices(n, cfg.frames, cfg.stride, rngs.back());
      plans.push_back({idx, cfg.first_train_view == 0 ? str("train ", v, "/", cfg.train_views)
                                                      : str("train ", v)});
    }
  } else {
    EVL_CHECK(cfg.temporal_views >= 1 && cfg.spatial_views >= 1, "views must be >= 1");
    auto starts = cfg.tsn ? std::vector<int64_t>()
                          : temporal_view_starts(n, cfg.frames, cfg.stride, cfg.temporal_views);
    for (int64_t t = 0; t < cfg.temporal_views; ++t) {
      auto idx = cfg.tsn ? tsn_test_indices(n, cfg.frames, t, cfg.temporal_views)
                         : dense_view_indices(n, starts[t], cfg.frames, cfg.stride);
      plans.push_back({idx, str("t", t, "/", cfg.temporal_views)});
    }
  }
  // Decode the union of the frames once.
  std::vector<int64_t> all;
  for (auto& p : plans)
    for (auto& i : p.indices) {
      i += range.first;
      all.push_back(i);
    }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  const auto& vi = reader.info();
  const int64_t frame_px = int64_t{vi.width} * vi.height;
  const int64_t need =
      static_cast<int64_t>(all.size()) * frame_px * 3 + 2 * cfg.frames * frame_px * 3 * 4;
  if (need > cfg.max_decoded_bytes)
    throw VideoError(reader.path(),
                     str("needs ~", need >> 20, " MiB of decoded frames (", all.size(),
                         " frames of ", vi.width, "x", vi.height, "), more than the ",
                         cfg.max_decoded_bytes >> 20, " MiB bound; raise --max-decoded-mib"));
  auto decoded = reader.read_frames(all);
  std::map<int64_t, torch::Tensor> by_index;
  for (size_t i = 0; i < all.size(); ++i) by_index[all[i]] = decoded[i];
  // The view's frames, augmented by `ops`, as (T, 3, H, W) float in [0, 1].
  auto gather = [&](const std::vector<int64_t>& idx, const std::vector<augment::OpDraw>& ops) {
    std::vector<torch::Tensor> f;
    for (int64_t i : idx) f.push_back(by_index.at(i));
    return frames_to_float(augment_frames(f, ops));
  };
  auto augment_note = [](const std::vector<augment::OpDraw>& ops) {
    return ops.empty() ? std::string() : " augment=" + augment::augment_ops_text(ops);
  };

  std::vector<ClipView> views;
  if (train) {
    for (size_t v = 0; v < plans.size(); ++v) {
      auto& g = rngs[v];
      const int64_t view_index = cfg.first_train_view + static_cast<int64_t>(v);
      std::vector<augment::OpDraw> ops = cfg.augment_ops;
      if (ops.empty()) {
        auto ga = rng::augment_engine(cfg.seed, clip_index, view_index);
        ops = augment::draw_rand_augment(cfg.rand_augment, ga);
      }
      auto x = gather(plans[v].indices, ops);
      CropBox box = random_resized_crop_box(x.size(2), x.size(3), g);
      bool flip = cfg.flip && rng::bernoulli(g, 0.5);
      std::string desc = plans[v].description +
                         str(" crop=", box.left, ",", box.top, "+", box.width, "x", box.height);
      if (cfg.photometric) {
        Photometric p = random_photometric(g);
        x = apply_photometric(x, p);
        desc += str(" photometric=", p.brightness, "/", p.contrast, "/", p.saturation);
      }
      x = normalize(x, cfg).narrow(2, box.top, box.height).narrow(3, box.left, box.width);
      x = resize_bilinear(x, s, s);
      if (flip) {
        x = x.flip({3});
        desc += " flip";
      }
      desc += augment_note(ops);
      views.push_back({static_cast<int32_t>(view_index), desc, plans[v].indices, x.contiguous()});
    }
    return views;
  }
  std::vector<torch::Tensor> resized;  // per temporal view, (T, 3, H', W')
  for (auto& p : plans)
    resized.push_back(resize_short_side(normalize(gather(p.indices, cfg.augment_ops), cfg), s));
  const int64_t h = resized[0].size(2), w = resized[0].size(3);
  const bool wide = w >= h;
  auto offsets = spatial_crop_offsets(wide ? w : h, s, cfg.spatial_views);
  for (int64_t sv = 0; sv < cfg.spatial_views; ++sv)
    for (int64_t tv = 0; tv < cfg.temporal_views; ++tv) {
      auto& x = resized[tv];
      int64_t top = wide ? (h - s) / 2 : offsets[sv], left = wide ? offsets[sv] : (w - s) / 2;
      auto crop = x.narrow(2, top, s).narrow(3, left, s).contiguous();
      views.push_back({static_cast<int32_t>(views.size()),
                       str("test ", plans[tv].description, " s", sv, "/", cfg.spatial_views,
                           " start=", plans[tv].indices.front(), augment_note(cfg.augment_ops)),
                       plans[tv].indices, crop});
    }
  return views;
}

}  // namespace

std::vector<ClipView> load_clip_views(const std::string& video_path, const ClipEntry& entry,
                                      const SamplingConfig& cfg, int64_t clip_index) {
  VideoReaderOptions opt;
  opt.threads = cfg.decoder_threads;
  VideoReader reader(video_path, opt);
  for (int attempt = 0;; ++attempt) {
    try {
      return build_views(reader, entry, cfg, clip_index);
    } catch (const FrameCountChanged& e) {
      if (attempt >= 3) throw;
      log::warn(e.what(), "; resampling the clip");
    }
  }
}

}  // namespace evl
