// RandAugment ops and draws (rand_augment.h). Each op is written from what
// Pillow 9.4 computes (ImageOps.py, ImageEnhance.py, ImageFilter.py and the C
// files Blend.c, Filter.c, Convert.c, Geometry.c), including its float and
// integer rounding, so the point ops give Pillow's bytes. The file is compiled
// with -ffp-contract=off: a fused multiply-add would round differently from
// Pillow's separate float multiply and add.
#include "extract/rand_augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "common/check.h"

namespace evl::augment {

namespace {

struct OpInfo {
  Op op;
  const char* name;
  bool is_signed;
};

const std::vector<OpInfo>& op_table() {
  static const std::vector<OpInfo> t = {
      {Op::kAutoContrast, "AutoContrast", false},
      {Op::kEqualize, "Equalize", false},
      {Op::kInvert, "Invert", false},
      {Op::kRotate, "Rotate", true},
      {Op::kPosterize, "Posterize", false},
      {Op::kPosterizeIncreasing, "PosterizeIncreasing", false},
      {Op::kSolarize, "Solarize", false},
      {Op::kSolarizeIncreasing, "SolarizeIncreasing", false},
      {Op::kSolarizeAdd, "SolarizeAdd", false},
      {Op::kColor, "Color", false},
      {Op::kColorIncreasing, "ColorIncreasing", true},
      {Op::kContrast, "Contrast", false},
      {Op::kContrastIncreasing, "ContrastIncreasing", true},
      {Op::kBrightness, "Brightness", false},
      {Op::kBrightnessIncreasing, "BrightnessIncreasing", true},
      {Op::kSharpness, "Sharpness", false},
      {Op::kSharpnessIncreasing, "SharpnessIncreasing", true},
      {Op::kShearX, "ShearX", true},
      {Op::kShearY, "ShearY", true},
      {Op::kTranslateXRel, "TranslateXRel", true},
      {Op::kTranslateYRel, "TranslateYRel", true},
  };
  return t;
}

const OpInfo& info(Op op) {
  for (const auto& i : op_table())
    if (i.op == op) return i;
  EVL_THROW(Error, "rand_augment: unknown op ", static_cast<int>(op));
}

constexpr double kMaxLevel = 10.0;  // timm's _MAX_LEVEL
constexpr uint8_t kFill = 128;      // the official fill colour (128, 128, 128)

using Lut = std::array<uint8_t, 256>;

// Image.point(lut) with one LUT per channel (Pillow clips LUT entries to 0..255).
Image point(const Image& img, const std::array<Lut, 3>& lut) {
  Image out(img.height, img.width);
  const size_t n = img.pixels.size();
  for (size_t i = 0; i < n; i += 3) {
    out.pixels[i] = lut[0][img.pixels[i]];
    out.pixels[i + 1] = lut[1][img.pixels[i + 1]];
    out.pixels[i + 2] = lut[2][img.pixels[i + 2]];
  }
  return out;
}

Image point(const Image& img, const Lut& lut) { return point(img, {lut, lut, lut}); }

uint8_t clip8(int64_t v) { return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255)); }

std::array<std::array<int64_t, 256>, 3> histograms(const Image& img) {
  std::array<std::array<int64_t, 256>, 3> h{};
  for (size_t i = 0; i < img.pixels.size(); i += 3)
    for (size_t c = 0; c < 3; ++c) ++h[c][img.pixels[i + c]];
  return h;
}

// ImageOps.autocontrast(img) (cutoff 0, no ignore): each channel's [lo, hi]
// stretched to [0, 255] by int(ix * scale + offset) in double.
Image autocontrast(const Image& img) {
  const auto h = histograms(img);
  std::array<Lut, 3> lut;
  for (size_t c = 0; c < 3; ++c) {
    int lo = 0, hi = 255;
    while (lo < 256 && h[c][lo] == 0) ++lo;
    while (hi >= 0 && h[c][hi] == 0) --hi;
    for (int ix = 0; ix < 256; ++ix) {
      if (hi <= lo) {
        lut[c][ix] = static_cast<uint8_t>(ix);
        continue;
      }
      const double scale = 255.0 / (hi - lo);
      const double offset = -lo * scale;
      lut[c][ix] = clip8(static_cast<int64_t>(ix * scale + offset));  // int() truncates
    }
  }
  return point(img, lut);
}

