// Views against PyTorch/PyAV references computed by official_views.py, plus
// crop-box and offset rules from the official transform code.
#include "extract/views.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "extract/frame_dump.h"
#include "extract/sampling.h"
#include "extract/video_reader.h"
#include "tests/extract/video_test_util.h"

namespace evl {
namespace {

torch::Tensor read_f32(const std::string& path, std::vector<int64_t> shape) {
  std::string b = test::read_text(path);
  auto t = torch::empty(shape, torch::kFloat32);
  EXPECT_EQ(static_cast<int64_t>(b.size()), t.numel() * 4) << path;
  std::memcpy(t.data_ptr<float>(), b.data(), std::min<size_t>(b.size(), t.numel() * 4));
  return t;
}

std::string py(const std::string& args) {
  return std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR + "/tests/extract/official_views.py " +
         args;
}

TEST(Views, BilinearMatchesPyTorchInterpolate) {
  std::string dir = test::temp_dir("resize");
  const std::vector<std::array<int64_t, 4>> cases = {
      {7, 11, 5, 13}, {40, 30, 224, 168}, {33, 84, 224, 569}};
  std::string args = "--resize";
  for (size_t i = 0; i < cases.size(); ++i) {
    auto [h, w, oh, ow] = cases[i];
    args += str(" ", h, " ", w, " ", oh, " ", ow, " ", dir, "/r", i, ".f32");
  }
  ASSERT_EQ(test::sh(py(args)), 0);
  for (size_t i = 0; i < cases.size(); ++i) {
    auto [h, w, oh, ow] = cases[i];
    auto x = torch::sin(torch::arange(2 * 3 * h * w, torch::kFloat64) * 0.37)
                 .to(torch::kFloat32)
                 .view({2, 3, h, w});
    auto want = read_f32(str(dir, "/r", i, ".f32"), {2, 3, oh, ow});
    auto got = resize_bilinear(x, oh, ow);
    EXPECT_TRUE(torch::equal(got, want))
        << h << "x" << w << " max diff " << (got - want).abs().max().item<float>();
  }
}

// The whole test-view pipeline (decode, sample, normalise, resize, crops) on
// real videos against the PyAV + PyTorch reference.
TEST(Views, TestViewsMatchOfficialPipeline) {
  struct Case {
    std::string video;
    int64_t frames, stride, tv, sv;
  };
  const std::vector<Case> cases = {Case{"action/k400_arm_wrestling.mp4", 8, 16, 3, 1},
                                   Case{"action/k400_archery.avi", 32, 8, 1, 3},
                                   Case{"action/ucf24_HorseRiding_overlay.gif", 8, 16, 3, 3}};
  const std::string dir = test::temp_dir("views");
  auto video_path = [](const Case& c) {
    return std::string(EVL_SHARED_DIR) + "/data/real/videos/" + c.video;
  };
  std::string args;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    args += str(" '", video_path(c), "' ", c.frames, " ", c.stride, " ", c.tv, " ", c.sv, " ", dir,
                "/v", i, ".f32");
  }
  ASSERT_EQ(test::sh(py(args)), 0);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SamplingConfig cfg;
    cfg.frames = c.frames;
    cfg.stride = c.stride;
    cfg.temporal_views = c.tv;
    cfg.spatial_views = c.sv;
    auto views = load_clip_views(video_path(c), ClipEntry{}, cfg, 0);
    ASSERT_EQ(static_cast<int64_t>(views.size()), c.tv * c.sv);
    auto want = read_f32(str(dir, "/v", i, ".f32"), {c.tv * c.sv, c.frames, 3, 224, 224});
    for (size_t v = 0; v < views.size(); ++v) {
      ASSERT_EQ(views[v].pixels.sizes(), want[v].sizes());
      // Both sides are float32: /255, - mean, / std (3 roundings) and a bilinear
      // tap of 4 non-negative weights summing to 1, each weight and product and
      // sum rounded (<= 10 roundings), all at <= max |pixel|: 2 (3 + 10) u of it.
      const double tol = 2 * (3 + 10) * std::ldexp(1.0, -24) * want[v].abs().max().item<double>();
      const double diff = (views[v].pixels - want[v]).abs().max().item<double>();
      EXPECT_LE(diff, tol) << c.video << " view " << v << " (" << views[v].description << ")";
    }
  }
}

