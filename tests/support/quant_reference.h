// An independent reading of int8/fp8 cache arrays (cache/FORMAT.md "Quantized
// arrays"), for tests: E4M3FN values from the bit layout, binary16 through the
// compiler's _Float16, the payload split by the spec's arithmetic, and the
// scheme's error bound from each group's scale. No evl code beyond the Array
// struct; header-only, no LibTorch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "cache/cache.h"

namespace evl::test {

// float32 <-> its bits (for probing every exponent, subnormals and neighbours).
inline float float_of_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t bits_of_float(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// binary16 bits -> its value (the compiler's conversion, not evl's).
inline double half_value(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<double>(h);
}

// OCP FP8 E4M3FN from its bit layout S.EEEE.MMM, bias 7; S.1111.111 is NaN.
inline double ocp_e4m3(uint8_t c) {
  const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

// Half the E4M3FN spacing in the binade of |v| (v finite).
inline double e4m3_half_ulp(double v) {
  const double a = std::fabs(v);
  if (a < std::ldexp(1.0, -6)) return std::ldexp(1.0, -10);
  return std::ldexp(1.0, std::ilogb(a) - 4);
}

// int8 codes: dtype codes 4, 6, 8; fp8 (E4M3FN) codes: 5, 7, 9.
inline bool spec_is_int8(cache::DType dtype) {
  const int code = static_cast<int>(dtype);
  return code == 4 || code == 6 || code == 8;
}

// A quantized payload split per FORMAT.md: codes (numel bytes), then at
// ceil(numel / 64) * 64 the fp16 scales, G = ceil(C / 64) per row of C, then
// for dtypes 6 to 9 (int8, fp8 since version 3) the fp16 column scales, C per
// slice, then for dtypes 8, 9 (since version 4) the fp16 column centers, C per
// slice (scale and center 0: coded with its group); S = d0 slices of R / S rows
// for 3 or more dims, else 1.
struct QuantParts {
  int64_t rows = 0, width = 0, groups = 0, slices = 0, slice_rows = 0;
  bool columns = false;
  const uint8_t* codes = nullptr;
  std::vector<uint16_t> scales;  // rows * groups
  std::vector<uint16_t> cols;    // slices * width (empty without outlier channels)
  std::vector<uint16_t> mids;    // slices * width (zeros without centers)

  bool is_column(int64_t row, int64_t channel) const {
    if (!columns) return false;
    const auto i = static_cast<size_t>(row / slice_rows * width + channel);
    return cols[i] != 0 || mids[i] != 0;
  }
  // The scale value c of row `row` is coded with: its column's or its group's.
  double scale(int64_t row, int64_t channel) const {
    if (is_column(row, channel))
      return half_value(cols[static_cast<size_t>(row / slice_rows * width + channel)]);
    return half_value(scales[static_cast<size_t>(row * groups + channel / 64)]);
  }
  // The value its code is an offset from: its column's center, or 0.
  double center(int64_t row, int64_t channel) const {
    if (!is_column(row, channel)) return 0;
    return half_value(mids[static_cast<size_t>(row / slice_rows * width + channel)]);
  }
  double code_value(cache::DType dtype, size_t i) const {
    return spec_is_int8(dtype) ? static_cast<double>(static_cast<int8_t>(codes[i]))
                               : ocp_e4m3(codes[i]);
  }
};

inline bool spec_has_columns(cache::DType dtype) {
  const int code = static_cast<int>(dtype);
  return code >= 6 && code <= 9;
}
inline bool spec_has_centers(cache::DType dtype) {
  const int code = static_cast<int>(dtype);
  return code == 8 || code == 9;
}

inline QuantParts split_quantized(cache::DType dtype, const std::vector<int64_t>& shape,
                                  const uint8_t* payload) {
  QuantParts p;
  int64_t numel = 1;
  for (const int64_t d : shape) numel *= d;
  p.width = shape.back();
  p.rows = numel / p.width;
  p.groups = (p.width + 63) / 64;
  p.codes = payload;
  p.scales.resize(static_cast<size_t>(p.rows * p.groups));
  const size_t scales_at = static_cast<size_t>((numel + 63) / 64 * 64);
  std::memcpy(p.scales.data(), payload + scales_at, p.scales.size() * 2);
  p.columns = spec_has_columns(dtype);
  if (p.columns) {
    p.slices = shape.size() >= 3 ? shape[0] : 1;
    p.slice_rows = p.slices ? p.rows / p.slices : 0;
    p.cols.resize(static_cast<size_t>(p.slices * p.width));
    const size_t cols_at = scales_at + p.scales.size() * 2;
    std::memcpy(p.cols.data(), payload + cols_at, p.cols.size() * 2);
    p.mids.assign(p.cols.size(), 0);
    if (spec_has_centers(dtype))
      std::memcpy(p.mids.data(), payload + cols_at + p.cols.size() * 2, p.mids.size() * 2);
  }
  return p;
}

// The float32 values a reader gets: float32(code value) * float32(scale), and
// for an outlier channel float32(center) + that product (two float32 roundings).
inline std::vector<float> reference_dequantize(const cache::Array& a) {
  const QuantParts p = split_quantized(a.dtype, a.shape, a.bytes.data());
  std::vector<float> out(static_cast<size_t>(p.rows * p.width));
  for (size_t i = 0; i < out.size(); ++i) {
    const auto r = static_cast<int64_t>(i) / p.width, c = static_cast<int64_t>(i) % p.width;
    const volatile float product =
        static_cast<float>(p.code_value(a.dtype, i)) * static_cast<float>(p.scale(r, c));
    out[i] = p.is_column(r, c) ? static_cast<float>(p.center(r, c)) + product : product;
  }
  return out;
}

// The outlier channels FORMAT.md says the writer picks, found by sorting: per
// slice, channel c is one when E(median_c) > 0 and E(median_c) >= E_typ + 3,
// with E the float32 exponent field, median_c the lower median (rank
// floor((n-1)/2)) of |x| over the slice's rows, E_typ the lower median of the
// E(median_c) over channels. Per slice, a flag per channel.
inline std::vector<bool> reference_outliers(const std::vector<int64_t>& shape, const float* x) {
  int64_t numel = 1;
  for (const int64_t d : shape) numel *= d;
  const int64_t width = shape.back(), rows = numel / width;
  const int64_t slices = shape.size() >= 3 ? shape[0] : 1, per = slices ? rows / slices : 0;
  auto field = [](float f) { return static_cast<int>((bits_of_float(f) >> 23) & 0xff); };
  std::vector<bool> out(static_cast<size_t>(slices * width));
  std::vector<float> column(static_cast<size_t>(per));
  for (int64_t s = 0; s < slices; ++s) {
    std::vector<int> fields(static_cast<size_t>(width));
    for (int64_t c = 0; c < width; ++c) {
      for (int64_t r = 0; r < per; ++r)
        column[static_cast<size_t>(r)] = std::fabs(x[(s * per + r) * width + c]);
      std::sort(column.begin(), column.end());
      fields[static_cast<size_t>(c)] = field(column[static_cast<size_t>((per - 1) / 2)]);
    }
    std::vector<int> sorted = fields;
    std::sort(sorted.begin(), sorted.end());
    const int typical = sorted[static_cast<size_t>((width - 1) / 2)];
    for (int64_t c = 0; c < width; ++c) {
      const int f = fields[static_cast<size_t>(c)];
      out[static_cast<size_t>(s * width + c)] = f > 0 && f >= typical + 3;
    }
  }
  return out;
}

// The scheme's bound on |x - x'| for a value x coded with scale s around
// center m (0 for a group): s/2 (int8), s * half an E4M3 ulp at |(x - m) / s|
// (fp8), plus float32 rounding of the difference, the quotient, the product
// and the sum (2^-22 (|x| + |m|)). s == 0 only for a group of zeros or a
// column of values all equal to its center.
inline double scheme_bound(cache::DType dtype, double x, double s, double m = 0) {
  const double rounding = std::ldexp(std::fabs(x) + std::fabs(m), -22);
  if (s == 0) return m == 0 ? 0 : rounding;
  const double q = spec_is_int8(dtype) ? 0.5 : e4m3_half_ulp((x - m) / s);
  return q * s + rounding;
}

// "" when every value of quantized `a` is within scheme_bound of `x` (the
// features it was made from, numel floats), else the first violation.
inline std::string check_within_bound(const cache::Array& a, const float* x) {
  const QuantParts p = split_quantized(a.dtype, a.shape, a.bytes.data());
  const std::vector<float> back = reference_dequantize(a);
  for (size_t i = 0; i < back.size(); ++i) {
    const auto r = static_cast<int64_t>(i) / p.width, c = static_cast<int64_t>(i) % p.width;
    const double s = p.scale(r, c), m = p.center(r, c);
    const double err = std::fabs(static_cast<double>(back[i]) - x[i]);
    if (!(err <= scheme_bound(a.dtype, x[i], s, m))) {
      std::ostringstream os;
      os << "value " << i << " (row " << r << ", channel " << c << "): x " << x[i] << ", read "
         << back[i] << ", scale " << s << ", center " << m << ", error " << err << " > bound "
         << scheme_bound(a.dtype, x[i], s, m);
      return os.str();
    }
  }
  return "";
}

}  // namespace evl::test