// ImageOps.equalize(img): per channel, step = (N - count of the last used
// level) // 255 (Pillow 9.4; older versions divided by 256); lut[i] =
// (step // 2 + count below i) // step, clipped to 255.
Image equalize(const Image& img) {
  const auto h = histograms(img);
  std::array<Lut, 3> lut;
  for (size_t c = 0; c < 3; ++c) {
    int64_t total = 0, last = 0, used = 0;
    for (int i = 0; i < 256; ++i)
      if (h[c][i]) {
        total += h[c][i];
        last = h[c][i];
        ++used;
      }
    const int64_t step = used <= 1 ? 0 : (total - last) / 255;
    int64_t n = step / 2;
    for (int i = 0; i < 256; ++i) {
      if (step == 0) {
        lut[c][i] = static_cast<uint8_t>(i);
        continue;
      }
      lut[c][i] = clip8(n / step);
      n += h[c][i];
    }
  }
  return point(img, lut);
}

Lut lut_of(int (*f)(int, int), int arg) {
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[i] = clip8(f(i, arg));
  return lut;
}

// Image.blend(degenerate, img, alpha), Blend.c: alpha is a C float; inside
// [0, 1] the float result is truncated, outside it is clipped then truncated.
Image blend(const Image& degenerate, const Image& img, double factor) {
  const auto alpha = static_cast<float>(factor);
  if (alpha == 0.0f) return degenerate;
  if (alpha == 1.0f) return img;
  Image out(img.height, img.width);
  const bool inside = alpha >= 0 && alpha <= 1.0f;
  for (size_t i = 0; i < img.pixels.size(); ++i) {
    const int a = degenerate.pixels[i], b = img.pixels[i];
    const float v = static_cast<float>(a) + alpha * static_cast<float>(b - a);
    if (inside)
      out.pixels[i] = static_cast<uint8_t>(v);
    else
      out.pixels[i] = v <= 0.0f ? 0 : v >= 255.0f ? 255 : static_cast<uint8_t>(v);
  }
  return out;
}

// RGB -> L, Convert.c rgb2l: ITU-R 601-2 luma in 16-bit fixed point, rounded.
uint8_t luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

// ImageEnhance.Color: the degenerate image is img.convert("L").convert("RGB").
Image color_degenerate(const Image& img) {
  Image out(img.height, img.width);
  for (size_t i = 0; i < img.pixels.size(); i += 3)
    out.pixels[i] = out.pixels[i + 1] = out.pixels[i + 2] = luma(&img.pixels[i]);
  return out;
}

// ImageEnhance.Contrast: a flat image of int(mean of the L image + 0.5), the
// mean as ImageStat computes it (sum of level * count over count, in double).
Image contrast_degenerate(const Image& img) {
  std::array<int64_t, 256> h{};
  for (size_t i = 0; i < img.pixels.size(); i += 3) ++h[luma(&img.pixels[i])];
  double sum = 0, count = 0;
  for (int i = 0; i < 256; ++i) {
    sum += static_cast<double>(i) * static_cast<double>(h[i]);
    count += static_cast<double>(h[i]);
  }
  const auto mean = static_cast<uint8_t>(static_cast<int>(sum / count + 0.5));
  Image out(img.height, img.width);
  std::fill(out.pixels.begin(), out.pixels.end(), mean);
  return out;
}

