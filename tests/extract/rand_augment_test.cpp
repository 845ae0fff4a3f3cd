// extract/rand_augment.h against independent references: every op on real
// frames at their native resolution against Pillow 9.4 running the op
// definitions (tests/extract/rand_augment_reference.py, frames decoded there
// with PyAV); the parsers against timm's grammar; the draws against the
// specification's distributions (fixed seeds, tolerances of 5 standard errors).
#include "extract/rand_augment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "tests/support/test_support.h"

namespace evl {
namespace {

using augment::Image;
using augment::Op;
using augment::OpDraw;

// Binary PPM (P6, maxval 255), what Pillow writes for an RGB image.
void write_ppm(const std::string& path, const Image& img) {
  std::ofstream out(path, std::ios::binary);
  out << "P6\n" << img.width << " " << img.height << "\n255\n";
  out.write(reinterpret_cast<const char*>(img.pixels.data()),
            static_cast<std::streamsize>(img.pixels.size()));
}

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string magic;
  int64_t w = 0, h = 0, maxval = 0;
  in >> magic >> w >> h >> maxval;
  EVL_CHECK(in && magic == "P6" && maxval == 255, "'", path, "' is not an 8-bit P6 PPM");
  in.get();  // the single whitespace after maxval
  Image img(h, w);
  in.read(reinterpret_cast<char*>(img.pixels.data()),
          static_cast<std::streamsize>(img.pixels.size()));
  EVL_CHECK(in, "'", path, "': truncated");
  return img;
}

std::string reference_script() {
  return test::source_path("tests/extract/rand_augment_reference.py");
}

// Frame `index` of a real video, decoded by PyAV in the reference script.
Image real_frame(const test::TempDir& dir, const std::string& video, int index) {
  const std::string cmd = test::python() + " " + reference_script() + " frames '" + dir.str() +
                          "' '" + test::real_data(video) + "' " + std::to_string(index + 1);
  const test::Exec r = test::run(cmd, dir.path());
  EVL_CHECK(r.code == 0, cmd, " failed: ", r.err);
  return read_ppm(dir / (std::to_string(index) + ".ppm"));
}

struct Diff {
  double mean = 0, p99 = 0;
  int max = 0;
  int64_t differing = 0;
};

Diff compare(const Image& a, const Image& b) {
  EVL_CHECK(a.width == b.width && a.height == b.height, "sizes differ");
  std::vector<int> d(a.pixels.size());
  double sum = 0;
  Diff r;
  for (size_t i = 0; i < d.size(); ++i) {
    d[i] = std::abs(static_cast<int>(a.pixels[i]) - static_cast<int>(b.pixels[i]));
    sum += d[i];
    r.max = std::max(r.max, d[i]);
    r.differing += d[i] != 0;
  }
  r.mean = sum / static_cast<double>(d.size());
  auto nth = d.begin() + static_cast<std::ptrdiff_t>(0.99 * static_cast<double>(d.size() - 1));
  std::nth_element(d.begin(), nth, d.end());
  r.p99 = *nth;
  return r;
}

bool is_geometric(Op op) {
  return op == Op::kRotate || op == Op::kShearX || op == Op::kShearY || op == Op::kTranslateXRel ||
         op == Op::kTranslateYRel;
}

// Every op at magnitudes 0, 3.3, 7 (the official m), 7.37 (a noised one) and
// 10, both signs of the signed ones; argument-less ops once.
std::vector<OpDraw> all_op_cases(bool full) {
  std::vector<OpDraw> out;
  const std::vector<double> mags =
      full ? std::vector<double>{0, 3.3, 7, 7.37, 10} : std::vector<double>{7.37};
  for (const auto* list : {&augment::increasing_ops(), &augment::plain_ops()})
    for (const Op op : *list) {
      if (std::any_of(out.begin(), out.end(), [&](const OpDraw& d) { return d.op == op; }))
        continue;  // in both lists
      if (op == Op::kAutoContrast || op == Op::kEqualize || op == Op::kInvert) {
        out.push_back({op, 0, false});
        continue;
      }
      for (const double m : mags) {
        out.push_back({op, m, false});
        if (augment::is_signed(op) && m > 0) out.push_back({op, m, true});
      }
    }
  return out;
}

struct RealFrame {
  const char* video;
  int index;
  bool full;  // every magnitude (else one per op, for the largest frame)
};

TEST(RandAugment, EveryOpMatchesPillowOnRealFrames) {
  const std::vector<RealFrame> frames = {
      {"videos/action/k400_arm_wrestling.mp4", 40, true},                      // 340x256
      {"videos/action/activitynet_v_ZNVhz7ctTq0_dog_walking.mp4", 5, true},    // 480x360
      {"videos/action/ucf101_v_CricketShot_g04_c01_rgb.gif", 3, true},         // 224x224 (square)
      {"videos/codecs/sage_example_84x33.mp4", 1, true},                       // odd height
      {"videos/action/pymecavideo_balle-jbart_throwing_ball.mp4", 20, false},  // 720x576
  };
  double worst_mean = 0, worst_p99 = 0;
  int worst_max = 0;
  for (const auto& f : frames) {
    test::TempDir dir("rand_augment");
    const Image input = real_frame(dir, f.video, f.index);
    const auto cases = all_op_cases(f.full);
    const std::string ops = augment::augment_ops_text(cases);
    const std::string in_path = dir / "input.ppm";
    write_ppm(in_path, input);
    const std::string cmd = test::python() + " " + reference_script() + " ops '" + dir.str() +
                            "' '" + ops + "' '" + in_path + "'";
    const test::Exec r = test::run(cmd, dir.path());
    ASSERT_EQ(r.code, 0) << cmd << "\n" << r.err;
    for (size_t j = 0; j < cases.size(); ++j) {
      const OpDraw& d = cases[j];
      const Image want = read_ppm(dir / ("f0_o" + std::to_string(j) + ".ppm"));
      const Image got = augment::apply_op(input, d);
      const Diff diff = compare(got, want);
      const std::string what = std::string(f.video) + " " + std::to_string(input.width) + "x" +
                               std::to_string(input.height) + " " + augment::augment_ops_text({d});
      if (is_geometric(d.op)) {
        EXPECT_LE(diff.mean, 1.0) << what;
        EXPECT_LE(diff.p99, 3.0) << what;
        worst_mean = std::max(worst_mean, diff.mean);
        worst_p99 = std::max(worst_p99, diff.p99);
        worst_max = std::max(worst_max, diff.max);
      } else {
        EXPECT_EQ(diff.differing, 0) << what << ": largest difference " << diff.max;
      }
    }
  }
  std::printf("geometric ops vs Pillow: worst mean |diff| %.4f, worst p99 %.0f, max %d\n",
              worst_mean, worst_p99, worst_max);
}

TEST(RandAugment, OpsKeepTheirDefiningProperties) {
  // Facts that follow from the definitions alone, on a synthetic image.
  Image img(5, 7);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(37 * i % 251);
  EXPECT_EQ(augment::apply_ops(img, {{Op::kInvert, 0, false}, {Op::kInvert, 0, false}}).pixels,
            img.pixels);
  // Magnitude 0 is the identity for the geometric and "increasing" enhance ops.
  for (const Op op : {Op::kRotate, Op::kShearX, Op::kShearY, Op::kTranslateXRel, Op::kTranslateYRel,
                      Op::kColorIncreasing, Op::kContrastIncreasing, Op::kBrightnessIncreasing,
                      Op::kSharpnessIncreasing, Op::kSolarizeIncreasing, Op::kSolarizeAdd})
    EXPECT_EQ(augment::apply_op(img, {op, 0, false}).pixels, img.pixels) << augment::op_name(op);
  // Translating by the whole width leaves only the fill colour.
  Image out = augment::apply_op(img, {Op::kTranslateXRel, 10, false});  // 0.45 of the width
  EXPECT_EQ(out.row(0)[(img.width - 1) * 3], 128);
  // A 1x1 image survives every op.
  Image one(1, 1);
  one.pixels = {10, 200, 30};
  for (const auto& d : all_op_cases(false)) EXPECT_EQ(augment::apply_op(one, d).pixels.size(), 3u);
}

TEST(RandAugment, ParsesTimmStrings) {
  auto s = augment::parse_rand_augment(augment::kOfficialRandAugment, "--rand-augment");
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.magnitude, 7);
  EXPECT_EQ(s.num_ops, 4);
  EXPECT_DOUBLE_EQ(s.magnitude_std, 0.5);
  EXPECT_TRUE(s.increasing);
  EXPECT_DOUBLE_EQ(s.probability, 0.5);
  EXPECT_EQ(s.text, augment::kOfficialRandAugment);
  // timm's defaults: m 10, n 2, no noise, the plain op list; keys in any order.
  s = augment::parse_rand_augment("rand", "--rand-augment");
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.magnitude, 10);
  EXPECT_EQ(s.num_ops, 2);
  EXPECT_FALSE(s.increasing);
  EXPECT_EQ(s.text, "rand-m10-n2");
  EXPECT_EQ(augment::parse_rand_augment("rand-inc1-n3-m9", "x").text, "rand-m9-n3-inc1");
  EXPECT_FALSE(augment::parse_rand_augment("none", "x").enabled);
  EXPECT_FALSE(augment::parse_rand_augment("", "x").enabled);
  for (const char* bad : {"rand-m7.5", "rand-inc0", "rand-w0", "rand-q3", "rand-m", "rand-n-1",
                          "rand-mstd-1", "rand-m7-", "randm7", "auto-m7", "rand-mstdx"}) {
    const std::string msg =
        test::error_of([&] { augment::parse_rand_augment(bad, "--rand-augment"); });
    EXPECT_NE(msg.find("--rand-augment '" + std::string(bad) + "'"), std::string::npos)
        << bad << ": " << msg;
  }
}

