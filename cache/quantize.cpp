// The absmax-symmetric group codec of quantize.h with its outlier channels
// and their centers, and the E4M3FN scalar codec.
// Rounding to an integer uses the 1.5 * 2^23 trick (exact round-to-nearest-even
// for |v| < 2^22 under the default rounding mode), which vectorises where
// std::nearbyint would be a libm call on baseline x86-64. No -ffast-math here:
// the trick and the bit-exact results depend on IEEE float32 arithmetic.
#include "cache/quantize.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <sstream>

#include "common/check.h"

namespace evl::cache {

namespace {

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
constexpr uint16_t kHalfInf = 0x7c00;

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

DType kind_of(DType dtype) {
  return dtype == DType::kI8 || dtype == DType::kI8V3 || dtype == DType::kI8V2 ? DType::kI8
                                                                               : DType::kFP8;
}

float code_max(DType dtype) { return kind_of(dtype) == DType::kI8 ? kInt8Max : kFp8Max; }

// float32 -> E4M3FN bits (see quantize.h for the rules).
inline uint8_t e4m3_encode(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = static_cast<uint8_t>((x >> 24) & 0x80);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7f;   // NaN
  if (abs >= 0x43e00000u) return sign | 0x7e;  // >= 448 (1.75 * 2^8), inf: saturate
  if (abs < 0x3c800000u) {                     // < 2^-6: subnormal codes, steps of 2^-9
    float a;
    std::memcpy(&a, &abs, 4);
    a = (a * 512.0f + kRoundMagic) - kRoundMagic;  // 0..8; 8 is 2^-6, the smallest normal
    return sign | static_cast<uint8_t>(a);
  }
  // Normal: keep 3 mantissa bits, the 20 dropped ones rounded to nearest even (a
  // carry into the exponent is the right result), then rebias 127 -> 7.
  const uint32_t r = (abs + 0x7ffffu + ((abs >> 20) & 1u)) >> 20;
  return sign | static_cast<uint8_t>(r - ((127u - 7u) << 3));
}

inline float e4m3_decode_scalar(uint8_t c) {
  const uint32_t sign = uint32_t(c & 0x80) << 24;
  const uint32_t e = (c >> 3) & 0xfu, m = c & 7u;
  uint32_t bits;
  if (e == 15 && m == 7) {
    bits = sign | 0x7fc00000u;  // NaN
  } else if (e == 0) {
    float v = static_cast<float>(m) * (1.0f / 512.0f);  // m * 2^-9, exact
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else {
    bits = sign | ((e + 120u) << 23) | (m << 20);  // (1 + m/8) * 2^(e-7)
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = e4m3_decode_scalar(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

std::string show(float v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

// Encodes one row; returns false (nothing meaningful written) on a NaN/inf or a
// scale that does not fit fp16.
template <DType kDType>
bool quantize_row(const float* x, int64_t width, uint8_t* q, uint16_t* s) {
  constexpr float kMax = kDType == DType::kI8 ? kInt8Max : kFp8Max;
  for (int64_t c0 = 0, g = 0; c0 < width; c0 += kQuantGroup, ++g) {
    const int64_t n = std::min(kQuantGroup, width - c0);
    const float* xg = x + c0;
    uint8_t* qg = q + c0;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(xg[i]);
      amax = a > amax ? a : amax;
      finite &= (a <= FLT_MAX);  // false for NaN and inf
    }
    if (!finite) return false;
    const uint16_t sh = float_to_half_up(amax / kMax);
    if (sh >= kHalfInf) return false;
    s[g] = sh;
    const float scale = half_to_float(sh);
    if (scale == 0.0f) {
      std::memset(qg, 0, static_cast<size_t>(n));
      continue;
    }
    for (int64_t i = 0; i < n; ++i) {
      const float v = xg[i] / scale;
      if constexpr (kDType == DType::kI8) {
        float r = (v + kRoundMagic) - kRoundMagic;
        r = std::min(std::max(r, -kInt8Max), kInt8Max);
        qg[i] = static_cast<uint8_t>(static_cast<int32_t>(r));
      } else {
        qg[i] = e4m3_encode(v);
      }
    }
  }
  return true;
}

// One slice's outlier channels: per channel, whether it is one (then left out of
// its group's amax) and its column scale and center as float32 values.
struct Columns {
  std::vector<char> is;
  std::vector<float> scale, center;
};

// One row with outlier channels: an outlier channel c is coded as
// (x - center) / scale with its column's values, the others with their group's.
template <DType kDType>
bool quantize_row_columns(const float* x, int64_t width, const Columns& col, uint8_t* q,
                          uint16_t* s) {
  constexpr float kMax = kDType == DType::kI8 ? kInt8Max : kFp8Max;
  auto code = [](float v) -> uint8_t {
    if constexpr (kDType == DType::kI8) {
      float r = (v + kRoundMagic) - kRoundMagic;
      r = std::min(std::max(r, -kInt8Max), kInt8Max);
      return static_cast<uint8_t>(static_cast<int32_t>(r));
    } else {
      return e4m3_encode(v);
    }
  };
  for (int64_t c0 = 0, g = 0; c0 < width; c0 += kQuantGroup, ++g) {
    const int64_t n = std::min(kQuantGroup, width - c0);
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(x[c0 + i]);
      finite &= (a <= FLT_MAX);
      if (!col.is[static_cast<size_t>(c0 + i)]) amax = a > amax ? a : amax;
    }
    if (!finite) return false;
    const uint16_t sh = float_to_half_up(amax / kMax);
    if (sh >= kHalfInf) return false;
    s[g] = sh;
    const float scale = half_to_float(sh);
    for (int64_t i = 0; i < n; ++i) {
      const auto c = static_cast<size_t>(c0 + i);
      if (col.is[c])
        q[c] = col.scale[c] == 0.0f ? 0 : code((x[c] - col.center[c]) / col.scale[c]);
      else
        q[c] = scale == 0.0f ? 0 : code(x[c] / scale);
    }
  }
  return true;
}

template <DType kDType>
void dequantize_row(const uint8_t* q, const uint16_t* s, int64_t width, float* out) {
  const float* table = e4m3_table().data();
  for (int64_t c0 = 0, g = 0; c0 < width; c0 += kQuantGroup, ++g) {
    const int64_t n = std::min(kQuantGroup, width - c0);
    const float scale = half_to_float(s[g]);
    const uint8_t* qg = q + c0;
    float* og = out + c0;
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (kDType == DType::kI8)
        og[i] = static_cast<float>(static_cast<int8_t>(qg[i])) * scale;
      else
        og[i] = table[qg[i]] * scale;
    }
  }
}

void check_quantized(DType dtype, const char* what) {
  EVL_CHECK(is_quantized(dtype), what, ": dtype ", to_string(dtype), " is not quantized");
}

// A channel whose median |x| lies this many binades above the typical
// channel's is an outlier channel (FORMAT.md): 2^3, between 4x and 16x.
constexpr int kOutlierBinades = 3;

uint32_t exponent_field(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return (bits >> 23) & 0xffu;
}

// The outlier channels of one slice (`rows` x `width`, FORMAT.md): per channel
// the float32 exponent field of its lower median |x|, from a histogram of
// exponent fields (one pass over the slice; no sort, no strided gathers); the
// typical channel's is the lower median of those fields over the channels.
std::vector<bool> outlier_channels(const float* x, int64_t rows, int64_t width) {
  std::vector<uint32_t> hist(static_cast<size_t>(width) * 256, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    for (int64_t c = 0; c < width; ++c)
      ++hist[static_cast<size_t>(c) * 256 + exponent_field(xr[c])];
  }
  const auto rank = static_cast<uint64_t>((rows - 1) / 2);  // the lower median's rank
  std::vector<int> field(static_cast<size_t>(width));
  for (int64_t c = 0; c < width; ++c) {
    const uint32_t* h = hist.data() + static_cast<size_t>(c) * 256;
    uint64_t seen = 0;
    int f = 0;
    for (; f < 255; ++f) {
      seen += h[f];
      if (seen > rank) break;
    }
    field[static_cast<size_t>(c)] = f;
  }
  std::vector<int> sorted = field;
  std::nth_element(sorted.begin(), sorted.begin() + (width - 1) / 2, sorted.end());
  const int typical = sorted[static_cast<size_t>((width - 1) / 2)];
  std::vector<bool> outlier(static_cast<size_t>(width));
  for (size_t c = 0; c < outlier.size(); ++c)
    outlier[c] = field[c] > 0 && field[c] >= typical + kOutlierBinades;
  return outlier;
}

std::string problem_of(DType dtype, const float* x, size_t n) {
  size_t nan = 0, inf = 0;
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    nan += std::isnan(a);
    inf += std::isinf(a);
    if (a <= FLT_MAX) amax = std::max(amax, a);
  }
  if (nan || inf)
    return "non-finite features (" + std::to_string(nan) + " NaN, " + std::to_string(inf) +
           " inf in " + std::to_string(n) + " values): " + to_string(dtype) +
           " storage cannot represent them";
  return "features out of range (max |x| = " + show(amax) + "): " + to_string(dtype) +
         " storage with fp16 scales holds |x| <= " + show(65504.0f * code_max(dtype));
}

}  // namespace

bool is_quantized(DType dtype) {
  return dtype == DType::kI8 || dtype == DType::kFP8 || dtype == DType::kI8V3 ||
         dtype == DType::kFP8V3 || dtype == DType::kI8V2 || dtype == DType::kFP8V2;
}

bool has_outlier_channels(DType dtype) {
  return dtype == DType::kI8 || dtype == DType::kFP8 || dtype == DType::kI8V3 ||
         dtype == DType::kFP8V3;
}

bool has_column_centers(DType dtype) { return dtype == DType::kI8 || dtype == DType::kFP8; }

DType code_kind(DType dtype) { return kind_of(dtype); }

QuantLayout quant_layout(DType dtype, const std::vector<int64_t>& shape) {
  EVL_CHECK(!shape.empty() && shape.back() >= 1,
            "a quantized array needs a last (channel) axis of at least 1, got ", shape.size(),
            " dims", shape.empty() ? "" : " ending in " + std::to_string(shape.back()));
  // Every product below is overflow-checked: a shape read from a file may
  // hold a zero (so its element count is small) beside huge dimensions.
  constexpr int64_t kLimit = int64_t(1) << 48;
  auto mul = [&](int64_t a, int64_t b) {
    int64_t r = 0;
    EVL_CHECK(a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &r) && r < kLimit,
              "a quantized array of ", shape.size(), " dims ending in ", shape.back(),
              " is too large (sizes overflow)");
    return r;
  };
  QuantLayout l;
  int64_t numel = 1;
  for (const int64_t d : shape) numel = mul(numel, d);
  l.width = shape.back();
  l.rows = numel / l.width;
  l.groups = (l.width + kQuantGroup - 1) / kQuantGroup;
  l.scales_offset = align64(static_cast<size_t>(numel));
  l.columns_offset = l.scales_offset + 2 * static_cast<size_t>(mul(l.rows, l.groups));
  l.bytes = l.columns_offset;
  if (has_outlier_channels(dtype)) {
    l.slices = shape.size() >= 3 ? shape[0] : 1;
    l.slice_rows = l.slices > 0 ? l.rows / l.slices : 0;
    l.bytes += 2 * static_cast<size_t>(mul(l.slices, l.width));
    l.centers_offset = l.bytes;
    if (has_column_centers(dtype)) l.bytes += 2 * static_cast<size_t>(mul(l.slices, l.width));
  }
  return l;
}

uint16_t float_to_half_up(float f) {
  uint16_t h = float_to_half(f);
  if (half_to_float(h) < f) ++h;  // positive: the next fp16 up (0x7bff + 1 is +inf)
  return h;
}

void quantize(DType dtype, const float* x, int64_t rows, int64_t width, uint8_t* codes,
              uint16_t* scales) {
  check_quantized(dtype, "quantize");
  const int64_t groups = (width + kQuantGroup - 1) / kQuantGroup;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    const bool ok =
        code_kind(dtype) == DType::kI8
            ? quantize_row<DType::kI8>(xr, width, codes + r * width, scales + r * groups)
            : quantize_row<DType::kFP8>(xr, width, codes + r * width, scales + r * groups);
    if (!ok) EVL_THROW(Error, problem_of(dtype, x, static_cast<size_t>(rows * width)));
  }
}