// ImageEnhance.Sharpness: img.filter(ImageFilter.SMOOTH), the 3x3 kernel
// (1 1 1 / 1 5 1 / 1 1 1) / 13 in float (Filter.c ImagingFilter3x3): rows
// y+1, y, y-1 summed in that order onto 0.5, clipped and truncated; the border
// rows and columns are copied. Images under 3x3 are returned unchanged.
Image smooth(const Image& img) {
  if (img.width < 3 || img.height < 3) return img;
  const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
  const std::array<float, 9> kernel = {k1, k1, k1, k1, k5, k1, k1, k1, k1};
  Image out = img;
  const int64_t w = img.width;
  auto row3 = [](const uint8_t* r, int64_t x, const float* k) {
    return static_cast<float>(r[x - 3]) * k[0] + static_cast<float>(r[x]) * k[1] +
           static_cast<float>(r[x + 3]) * k[2];
  };
  for (int64_t y = 1; y + 1 < img.height; ++y) {
    const uint8_t *up = img.row(y - 1), *mid = img.row(y), *down = img.row(y + 1);
    uint8_t* o = out.row(y);
    for (int64_t x = 1; x + 1 < w; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const int64_t i = x * 3 + c;
        float ss = 0.5f;
        ss += row3(down, i, &kernel[0]);
        ss += row3(mid, i, &kernel[3]);
        ss += row3(up, i, &kernel[6]);
        o[i] = ss <= 0.0f ? 0 : ss >= 255.0f ? 255 : static_cast<uint8_t>(ss);
      }
  }
  return out;
}

// Geometry.c's bicubic kernel (a = -1) through 4 samples at fraction d.
double cubic(double v1, double v2, double v3, double v4, double d) {
  const double p1 = v2;
  const double p2 = -v1 + v3;
  const double p3 = 2 * (v1 - v2) + v3 - v4;
  const double p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

// Image.transform(size, AFFINE, (a, b, c, d, e, f), BICUBIC, fillcolor=128s):
// output pixel (x, y) samples the input at (a*(x+.5) + b*(y+.5) + c,
// d*(x+.5) + e*(y+.5) + f) (Geometry.c affine_transform + bicubic_filter32RGB);
// a sample outside [0, W) x [0, H) keeps the fill colour.
Image affine(const Image& img, const std::array<double, 6>& m) {
  Image out(img.height, img.width);
  std::fill(out.pixels.begin(), out.pixels.end(), kFill);
  const int64_t w = img.width, h = img.height;
  auto xclip = [&](int64_t x) { return x < 0 ? 0 : x >= w ? w - 1 : x; };
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* o = out.row(y);
    for (int64_t x = 0; x < w; ++x) {
      const double xo = static_cast<double>(x) + 0.5, yo = static_cast<double>(y) + 0.5;
      double xin = m[0] * xo + m[1] * yo + m[2];
      double yin = m[3] * xo + m[4] * yo + m[5];
      if (xin < 0.0 || yin < 0.0 || std::floor(xin) >= static_cast<double>(w) ||
          std::floor(yin) >= static_cast<double>(h))
        continue;
      xin -= 0.5;
      yin -= 0.5;
      auto ix = static_cast<int64_t>(std::floor(xin)), iy = static_cast<int64_t>(std::floor(yin));
      const double dx = xin - static_cast<double>(ix), dy = yin - static_cast<double>(iy);
      --ix;
      --iy;
      const int64_t x0 = xclip(ix) * 3, x1 = xclip(ix + 1) * 3, x2 = xclip(ix + 2) * 3,
                    x3 = xclip(ix + 3) * 3;
      for (int64_t c = 0; c < 3; ++c) {
        auto along = [&](int64_t row) {
          const uint8_t* r = img.row(row) + c;
          return cubic(r[x0], r[x1], r[x2], r[x3], dx);
        };
        // The first row is clamped; a later row outside the image repeats the
        // one before it (Geometry.c BICUBIC_BODY).
        const double v1 = along(std::clamp<int64_t>(iy, 0, h - 1));
        const double v2 = iy + 1 >= 0 && iy + 1 < h ? along(iy + 1) : v1;
        const double v3 = iy + 2 >= 0 && iy + 2 < h ? along(iy + 2) : v2;
        const double v4 = iy + 3 >= 0 && iy + 3 < h ? along(iy + 3) : v3;
        const double v = cubic(v1, v2, v3, v4, dy);
        o[x * 3 + c] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : static_cast<uint8_t>(v);
      }
    }
  }
  return out;
}