TEST(RandAugment, ParsesAugmentOps) {
  const auto ops =
      augment::parse_augment_ops("Rotate:7:-,Invert:0,SolarizeAdd:3.5:+", "--augment-ops");
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_EQ(ops[0].op, Op::kRotate);
  EXPECT_TRUE(ops[0].negate);
  EXPECT_EQ(ops[1].op, Op::kInvert);
  EXPECT_DOUBLE_EQ(ops[2].magnitude, 3.5);
  EXPECT_EQ(augment::augment_ops_text(ops), "Rotate:7:-,Invert:0:+,SolarizeAdd:3.5:+");
  EXPECT_TRUE(augment::parse_augment_ops("", "x").empty());
  for (const char* bad : {"Rotat:7", "Rotate", "Rotate:11", "Rotate:-1", "Rotate:7:x", "Invert:0:-",
                          "Rotate:7,", "Rotate:7:+:1"}) {
    const std::string msg =
        test::error_of([&] { augment::parse_augment_ops(bad, "--augment-ops"); });
    EXPECT_NE(msg.find("--augment-ops"), std::string::npos) << bad << ": " << msg;
  }
}

// Draws of `clips` clips, each from its own engine as the views draw them.
std::vector<std::vector<OpDraw>> draws(const augment::RandAugmentSpec& s, int clips) {
  std::vector<std::vector<OpDraw>> out;
  for (int c = 0; c < clips; ++c) {
    auto g = rng::view_engine(11, c, 0);
    out.push_back(augment::draw_rand_augment(s, g));
  }
  return out;
}