TEST(Views, SpatialCropOffsets) {
  EXPECT_EQ(spatial_crop_offsets(298, 224, 3), (std::vector<int64_t>{0, 37, 74}));
  EXPECT_EQ(spatial_crop_offsets(299, 224, 3),
            (std::vector<int64_t>{0, 37, 75}));  // 0, margin//2, margin
  EXPECT_EQ(spatial_crop_offsets(299, 224, 1), (std::vector<int64_t>{37}));
  EXPECT_EQ(spatial_crop_offsets(224, 224, 3), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_THROW(spatial_crop_offsets(200, 224, 1), Error);
}

TEST(Views, RandomResizedCropBoxStaysInRange) {
  std::mt19937_64 rng(9);
  double min_frac = 1, max_frac = 0;
  for (int i = 0; i < 5000; ++i) {
    CropBox b = random_resized_crop_box(240, 320, rng);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, 240);
    ASSERT_LE(b.left + b.width, 320);
    double frac = static_cast<double>(b.height * b.width) / (240 * 320);
    double ratio = static_cast<double>(b.width) / b.height;
    ASSERT_GT(ratio, 0.70);
    ASSERT_LT(ratio, 1.40);
    min_frac = std::min(min_frac, frac);
    max_frac = std::max(max_frac, frac);
  }
  EXPECT_LT(min_frac, 0.1);
  EXPECT_GT(max_frac, 0.85);
  // A 10:1 strip never fits a sampled box often; the fallback clamps to ratio 4/3.
  std::mt19937_64 rng2(1);
  int fallback = 0;
  for (int i = 0; i < 200; ++i) {
    CropBox b = random_resized_crop_box(10, 1000, rng2);
    if (b.height == 10 && b.width == 13) ++fallback;
  }
  EXPECT_GT(fallback, 0);
}

TEST(Views, TrainViewsAreReproducibleAndSameCropPerFrame) {
  std::string path =
      std::string(EVL_SHARED_DIR) + "/data/real/videos/action/k400_cleaning_pool.mp4";
  SamplingConfig cfg;
  cfg.train_views = 2;
  cfg.seed = 42;
  cfg.photometric = true;
  cfg.flip = true;
  auto a = load_clip_views(path, ClipEntry{}, cfg, 7);
  auto b = load_clip_views(path, ClipEntry{}, cfg, 7);
  ASSERT_EQ(a.size(), 2u);
  for (size_t v = 0; v < 2; ++v) {
    EXPECT_EQ(a[v].pixels.sizes(), (std::vector<int64_t>{8, 3, 224, 224}));
    EXPECT_TRUE(torch::equal(a[v].pixels, b[v].pixels));
    EXPECT_EQ(a[v].frame_indices, b[v].frame_indices);
    EXPECT_EQ(a[v].description, b[v].description);
  }
  EXPECT_NE(a[0].description, a[1].description);
  // Without augmentation, a train view is crop-then-resize of the normalised frames.
  cfg.photometric = cfg.flip = false;
  auto c = load_clip_views(path, ClipEntry{}, cfg, 3)[0];
  auto g = rng::view_engine(cfg.seed, 3, 0);
  auto idx = dense_train_indices(300, 8, 16, g);
  EXPECT_EQ(c.frame_indices, idx);
  VideoReader r(path);
  CropBox box = random_resized_crop_box(256, 340, g);
  auto x = normalize(frames_to_float(r.read_frames(idx)), cfg);
  auto want = torch::nn::functional::interpolate(
      x.slice(2, box.top, box.top + box.height).slice(3, box.left, box.left + box.width),
      torch::nn::functional::InterpolateFuncOptions()
          .size(std::vector<int64_t>{224, 224})
          .mode(torch::kBilinear)
          .align_corners(false));
  EXPECT_TRUE(torch::allclose(c.pixels, want));
}

TEST(Views, TrimmedEntrySamplesInsideTheRange) {
  std::string path =
      std::string(EVL_SHARED_DIR) + "/data/real/videos/action/k400_cleaning_pool.mp4";
  SamplingConfig cfg;
  cfg.frames = 4;
  cfg.stride = 4;
  ClipEntry e;
  e.start_sec = 2.0;
  e.end_sec = 4.0;
  auto v = load_clip_views(path, e, cfg, 0);
  for (int64_t i : v[0].frame_indices) {
    EXPECT_GE(i, 60);
    EXPECT_LT(i, 120);
  }
}