// Python's round(x, 15): the correctly rounded 15-decimal value (glibc's
// printf rounds exactly, strtod reads back exactly).
double round15(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15f", x);
  return std::strtod(buf, nullptr);
}

// Image.rotate(degrees, BICUBIC, fillcolor) about the centre, same size: the
// matrix Pillow builds, in its order of operations.
Image rotate(const Image& img, double degrees) {
  double angle = std::fmod(degrees, 360.0);  // Python's float %: sign of the divisor
  if (angle != 0.0 && angle < 0.0) angle += 360.0;
  if (angle == 0.0) return img;
  constexpr double kDegToRad = 3.14159265358979323846 / 180.0;
  const double rad = -(angle * kDegToRad);
  std::array<double, 6> m = {round15(std::cos(rad)),  round15(std::sin(rad)), 0.0,
                             round15(-std::sin(rad)), round15(std::cos(rad)), 0.0};
  const double cx = static_cast<double>(img.width) / 2.0;
  const double cy = static_cast<double>(img.height) / 2.0;
  const double c = m[0] * -cx + m[1] * -cy + m[2];
  const double f = m[3] * -cx + m[4] * -cy + m[5];
  m[2] = c + cx;
  m[5] = f + cy;
  return affine(img, m);
}

bool parse_int(const std::string& s, int& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (*end != '\0' || v < 0 || v > 1000000) return false;
  out = static_cast<int>(v);
  return true;
}

bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return *end == '\0' && std::isfinite(out);
}