void dequantize(DType dtype, const uint8_t* codes, const uint16_t* scales, int64_t rows,
                int64_t width, float* out) {
  check_quantized(dtype, "dequantize");
  const int64_t groups = (width + kQuantGroup - 1) / kQuantGroup;
  for (int64_t r = 0; r < rows; ++r) {
    if (code_kind(dtype) == DType::kI8)
      dequantize_row<DType::kI8>(codes + r * width, scales + r * groups, width, out + r * width);
    else
      dequantize_row<DType::kFP8>(codes + r * width, scales + r * groups, width, out + r * width);
  }
}

namespace {

// fp16 bits at `p` (any alignment).
std::vector<uint16_t> read_u16(const uint8_t* p, size_t n) {
  std::vector<uint16_t> out(n);
  if (n) std::memcpy(out.data(), p, n * 2);
  return out;
}

}  // namespace

void dequantize_rows(const ArrayView& view, int64_t first_row, int64_t count, float* out) {
  check_quantized(view.dtype, "dequantize_rows");
  const QuantLayout l = quant_layout(view.dtype, view.shape);
  EVL_CHECK(first_row >= 0 && count >= 0 && first_row + count <= l.rows, "dequantize_rows: rows [",
            first_row, ", ", first_row + count, ") outside the array's ", l.rows, " rows");
  const auto* base = static_cast<const uint8_t*>(view.data);
  const uint8_t* scale_bytes =
      base + l.scales_offset + 2 * static_cast<size_t>(first_row * l.groups);
  // Payloads are 16-byte aligned in LMDB's map and in an Array's buffer, so the
  // fp16 scales can be read in place; an odd address (a caller's buffer) is copied.
  std::vector<uint16_t> copy;
  const auto* scales = reinterpret_cast<const uint16_t*>(scale_bytes);
  if (reinterpret_cast<uintptr_t>(scale_bytes) % alignof(uint16_t) != 0) {
    copy = read_u16(scale_bytes, static_cast<size_t>(count * l.groups));
    scales = copy.data();
  }
  dequantize(view.dtype, base + first_row * l.width, scales, count, l.width, out);
  if (!has_outlier_channels(view.dtype) || count == 0) return;
  // Outlier channels: x' = center + q * the column's scale (a float32 product,
  // then a float32 sum) instead of q * the group's scale.
  const float* table = e4m3_table().data();
  const bool int8 = code_kind(view.dtype) == DType::kI8;
  const bool centers = has_column_centers(view.dtype);
  struct Column {
    int64_t channel;
    float scale, center;
  };
  int64_t slice = -1;
  std::vector<Column> columns;  // of the current slice
  for (int64_t r = first_row; r < first_row + count; ++r) {
    if (r / l.slice_rows != slice) {
      slice = r / l.slice_rows;
      const size_t at = 2 * static_cast<size_t>(slice * l.width);
      const std::vector<uint16_t> col =
          read_u16(base + l.columns_offset + at, static_cast<size_t>(l.width));
      const std::vector<uint16_t> mid =
          centers ? read_u16(base + l.centers_offset + at, static_cast<size_t>(l.width))
                  : std::vector<uint16_t>(static_cast<size_t>(l.width), 0);
      columns.clear();
      for (size_t c = 0; c < col.size(); ++c)
        if (col[c] || mid[c])
          columns.push_back(
              {static_cast<int64_t>(c), half_to_float(col[c]), half_to_float(mid[c])});
    }
    const uint8_t* q = base + r * l.width;
    float* o = out + (r - first_row) * l.width;
    for (const Column& c : columns) {
      const float v =
          int8 ? static_cast<float>(static_cast<int8_t>(q[c.channel])) : table[q[c.channel]];
      const float scaled = v * c.scale;  // rounded here: the sum below is a separate operation
      o[c.channel] = c.center + scaled;
    }
  }
}