TEST(RandAugment, DrawsFollowTheSpecification) {
  constexpr int kClips = 20000;
  auto spec = augment::parse_rand_augment(augment::kOfficialRandAugment, "x");
  // 1. Application rate: each of n = 4 chosen ops applies with probability 0.5,
  // so the applied count ~ Binomial(4 * kClips, 0.5) (sd 141 at 80000 trials).
  const auto official = draws(spec, kClips);
  int64_t applied = 0;
  for (const auto& d : official) applied += static_cast<int64_t>(d.size());
  const double trials = 4.0 * kClips;
  EXPECT_NEAR(static_cast<double>(applied), trials * 0.5, 5 * std::sqrt(trials * 0.25));

  // 2. With probability 1 every chosen op is returned: the choice is uniform
  // over the 15 increasing ops with replacement; magnitudes ~ N(7, 0.5)
  // (clipping at 0 and 10 is 6 sd away); signs of signed ops are fair.
  spec.probability = 1.0;
  const auto all = draws(spec, kClips);
  std::map<Op, int64_t> count;
  std::vector<double> mags;
  int64_t signed_ops = 0, negated = 0, repeats = 0;
  for (const auto& d : all) {
    ASSERT_EQ(d.size(), 4u);
    std::set<Op> distinct;
    for (const auto& o : d) {
      ++count[o.op];
      distinct.insert(o.op);
      mags.push_back(o.magnitude);
      ASSERT_GE(o.magnitude, 0);
      ASSERT_LE(o.magnitude, 10);
      if (augment::is_signed(o.op)) {
        ++signed_ops;
        negated += o.negate;
      } else {
        EXPECT_FALSE(o.negate);
      }
    }
    repeats += distinct.size() < 4;
  }
  ASSERT_EQ(count.size(), 15u);
  for (const Op op : augment::increasing_ops()) {
    const double p = 1.0 / 15;
    EXPECT_NEAR(static_cast<double>(count[op]), trials * p, 5 * std::sqrt(trials * p * (1 - p)))
        << augment::op_name(op);
  }
  // With replacement: P(some op repeats among 4 of 15) = 1 - 15*14*13*12/15^4.
  const double p_rep = 1.0 - 15.0 * 14 * 13 * 12 / std::pow(15.0, 4);
  EXPECT_NEAR(static_cast<double>(repeats), kClips * p_rep,
              5 * std::sqrt(kClips * p_rep * (1 - p_rep)));
  double mean = 0, var = 0, within1 = 0;
  for (double m : mags) mean += m;
  mean /= static_cast<double>(mags.size());
  for (double m : mags) {
    var += (m - mean) * (m - mean);
    within1 += std::abs(m - 7.0) <= 0.5;
  }
  var /= static_cast<double>(mags.size() - 1);
  const double n = static_cast<double>(mags.size());
  EXPECT_NEAR(mean, 7.0, 5 * 0.5 / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(var), 0.5, 5 * 0.5 / std::sqrt(2 * n));
  const double p68 = std::erf(1 / std::sqrt(2.0));  // P(|z| <= 1)
  EXPECT_NEAR(within1 / n, p68, 5 * std::sqrt(p68 * (1 - p68) / n));
  EXPECT_NEAR(static_cast<double>(negated), signed_ops * 0.5, 5 * std::sqrt(signed_ops * 0.25));

  // 3. Clipping: N(10, 1) clipped to [0, 10] is exactly 10 half of the time.
  auto clipped = augment::parse_rand_augment("rand-m10-n1-mstd1-inc1", "x");
  clipped.probability = 1.0;
  int64_t at_max = 0;
  for (const auto& d : draws(clipped, kClips)) at_max += d.at(0).magnitude == 10.0;
  EXPECT_NEAR(static_cast<double>(at_max), kClips * 0.5, 5 * std::sqrt(kClips * 0.25));
  // 4. No noise (mstd 0 or absent): exactly m; plain list without inc.
  auto fixed = augment::parse_rand_augment("rand-m9-n3", "x");
  fixed.probability = 1.0;
  std::set<Op> seen;
  for (const auto& d : draws(fixed, 2000))
    for (const auto& o : d) {
      EXPECT_EQ(o.magnitude, 9.0);
      seen.insert(o.op);
    }
  EXPECT_EQ(seen, std::set<Op>(augment::plain_ops().begin(), augment::plain_ops().end()));
}

TEST(RandAugment, DrawsArePureFunctionsOfTheEngine) {
  const auto spec = augment::parse_rand_augment(augment::kOfficialRandAugment, "x");
  auto a = rng::view_engine(3, 17, 2), b = rng::view_engine(3, 17, 2);
  EXPECT_EQ(augment::augment_ops_text(augment::draw_rand_augment(spec, a)),
            augment::augment_ops_text(augment::draw_rand_augment(spec, b)));
  // ...and leaves equal engines in equal states.
  EXPECT_EQ(a(), b());
  EXPECT_TRUE(augment::draw_rand_augment(augment::parse_rand_augment("none", "x"), a).empty());
}

}  // namespace
}  // namespace evl