// The shortest decimal that reads back as exactly `v` (so a view's recorded
// ops reproduce it).
std::string format_double(double v) {
  char buf[40];
  for (int digits = 6; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

const char* op_name(Op op) { return info(op).name; }

bool is_signed(Op op) { return info(op).is_signed; }

Op parse_op(const std::string& name) {
  std::string known;
  for (const auto& i : op_table()) {
    if (name == i.name) return i.op;
    known += known.empty() ? "" : ", ";
    known += i.name;
  }
  EVL_THROW(UsageError, "unknown augmentation op '", name, "' (known: ", known, ")");
}

const std::vector<Op>& increasing_ops() {
  static const std::vector<Op> ops = {Op::kAutoContrast,
                                      Op::kEqualize,
                                      Op::kInvert,
                                      Op::kRotate,
                                      Op::kPosterizeIncreasing,
                                      Op::kSolarizeIncreasing,
                                      Op::kSolarizeAdd,
                                      Op::kColorIncreasing,
                                      Op::kContrastIncreasing,
                                      Op::kBrightnessIncreasing,
                                      Op::kSharpnessIncreasing,
                                      Op::kShearX,
                                      Op::kShearY,
                                      Op::kTranslateXRel,
                                      Op::kTranslateYRel};
  return ops;
}

const std::vector<Op>& plain_ops() {
  static const std::vector<Op> ops = {
      Op::kAutoContrast, Op::kEqualize,    Op::kInvert, Op::kRotate,        Op::kPosterize,
      Op::kSolarize,     Op::kSolarizeAdd, Op::kColor,  Op::kContrast,      Op::kBrightness,
      Op::kSharpness,    Op::kShearX,      Op::kShearY, Op::kTranslateXRel, Op::kTranslateYRel};
  return ops;
}

double level_argument(const OpDraw& d) {
  const double m = d.magnitude;
  const double sign = d.negate ? -1.0 : 1.0;
  switch (d.op) {
    case Op::kAutoContrast:
    case Op::kEqualize:
    case Op::kInvert:
      return 0;
    case Op::kRotate:
      return sign * ((m / kMaxLevel) * 30.0);
    case Op::kPosterize:
      return static_cast<int>((m / kMaxLevel) * 4);
    case Op::kPosterizeIncreasing:
      return 4 - static_cast<int>((m / kMaxLevel) * 4);
    case Op::kSolarize:
      return static_cast<int>((m / kMaxLevel) * 256);
    case Op::kSolarizeIncreasing:
      return 256 - static_cast<int>((m / kMaxLevel) * 256);
    case Op::kSolarizeAdd:
      return static_cast<int>((m / kMaxLevel) * 110);
    case Op::kColor:
    case Op::kContrast:
    case Op::kBrightness:
    case Op::kSharpness:
      return (m / kMaxLevel) * 1.8 + 0.1;
    case Op::kColorIncreasing:
    case Op::kContrastIncreasing:
    case Op::kBrightnessIncreasing:
    case Op::kSharpnessIncreasing:
      return 1.0 + sign * ((m / kMaxLevel) * 0.9);
    case Op::kShearX:
    case Op::kShearY:
      return sign * ((m / kMaxLevel) * 0.3);
    case Op::kTranslateXRel:
    case Op::kTranslateYRel:
      return sign * ((m / kMaxLevel) * 0.45);
  }
  return 0;
}

Image apply_op(const Image& img, const OpDraw& d) {
  EVL_CHECK(img.height >= 1 && img.width >= 1 &&
                img.pixels.size() == static_cast<size_t>(img.height * img.width * 3),
            "rand_augment: bad image ", img.width, "x", img.height, " with ", img.pixels.size(),
            " bytes");
  const double arg = level_argument(d);
  switch (d.op) {
    case Op::kAutoContrast:
      return autocontrast(img);
    case Op::kEqualize:
      return equalize(img);
    case Op::kInvert:
      return point(img, lut_of([](int i, int) { return 255 - i; }, 0));
    case Op::kPosterize:
    case Op::kPosterizeIncreasing: {
      const int bits = static_cast<int>(arg);
      if (bits >= 8) return img;  // timm's posterize
      const int mask = ~((1 << (8 - bits)) - 1);
      return point(img, lut_of([](int i, int k) { return i & k; }, mask));
    }
    case Op::kSolarize:
    case Op::kSolarizeIncreasing:
      return point(img,
                   lut_of([](int i, int t) { return i < t ? i : 255 - i; }, static_cast<int>(arg)));
    case Op::kSolarizeAdd:
      return point(img, lut_of([](int i, int add) { return i < 128 ? std::min(255, i + add) : i; },
                               static_cast<int>(arg)));
    case Op::kColor:
    case Op::kColorIncreasing:
      return blend(color_degenerate(img), img, arg);
    case Op::kContrast:
    case Op::kContrastIncreasing:
      return blend(contrast_degenerate(img), img, arg);
    case Op::kBrightness:
    case Op::kBrightnessIncreasing:
      return blend(Image(img.height, img.width), img, arg);  // black
    case Op::kSharpness:
    case Op::kSharpnessIncreasing:
      return blend(smooth(img), img, arg);
    case Op::kRotate:
      return rotate(img, arg);
    case Op::kShearX:
      return affine(img, {1, arg, 0, 0, 1, 0});
    case Op::kShearY:
      return affine(img, {1, 0, 0, arg, 1, 0});
    case Op::kTranslateXRel:
      return affine(img, {1, 0, arg * static_cast<double>(img.width), 0, 1, 0});
    case Op::kTranslateYRel:
      return affine(img, {1, 0, 0, 0, 1, arg * static_cast<double>(img.height)});
  }
  return img;
}

Image apply_ops(const Image& img, const std::vector<OpDraw>& ops) {
  Image out = img;
  for (const auto& d : ops) out = apply_op(out, d);
  return out;
}

RandAugmentSpec parse_rand_augment(const std::string& text, const std::string& flag) {
  RandAugmentSpec s;
  if (text.empty() || text == "none") return s;
  auto bad = [&](const std::string& why) {
    return UsageError(str(flag, " '", text, "': ", why,
                          " (expected 'none' or rand-mM-nN[-mstdS][-inc1], e.g. ",
                          kOfficialRandAugment, ")"));
  };
  std::vector<std::string> parts;
  std::stringstream ss(text);
  for (std::string p; std::getline(ss, p, '-');) parts.push_back(p);
  if (text.back() == '-') parts.emplace_back();
  if (parts.empty() || parts[0] != "rand") throw bad("does not start with 'rand'");
  s.enabled = true;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    const size_t digit = p.find_first_of("0123456789");
    if (digit == std::string::npos || digit == 0) throw bad(str("part '", p, "' is not KEYVALUE"));
    const std::string key = p.substr(0, digit), value = p.substr(digit);
    if (key == "m") {
      if (!parse_int(value, s.magnitude)) throw bad("m takes an integer (timm: int(value))");
    } else if (key == "n") {
      if (!parse_int(value, s.num_ops)) throw bad("n takes an integer >= 0");
    } else if (key == "mstd") {
      if (!parse_double(value, s.magnitude_std) || s.magnitude_std < 0)
        throw bad("mstd takes a number >= 0");
    } else if (key == "inc") {
      if (value != "1")
        throw bad(
            "inc takes 1 (timm reads any value as true, so inc0 would mean inc1; leave inc "
            "out for the plain ops)");
      s.increasing = true;
    } else {
      throw bad(str("unknown key '", key, "' (known: m, n, mstd, inc)"));
    }
  }
  s.text = str("rand-m", s.magnitude, "-n", s.num_ops);
  if (s.magnitude_std > 0) s.text += "-mstd" + format_double(s.magnitude_std);
  if (s.increasing) s.text += "-inc1";
  return s;
}

std::vector<OpDraw> parse_augment_ops(const std::string& text, const std::string& flag) {
  std::vector<OpDraw> ops;
  if (text.empty() || text == "none") return ops;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    auto bad = [&](const std::string& why) {
      return UsageError(str(flag, ": item '", item, "': ", why,
                            " (expected OP:MAGNITUDE[:SIGN], e.g. Rotate:7:-)"));
    };
    std::vector<std::string> f;
    std::stringstream is(item);
    for (std::string p; std::getline(is, p, ':');) f.push_back(p);
    if (f.size() < 2 || f.size() > 3) throw bad("needs 2 or 3 ':'-separated fields");
    OpDraw d;
    try {
      d.op = parse_op(f[0]);
    } catch (const UsageError& e) {
      throw bad(e.what());
    }
    if (!parse_double(f[1], d.magnitude) || d.magnitude < 0 || d.magnitude > kMaxLevel)
      throw bad("the magnitude must be a number in [0, 10]");
    if (f.size() == 3) {
      if (f[2] != "+" && f[2] != "-") throw bad("the sign must be + or -");
      d.negate = f[2] == "-";
      if (d.negate && !is_signed(d.op)) throw bad(str(f[0], " has no sign"));
    }
    ops.push_back(d);
  }
  if (text.back() == ',') throw UsageError(str(flag, " '", text, "': trailing ','"));
  return ops;
}