TEST(Views, NormalisationAndPngDumpRoundTrip) {
  SamplingConfig cfg;
  // (1, 3, 1, 2): a black pixel and a white pixel.
  auto x = torch::tensor({0.0f, 1.0f}).view({1, 1, 1, 2}).expand({1, 3, 1, 2}).contiguous();
  auto n = normalize(x, cfg);
  // float32: mean and std rounded to float, a subtraction and a division (or a
  // reciprocal and a product): <= 5 roundings, each <= u of the result; 6 u.
  const double u = std::ldexp(1.0, -24), black = -0.48145466 / 0.26862954,
               white = (1 - 0.40821073) / 0.27577711;
  EXPECT_NEAR(n[0][0][0][0].item<float>(), black, 6 * u * std::abs(black));
  EXPECT_NEAR(n[0][2][0][1].item<float>(), white, 6 * u * std::abs(white));
  // dump_view_png writes PNGs that ffmpeg decodes back to the un-normalised pixels.
  std::string dir = test::temp_dir("png");
  auto rgb = torch::randint(0, 256, {2, 3, 16, 16}, torch::kUInt8);
  ClipView view;
  view.view_index = 1;
  view.pixels = normalize(rgb.to(torch::kFloat32) / 255, cfg);
  dump_view_png(view, cfg, dir, "clip");
  std::string raw = dir + "/f1.rgb";
  ASSERT_EQ(test::sh("ffmpeg -hide_banner -loglevel error -y -i " + dir +
                     "/clip_v01_f01.png -f rawvideo -pix_fmt rgb24 " + raw),
            0);
  std::string b = test::read_text(raw);
  ASSERT_EQ(b.size(), 16u * 16 * 3);
  auto back = torch::from_blob(b.data(), {16, 16, 3}, torch::kUInt8).permute({2, 0, 1});
  EXPECT_TRUE(torch::equal(back, rgb[1]));
}

// --- augmentation in the views: the whole official training chain in Python
// (tests/extract/rand_augment_reference.py chain: float/255, ToPILImage, Pillow
// ops, ToTensor, normalise, crop, bilinear resize) on the frames evl decoded.

void write_ppm(const std::string& path, const torch::Tensor& frame) {  // (H, W, 3) uint8
  const auto f = frame.contiguous();
  std::ofstream out(path, std::ios::binary);
  out << "P6\n" << f.size(1) << " " << f.size(0) << "\n255\n";
  out.write(reinterpret_cast<const char*>(f.data_ptr<uint8_t>()), f.numel());
}

// The view description's crop box ("crop=left,top+WxH") and ops ("augment=...").
CropBox crop_of(const std::string& desc) {
  CropBox b;
  const auto at = desc.find("crop=");
  EXPECT_NE(at, std::string::npos) << desc;
  long long l = 0, t = 0, w = 0, h = 0;
  EXPECT_EQ(std::sscanf(desc.c_str() + at, "crop=%lld,%lld+%lldx%lld", &l, &t, &w, &h), 4) << desc;
  b.left = l;
  b.top = t;
  b.width = w;
  b.height = h;
  return b;
}

std::string ops_of(const std::string& desc) {
  const auto at = desc.find(" augment=");
  return at == std::string::npos ? "" : desc.substr(at + 9, desc.find(' ', at + 9) - at - 9);
}

// The official chain applied by Python to `view`'s frames (as decoded by evl).
torch::Tensor python_chain(const std::string& video, const ClipView& view,
                           const SamplingConfig& cfg) {
  const std::string dir = test::temp_dir("ra_chain");
  VideoReader r(video);
  const auto frames = r.read_frames(view.frame_indices);
  std::string paths;
  for (size_t i = 0; i < frames.size(); ++i) {
    const std::string p = dir + "/" + std::to_string(i) + ".ppm";
    write_ppm(p, frames[i]);
    paths += " '" + p + "'";
  }
  const CropBox b = crop_of(view.description);
  const std::string out = dir + "/chain.f32";
  auto join = [](const std::array<double, 3>& v) {
    std::ostringstream os;
    os.precision(17);
    os << v[0] << "," << v[1] << "," << v[2];
    return os.str();
  };
  const std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                          "/tests/extract/rand_augment_reference.py chain '" + out + "' '" +
                          ops_of(view.description) + "' " + std::to_string(b.top) + "," +
                          std::to_string(b.left) + "," + std::to_string(b.height) + "," +
                          std::to_string(b.width) + " " + std::to_string(cfg.input_size) + " " +
                          join(cfg.mean) + " " + join(cfg.std) + paths;
  EXPECT_EQ(test::sh(cmd), 0) << cmd;
  return read_f32(out, {static_cast<int64_t>(frames.size()), 3, cfg.input_size, cfg.input_size});
}