std::string quantize_array(DType dtype, const std::vector<int64_t>& shape, const float* x,
                           uint8_t* payload) {
  check_quantized(dtype, "quantize_array");
  const QuantLayout l = quant_layout(dtype, shape);
  const DType kind = code_kind(dtype);
  const float qmax = code_max(kind);
  std::vector<uint16_t> scales(static_cast<size_t>(l.groups));
  const size_t n = static_cast<size_t>(l.rows * l.width);
  auto store_scales = [&](int64_t r) {
    std::memcpy(payload + l.scales_offset + 2 * static_cast<size_t>(r * l.groups), scales.data(),
                scales.size() * 2);
  };
  if (!has_outlier_channels(dtype)) {
    for (int64_t r = 0; r < l.rows; ++r) {
      const bool ok = kind == DType::kI8
                          ? quantize_row<DType::kI8>(x + r * l.width, l.width,
                                                     payload + r * l.width, scales.data())
                          : quantize_row<DType::kFP8>(x + r * l.width, l.width,
                                                      payload + r * l.width, scales.data());
      if (!ok) return problem_of(dtype, x, n);
      store_scales(r);
    }
    return "";
  }
  const bool centers = has_column_centers(dtype);
  const auto w = static_cast<size_t>(l.width);
  std::vector<uint16_t> col(w), mid(w);
  Columns columns;
  for (int64_t s = 0; s < l.slices; ++s) {
    const int64_t r0 = s * l.slice_rows;
    const float* xs = x + r0 * l.width;
    const std::vector<bool> outlier = outlier_channels(xs, l.slice_rows, l.width);
    // Per outlier channel over the slice's rows: its center (the fp16 midrange)
    // and the column scale of its values' distance from it.
    std::fill(col.begin(), col.end(), uint16_t{0});
    std::fill(mid.begin(), mid.end(), uint16_t{0});
    columns.is.assign(w, 0);
    columns.scale.assign(w, 0.0f);
    columns.center.assign(w, 0.0f);
    for (size_t c = 0; c < w; ++c) {
      if (!outlier[c]) continue;
      float lo = FLT_MAX, hi = -FLT_MAX;
      bool finite = true;
      for (int64_t r = 0; r < l.slice_rows; ++r) {
        const float v = xs[r * l.width + static_cast<int64_t>(c)];
        finite &= std::fabs(v) <= FLT_MAX;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      if (!finite) return problem_of(dtype, x, n);  // NaN or inf
      if (centers) {
        const uint16_t m = float_to_half(0.5f * lo + 0.5f * hi);  // no overflow, unlike lo + hi
        if ((m & 0x7fffu) < kHalfInf) mid[c] = m;  // else center 0: it does not fit fp16
      }
      const float center = half_to_float(mid[c]);
      float amax = 0.0f;
      for (int64_t r = 0; r < l.slice_rows; ++r)
        amax = std::max(amax, std::fabs(xs[r * l.width + static_cast<int64_t>(c)] - center));
      const uint16_t h = float_to_half_up(amax / qmax);
      if (h >= kHalfInf) return problem_of(dtype, x, n);
      col[c] = h;
      // A column of zeros (scale and center 0) reads as one coded with its group:
      // it is (all codes 0, whatever the group's scale), so leave it to the group.
      columns.is[c] = h != 0 || mid[c] != 0;
      columns.scale[c] = half_to_float(h);
      columns.center[c] = center;
    }
    std::memcpy(payload + l.columns_offset + 2 * static_cast<size_t>(s) * w, col.data(), w * 2);
    if (centers)
      std::memcpy(payload + l.centers_offset + 2 * static_cast<size_t>(s) * w, mid.data(), w * 2);
    for (int64_t r = r0; r < r0 + l.slice_rows; ++r) {
      const bool ok = kind == DType::kI8
                          ? quantize_row_columns<DType::kI8>(x + r * l.width, l.width, columns,
                                                             payload + r * l.width, scales.data())
                          : quantize_row_columns<DType::kFP8>(x + r * l.width, l.width, columns,
                                                              payload + r * l.width, scales.data());
      if (!ok) return problem_of(dtype, x, n);
      store_scales(r);
    }
  }
  return "";
}

void quantize_roundtrip(DType dtype, const std::vector<int64_t>& shape, const float* x,
                        float* out) {
  check_quantized(dtype, "quantize_roundtrip");
  const QuantLayout l = quant_layout(dtype, shape);
  std::vector<uint8_t> payload(l.bytes, 0);
  const std::string why = quantize_array(dtype, shape, x, payload.data());
  EVL_CHECK(why.empty(), why);
  ArrayView view;
  view.dtype = dtype;
  view.shape = shape;
  view.data = payload.data();
  dequantize_rows(view, 0, l.rows, out);
}

std::string quantization_problem(DType dtype, const std::vector<int64_t>& shape, const float* x) {
  if (!is_quantized(dtype)) return "";
  // One scan, not a trial quantization: every value counts in exactly one amax
  // (its group's, or its outlier channel's column), so some scale overflows
  // fp16 exactly when the array's largest |x| does.
  const QuantLayout l = quant_layout(dtype, shape);
  const size_t n = static_cast<size_t>(l.rows * l.width);
  float amax = 0.0f;
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    finite &= (a <= FLT_MAX);
    amax = a > amax ? a : amax;
  }
  if (finite && float_to_half_up(amax / code_max(dtype)) < kHalfInf) return "";
  return problem_of(dtype, x, n);
}

float fp8_e4m3_to_float(uint8_t code) { return e4m3_table()[code]; }

uint8_t float_to_fp8_e4m3(float f) { return e4m3_encode(f); }

}  // namespace evl::cache