std::string augment_ops_text(const std::vector<OpDraw>& ops) {
  std::string out;
  for (const auto& d : ops) {
    if (!out.empty()) out += ",";
    out += str(op_name(d.op), ":", format_double(d.magnitude), ":", d.negate ? "-" : "+");
  }
  return out;
}

std::vector<OpDraw> draw_rand_augment(const RandAugmentSpec& spec, rng::Engine& g) {
  std::vector<OpDraw> out;
  if (!spec.enabled) return out;
  const auto& ops = spec.increasing ? increasing_ops() : plain_ops();
  std::vector<Op> chosen;
  for (int i = 0; i < spec.num_ops; ++i)
    chosen.push_back(
        ops[static_cast<size_t>(rng::uniform_int(g, 0, static_cast<int64_t>(ops.size()) - 1))]);
  for (const Op op : chosen) {
    // timm: `if random.random() > prob: skip`, then gauss, clip, then the sign
    // (`random.random() > 0.5` negates).
    const bool apply = !(rng::canonical(g) > spec.probability);
    double m = spec.magnitude;
    if (spec.magnitude_std > 0) m = rng::normal(g, m, spec.magnitude_std);
    m = std::min(kMaxLevel, std::max(0.0, m));
    const bool negate = rng::canonical(g) > 0.5;
    if (apply) out.push_back({op, m, is_signed(op) && negate});
  }
  return out;
}

}  // namespace evl::augment