TEST(Views, AugmentedTrainViewsMatchTheOfficialChain) {
  const std::string path =
      std::string(EVL_SHARED_DIR) + "/data/real/videos/action/k400_arm_wrestling.mp4";
  SamplingConfig cfg;
  cfg.train_views = 2;
  cfg.seed = 5;
  // 1. Fixed ops, chained (every op kind: LUT, blend, filter, geometric).
  cfg.augment_ops = augment::parse_augment_ops(
      "Rotate:7:-,ContrastIncreasing:6.5:+,Equalize:0,SharpnessIncreasing:9:-,TranslateYRel:3:+",
      "ops");
  // 2. The official RandAugment: the drawn ops are in the description, the
  // same for all T frames, and Python applies them to each frame.
  SamplingConfig ra = cfg;
  ra.augment_ops.clear();
  ra.rand_augment = augment::parse_rand_augment(augment::kOfficialRandAugment, "ra");
  // float32 chain of <= 8 roundings on values of magnitude <= 2.2 after the
  // same uint8 pixels: 1e-5 is ~40 float32 ulps at 2.
  constexpr double kTol = 1e-5;
  int drawn = 0;
  for (const auto* c : {&cfg, &ra})
    for (const auto& v : load_clip_views(path, ClipEntry{}, *c, 9)) {
      if (c == &cfg) {
        EXPECT_EQ(ops_of(v.description), augment::augment_ops_text(cfg.augment_ops));
      }
      drawn += !ops_of(v.description).empty();
      const auto want = python_chain(path, v, *c);
      EXPECT_LE((v.pixels - want).abs().max().item<double>(), kTol) << v.description;
    }
  EXPECT_GT(drawn, 2) << "no RandAugment op drew: the test shows nothing about the draw";
  // Without augmentation the views are those of a config without the fields.
  SamplingConfig plain = cfg;
  plain.augment_ops.clear();
  const auto a = load_clip_views(path, ClipEntry{}, plain, 9);
  const auto b = load_clip_views(path, ClipEntry{}, cfg, 9);
  for (size_t v = 0; v < a.size(); ++v) {
    EXPECT_EQ(a[v].frame_indices, b[v].frame_indices);  // augmenting moves no frame or crop
    EXPECT_EQ(crop_of(a[v].description).left, crop_of(b[v].description).left);
    EXPECT_EQ(ops_of(a[v].description), "");
  }
}

TEST(Views, AugmentOpsApplyToTestViews) {
  // Invert on test views: (255 - v) / 255 = 1 - v / 255, and normalising,
  // resizing (linear) and cropping commute with x -> 1 - x, so the un-normalised
  // inverted view is 1 minus the plain one (float32 rounding: 1e-5).
  const std::string path =
      std::string(EVL_SHARED_DIR) + "/data/real/videos/action/k400_archery.avi";
  SamplingConfig cfg;
  cfg.temporal_views = 2;
  cfg.spatial_views = 3;
  const auto plain = load_clip_views(path, ClipEntry{}, cfg, 0);
  cfg.augment_ops = augment::parse_augment_ops("Invert:0", "ops");
  const auto inv = load_clip_views(path, ClipEntry{}, cfg, 0);
  ASSERT_EQ(plain.size(), inv.size());
  auto mean = torch::tensor({cfg.mean[0], cfg.mean[1], cfg.mean[2]}).view({1, 3, 1, 1});
  auto sd = torch::tensor({cfg.std[0], cfg.std[1], cfg.std[2]}).view({1, 3, 1, 1});
  for (size_t v = 0; v < plain.size(); ++v) {
    EXPECT_EQ(ops_of(inv[v].description), "Invert:0:+");
    const auto x = plain[v].pixels.to(torch::kDouble) * sd + mean;
    const auto y = inv[v].pixels.to(torch::kDouble) * sd + mean;
    EXPECT_LE((x + y - 1).abs().max().item<double>(), 1e-5) << inv[v].description;
  }
}

}  // namespace
}  // namespace evl
