// RandAugment as the official EVL training loader applies it (its
// video_dataset/rand_augment.py, SlowFast's copy of timm's auto_augment.py):
// the ops of timm's RandAugment on 8-bit RGB frames with Pillow 9.4's exact
// arithmetic (LUTs, float blends truncated to uint8, the 3x3 SMOOTH filter,
// bicubic affine resampling with fill (128, 128, 128)), timm's
// "rand-mM-nN-mstdS-incI" strings, and the draws of one clip (one set of ops,
// magnitudes and signs for every frame). No LibTorch: frames are plain HWC
// uint8 buffers. Not implemented: AutoAugment policies, AugMix, timm's "w"
// (weighted op choice) and "mmax" keys, and random interpolation choice (the
// official loader fixes bicubic).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/random.h"

namespace evl::augment {

// An 8-bit RGB image as Pillow's "RGB" mode holds it: `height` rows of `width`
// pixels, 3 bytes each (R, G, B), row-major, no padding.
struct Image {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;  // (H, W, 3)

  Image() = default;
  Image(int64_t h, int64_t w) : height(h), width(w), pixels(static_cast<size_t>(h * w * 3)) {}
  uint8_t* row(int64_t y) { return pixels.data() + y * width * 3; }
  const uint8_t* row(int64_t y) const { return pixels.data() + y * width * 3; }
};

// timm's op names. The "Increasing" ops and the plain ones differ only in how a
// magnitude maps to an argument (level_argument below); the official string
// (inc1) uses the 15 of increasing_ops().
enum class Op {
  kAutoContrast,
  kEqualize,
  kInvert,
  kRotate,
  kPosterize,
  kPosterizeIncreasing,
  kSolarize,
  kSolarizeIncreasing,
  kSolarizeAdd,
  kColor,
  kColorIncreasing,
  kContrast,
  kContrastIncreasing,
  kBrightness,
  kBrightnessIncreasing,
  kSharpness,
  kSharpnessIncreasing,
  kShearX,
  kShearY,
  kTranslateXRel,
  kTranslateYRel,
};

// timm's name of `op`, e.g. "PosterizeIncreasing".
const char* op_name(Op op);
// The op of a timm name (case-sensitive, as timm spells it). Throws UsageError
// listing the known names.
Op parse_op(const std::string& name);
// Whether the op's argument changes sign with the drawn sign (Rotate, Shear,
// Translate, the enhance ops).
bool is_signed(Op op);
// timm's _RAND_INCREASING_TRANSFORMS and _RAND_TRANSFORMS, in timm's order
// (the index a draw picks).
const std::vector<Op>& increasing_ops();
const std::vector<Op>& plain_ops();

// One op as applied: magnitude on timm's 0..10 scale (already noised and
// clipped), and the sign draw (negate: the argument is negated; ignored by
// unsigned ops).
struct OpDraw {
  Op op = Op::kInvert;
  double magnitude = 0;
  bool negate = false;
};

// The argument an op gets from magnitude m, computed in double exactly as
// timm's level functions (m / 10 * range, int() truncation where timm has it,
// the sign applied last): degrees for Rotate, bits for Posterize, threshold for
// Solarize, added value for SolarizeAdd, the blend factor for the enhance ops,
// the shear factor, the translation as a fraction of the size. 0 for the
// argument-less ops.
double level_argument(const OpDraw& d);

// Applies one op to `img` (any size >= 1x1). Point ops are exact to Pillow 9.4;
// the geometric ops follow Pillow's bicubic affine transform (Geometry.c) in
// double precision (see extract/AUGMENT.md for what can differ).
Image apply_op(const Image& img, const OpDraw& d);
// Applies `ops` in order.
Image apply_ops(const Image& img, const std::vector<OpDraw>& ops);

// A parsed "rand-..." string, or disabled ("none" / "").
struct RandAugmentSpec {
  bool enabled = false;
  int magnitude = 10;         // m (timm's default _MAX_LEVEL; int, as timm parses it)
  int num_ops = 2;            // n (timm's default)
  double magnitude_std = 0;   // mstd: magnitude ~ N(m, mstd), clipped to [0, 10]
  bool increasing = false;    // inc1: the increasing op list
  double probability = 0.5;   // each chosen op applies with this probability (timm: 0.5)
  std::string text = "none";  // the canonical string (what caches and checkpoints record)
};

// The official recipe's string (every official training script passes it).
inline constexpr const char* kOfficialRandAugment = "rand-m7-n4-mstd0.5-inc1";

// Parses "none" or timm's "rand" followed by "-key<value>" parts: m (int), n
// (int >= 0), mstd (float >= 0), inc (1; timm treats any value as true, so
// "inc0" is refused rather than silently meaning inc1). Unknown keys and
// values are refused (timm ignores them). Throws UsageError naming `flag`.
RandAugmentSpec parse_rand_augment(const std::string& text, const std::string& flag);

// Parses "--augment-ops": a comma-separated list of OP:MAGNITUDE[:SIGN], SIGN
// + (default) or -, magnitude in [0, 10]; "" gives none. Throws UsageError
// naming `flag` and the bad item.
std::vector<OpDraw> parse_augment_ops(const std::string& text, const std::string& flag);
// The canonical text of `ops` ("Rotate:7:-,Invert:0:+"), "" for none; each
// magnitude is the shortest decimal that parses back to it exactly.
std::string augment_ops_text(const std::vector<OpDraw>& ops);

// One clip's RandAugment draw, as timm's RandAugment.__call__ with
// AugmentOp.__call__ for each op: n ops chosen uniformly with replacement;
// then per op, in order: applies with probability spec.probability, magnitude
// from N(m, mstd) clipped to [0, 10] (exactly m when mstd is 0), sign negated
// with probability 0.5. All three are drawn for every chosen op (skipped ones
// too). Returns the ops that apply, in order; empty when !spec.enabled. The
// same draw goes to every frame of the clip.
std::vector<OpDraw> draw_rand_augment(const RandAugmentSpec& spec, rng::Engine& g);

}  // namespace evl::augment
