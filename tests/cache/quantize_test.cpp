// The int8/fp8 codec of cache/quantize.h against references written out here:
// the 256 E4M3FN values from the bit layout, a brute-force nearest-value search
// for the encoder (ties to the even code), and per group the scheme's rules
// (the scale is the smallest fp16 >= amax / Q) and error bounds computed from
// each group's own scale, in float64.
#include "cache/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <vector>

#include "cache/cache.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/quant_reference.h"
#include "tests/support/test_support.h"

using namespace evl::cache;

namespace {

constexpr auto float_of = evl::test::float_of_bits;
constexpr auto bits_of = evl::test::bits_of_float;
using evl::test::half_value;
using evl::test::ocp_e4m3;
using evl::test::scheme_bound;

// Brute force: the finite code nearest to f (ties: the even code, i.e. mantissa
// LSB 0), values beyond 448 saturating, the sign of f kept (also for zero).
uint8_t nearest_e4m3(float f) {
  if (std::isnan(f)) return 0x7f | (std::signbit(f) ? 0x80 : 0);
  static const std::vector<double> values = [] {
    std::vector<double> v;
    for (int c = 0; c <= 0x7e; ++c) v.push_back(ocp_e4m3(static_cast<uint8_t>(c)));
    return v;
  }();
  const double a = std::fabs(static_cast<double>(f));
  int best = 0;
  for (int c = 1; c <= 0x7e; ++c) {  // the non-negative finite codes
    const double d = std::fabs(values[c] - a), db = std::fabs(values[best] - a);
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return static_cast<uint8_t>(best | (std::signbit(f) ? 0x80 : 0));
}

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
};

Quantized run_quantize(DType dtype, const std::vector<float>& x, int64_t rows, int64_t width) {
  const int64_t groups = (width + 63) / 64;
  Quantized q{std::vector<uint8_t>(static_cast<size_t>(rows * width)),
              std::vector<uint16_t>(static_cast<size_t>(rows * groups))};
  quantize(dtype, x.data(), rows, width, q.codes.data(), q.scales.data());
  return q;
}

// Rows of features with every case the scheme must handle: a channel 100x the
// rest, a group of zeros, a row of zeros, tiny values (fp16-subnormal scales),
// negative maxima and a short last group (width 160 = 64 + 64 + 32).
std::vector<float> hard_features(int64_t rows, int64_t width, uint64_t seed) {
  std::vector<float> x = evl::cache::testing::synth_values(seed, static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x.data() + r * width;
    switch (r % 6) {
      case 0:
        row[5] *= 100.0f;  // outlier channel in group 0
        for (int64_t c = 64; c < 128 && c < width; ++c) row[c] = 0.0f;  // zero group 1
        break;
      case 1:
        for (int64_t c = 0; c < width; ++c) row[c] = 0.0f;
        break;
      case 2:
        for (int64_t c = 0; c < width; ++c) row[c] *= 1e-6f;  // scale below fp16's normals
        break;
      case 3:
        row[width - 1] = -250.0f;  // negative maximum in the short last group
        break;
      case 4:
        for (int64_t c = 0; c < width; ++c) row[c] *= 3000.0f;
        break;
      default:
        break;
    }
  }
  return x;
}

// Checks codes/scales against the scheme's rules and the dequantized values
// (the reference computed here from codes and scales) against the bound.
void expect_scheme(DType dtype, const std::vector<float>& x, int64_t rows, int64_t width,
                   const Quantized& q) {
  const double qmax = dtype == DType::kI8 ? 127.0 : 448.0;
  const int64_t groups = (width + 63) / 64;
  std::vector<float> back(x.size());
  dequantize(dtype, q.codes.data(), q.scales.data(), rows, width, back.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * 64, c1 = std::min(width, c0 + 64);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * width + c]));
      const uint16_t sb = q.scales[r * groups + g];
      const double s = half_value(sb);
      // The scale: the smallest fp16 >= the float32 quotient amax / Q.
      const double want = static_cast<double>(amax / static_cast<float>(qmax));
      ASSERT_GE(s, want) << "row " << r << " group " << g;
      if (sb > 0) {
        ASSERT_LT(half_value(static_cast<uint16_t>(sb - 1)), want);
      }
      for (int64_t c = c0; c < c1; ++c) {
        const size_t i = static_cast<size_t>(r * width + c);
        const uint8_t code = q.codes[i];
        const double value =
            dtype == DType::kI8 ? static_cast<double>(static_cast<int8_t>(code)) : ocp_e4m3(code);
        if (dtype == DType::kI8) {
          ASSERT_LE(std::fabs(value), 127.0);
        }
        ASSERT_FALSE(std::isnan(value));
        // The reader's value: one float32 multiply of code value and scale.
        ASSERT_EQ(back[i], static_cast<float>(value) * static_cast<float>(s)) << i;
        const double xi = x[i];
        if (s == 0) {
          ASSERT_EQ(xi, 0.0);
          ASSERT_EQ(back[i], 0.0f);
          continue;
        }
        const double bound = scheme_bound(dtype, xi, s);
        ASSERT_LE(std::fabs(static_cast<double>(back[i]) - xi), bound)
            << to_string(dtype) << " row " << r << " channel " << c << " x " << xi << " scale "
            << s;
      }
    }
}

}  // namespace

TEST(Fp8E4M3, EveryCodeDecodesToItsOcpValue) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const double want = ocp_e4m3(static_cast<uint8_t>(c));
    const float got = fp8_e4m3_to_float(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
      ++nans;
      continue;
    }
    ASSERT_EQ(static_cast<double>(got), want) << "code " << c;
    EXPECT_EQ(std::signbit(got), c >= 128) << c;  // -0 is 0x80
  }
  EXPECT_EQ(nans, 2);  // 0x7f and 0xff only: no infinities
  EXPECT_EQ(fp8_e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x08), std::ldexp(1.0f, -6));  // smallest normal
}

TEST(Fp8E4M3, EncodeIsTheNearestCodeTiesToEvenSaturating) {
  std::vector<float> probes = {0.0f,
                               -0.0f,
                               448.0f,
                               -448.0f,
                               449.0f,
                               463.9f,
                               464.0f,
                               480.0f,
                               1e30f,
                               -1e30f,
                               1e-30f,
                               -1e-30f,
                               FLT_MIN,
                               1e-45f,
                               -1e-45f,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity()};
  // Every value, the midpoints between neighbours (exact ties), and the floats
  // just around both.
  for (int c = 0; c < 0x7e; ++c) {
    const double v = ocp_e4m3(static_cast<uint8_t>(c)),
                 next = ocp_e4m3(static_cast<uint8_t>(c + 1));
    for (double p : {v, 0.5 * (v + next)}) {
      const float f = static_cast<float>(p);  // exact: at most 5 significant bits
      ASSERT_EQ(static_cast<double>(f), p);
      for (int d = -2; d <= 2; ++d) {
        const uint32_t b = bits_of(f) + static_cast<uint32_t>(d);
        if (f == 0.0f && d < 0) continue;
        probes.push_back(float_of(b));
        probes.push_back(-float_of(b));
      }
    }
  }
  // Random floats across the whole E4M3 range and beyond (2^-12 .. 2^10),
  // float32 subnormals, and random bit patterns.
  uint64_t s = 99;
  for (int i = 0; i < 300000; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto r = static_cast<uint32_t>(s >> 32);
    const uint32_t exp = 127 - 12 + (r >> 9) % 23;  // 2^-12 .. 2^10
    probes.push_back(float_of((r & 0x80000000u) | (exp << 23) | (r & 0x7fffffu)));
    if (i % 10 == 0) probes.push_back(float_of(r & 0x807fffffu));  // float32 subnormals
    if (i % 10 == 1) probes.push_back(float_of(r));
  }
  for (const float f : probes) {
    const uint8_t got = float_to_fp8_e4m3(f), want = nearest_e4m3(f);
    if (std::isnan(f)) {
      EXPECT_EQ(got & 0x7f, 0x7f) << "NaN must stay NaN";
      continue;
    }
    ASSERT_EQ(int(got), int(want)) << "float " << f << " bits " << bits_of(f);
  }
  EXPECT_EQ(float_to_fp8_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_fp8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(float_to_fp8_e4m3(1e9f), 0x7e);
  EXPECT_EQ(float_to_fp8_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
}

TEST(HalfRoundUp, IsTheSmallestFp16NotBelow) {
  uint64_t s = 5;
  for (int i = 0; i < 200000; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    // Positive floats from 2^-30 to 2^17 (fp16 subnormals .. overflow).
    const uint32_t exp = 127 - 30 + (s >> 40) % 47;
    const float f = float_of((exp << 23) | static_cast<uint32_t>((s >> 9) & 0x7fffffu));
    const uint16_t h = float_to_half_up(f);
    if (f > 65504.0f) {
      ASSERT_EQ(h, 0x7c00) << f;
      continue;
    }
    ASSERT_GE(half_value(h), static_cast<double>(f)) << f;
    if (h > 0) {
      ASSERT_LT(half_value(static_cast<uint16_t>(h - 1)), static_cast<double>(f)) << f;
    }
  }
  EXPECT_EQ(float_to_half_up(0.0f), 0);
  EXPECT_EQ(float_to_half_up(1.0f), 0x3c00);  // exact values stay
}

class Codec : public ::testing::TestWithParam<DType> {};

TEST_P(Codec, FollowsTheSchemeWithinItsBound) {
  const DType dtype = GetParam();
  for (const int64_t width : {160, 64, 16, 1}) {
    SCOPED_TRACE("width " + std::to_string(width));
    const int64_t rows = 24;
    const auto x = hard_features(rows, width, 17 + static_cast<uint64_t>(width));
    const Quantized q = run_quantize(dtype, x, rows, width);
    expect_scheme(dtype, x, rows, width, q);
  }
}

TEST_P(Codec, RoundtripIsWhatAReaderGets) {
  const DType dtype = GetParam();
  const std::vector<int64_t> shape = {3, 4, 160};  // 3 slices of 4 rows
  const auto x = hard_features(12, 160, 3);
  // The reader's values: the payload as stored, decoded by the reference.
  const std::vector<float> want =
      evl::test::reference_dequantize(make_array(dtype, shape, x.data(), x.size()));
  std::vector<float> got(x.size()), in_place = x;
  quantize_roundtrip(dtype, shape, x.data(), got.data());
  quantize_roundtrip(dtype, shape, in_place.data(), in_place.data());
  EXPECT_EQ(got, want);
  EXPECT_EQ(in_place, want);
}

TEST_P(Codec, RefusesNonFiniteAndOutOfRangeValues) {
  const DType dtype = GetParam();
  std::vector<float> x = evl::cache::testing::synth_values(1, 2 * 100);
  const std::vector<int64_t> shape = {2, 100};
  EXPECT_EQ(quantization_problem(dtype, shape, x.data()), "");
  x[150] = std::numeric_limits<float>::quiet_NaN();
  x[3] = -std::numeric_limits<float>::infinity();
  const std::string why = quantization_problem(dtype, shape, x.data());
  EXPECT_EQ(why.rfind("non-finite features (1 NaN, 1 inf", 0), 0u) << why;
  EXPECT_NE(why.find(to_string(dtype)), std::string::npos) << why;
  std::vector<uint8_t> codes(x.size());
  std::vector<uint16_t> scales(4);
  EXPECT_NE(evl::test::error_of([&] {
              quantize(dtype, x.data(), 2, 100, codes.data(), scales.data());
            }).find("non-finite features"),
            std::string::npos);
  EXPECT_NE(evl::test::error_of([&] {
              make_array(dtype, shape, x.data(), x.size());
            }).find("non-finite features"),
            std::string::npos);
  // The group codec alone stores at most 65504 * Q (the largest fp16 scale).
  const float limit = 65504.0f * (dtype == DType::kI8 ? 127.0f : 448.0f);
  std::vector<float> big(64, 1.0f);
  big[7] = std::nextafter(limit * 1.0001f, 1e30f);
  EXPECT_NE(evl::test::error_of([&] {
              quantize(dtype, big.data(), 1, 64, codes.data(), scales.data());
            }).find("features out of range"),
            std::string::npos);
  // An outlier channel's column scale has the same limit; version-2 storage
  // (no outlier channels) the same too.
  std::vector<float> rows(9 * 64, 1.0f);
  for (int r = 0; r < 9; ++r) rows[static_cast<size_t>(r * 64 + 7)] = 100.0f;  // an outlier
  EXPECT_EQ(quantization_problem(dtype, {9, 64}, rows.data()), "");
  rows[64 + 7] = 2 * limit;
  EXPECT_EQ(quantization_problem(dtype, {9, 64}, rows.data()).rfind("features out of range", 0),
            0u);
  const DType v2 = dtype == DType::kI8 ? DType::kI8V2 : DType::kFP8V2;
  EXPECT_EQ(quantization_problem(v2, {9, 64}, rows.data()).rfind("features out of range", 0), 0u);
  // fp16/bf16/fp32 store anything.
  EXPECT_EQ(quantization_problem(DType::kF16, shape, x.data()), "");
}

TEST_P(Codec, PayloadLayoutIsCodesThenAlignedScalesThenColumnScalesAndCenters) {
  const DType dtype = GetParam();
  const std::vector<int64_t> shape = {2, 3, 5, 160};  // R = 30 rows in 2 slices, G = 3
  auto x = hard_features(30, 160, 8);
  // Outlier channels: 5 in slice 0 (rows 0-14), 131 in slice 1 (rows 15-29).
  for (int64_t r = 0; r < 30; ++r) x[static_cast<size_t>(r * 160 + (r < 15 ? 5 : 131))] *= 300.0f;
  for (int64_t r = 15; r < 30; ++r) x[static_cast<size_t>(r * 160 + 131)] += 2e4f;  // an offset
  const Array a = make_array(dtype, shape, x.data(), x.size());
  const size_t codes = 30 * 160, aligned = (codes + 63) / 64 * 64;
  ASSERT_EQ(a.bytes.size(), aligned + 2 * 30 * 3 + 2 * 2 * 160 + 2 * 2 * 160);
  EXPECT_EQ(array_bytes(dtype, shape), a.bytes.size());
  // Column scales and centers: nonzero exactly for the outlier channels
  // FORMAT.md's rule picks (found by sorting here); the center the fp16 nearest
  // to the float32 (min + max) / 2 over the slice, the scale the smallest fp16
  // >= max |x - center| / Q.
  const std::vector<bool> outlier = evl::test::reference_outliers(shape, x.data());
  EXPECT_TRUE(outlier[5] && outlier[160 + 131]);
  int centered = 0;
  const double qmax = dtype == DType::kI8 ? 127.0 : 448.0;
  std::vector<uint16_t> col(2 * 160), mid(2 * 160);
  std::memcpy(col.data(), a.bytes.data() + aligned + 2 * 30 * 3, col.size() * 2);
  std::memcpy(mid.data(), a.bytes.data() + aligned + 2 * 30 * 3 + 2 * 2 * 160, mid.size() * 2);
  for (size_t i = 0; i < col.size(); ++i) {
    if (!outlier[i]) {
      ASSERT_EQ(col[i], 0) << "channel " << i % 160 << " of slice " << i / 160;
      ASSERT_EQ(mid[i], 0) << "channel " << i % 160 << " of slice " << i / 160;
      continue;
    }
    float lo = 1e30f, hi = -1e30f;
    for (size_t r = i / 160 * 15; r < i / 160 * 15 + 15; ++r) {
      lo = std::min(lo, x[r * 160 + i % 160]);
      hi = std::max(hi, x[r * 160 + i % 160]);
    }
    // (A midrange beyond fp16's range gets center 0: codes around 0, as in version 3.)
    _Float16 center = static_cast<_Float16>(0.5f * lo + 0.5f * hi);
    if (std::isinf(static_cast<float>(center))) center = 0;
    ASSERT_EQ(half_value(mid[i]), static_cast<double>(center));
    centered += mid[i] != 0;
    float amax = 0;
    for (size_t r = i / 160 * 15; r < i / 160 * 15 + 15; ++r)
      amax = std::max(amax, std::fabs(x[r * 160 + i % 160] - static_cast<float>(center)));
    const double want = static_cast<double>(amax / static_cast<float>(qmax));
    ASSERT_GE(half_value(col[i]), want);
    ASSERT_LT(half_value(static_cast<uint16_t>(col[i] - 1)), want);
  }
  EXPECT_GT(centered, 0);
  // The groups: the codec of the other channels (outlier channels zeroed, so
  // they do not count in any group's amax).
  std::vector<float> rest = x;
  for (size_t i = 0; i < rest.size(); ++i)
    if (outlier[i / (15 * 160) * 160 + i % 160]) rest[i] = 0;
  const Quantized q = run_quantize(dtype, rest, 30, 160);
  expect_scheme(dtype, rest, 30, 160, q);
  EXPECT_EQ(std::memcmp(a.bytes.data() + aligned, q.scales.data(), q.scales.size() * 2), 0);
  for (size_t i = 0; i < codes; ++i) {
    if (!outlier[i / (15 * 160) * 160 + i % 160]) {
      ASSERT_EQ(a.bytes[i], q.codes[i]) << i;
    }
  }
  for (size_t i = codes; i < aligned; ++i) ASSERT_EQ(a.bytes[i], 0) << "padding byte " << i;
  EXPECT_EQ(evl::test::check_within_bound(a, x.data()), "");
  // A view's rows, alone, also across the slice boundary (rows 14, 15).
  std::vector<float> all(x.size()), part(2 * 160);
  to_float32(ArrayView{a.dtype, a.shape, a.bytes.data()}, all.data());
  EXPECT_EQ(all, evl::test::reference_dequantize(a));
  for (const int64_t first : {7, 14}) {
    dequantize_rows(ArrayView{a.dtype, a.shape, a.bytes.data()}, first, 2, part.data());
    EXPECT_EQ(std::vector<float>(all.begin() + first * 160, all.begin() + (first + 2) * 160), part);
  }
  EXPECT_NE(evl::test::error_of([&] {
              dequantize_rows(ArrayView{a.dtype, a.shape, a.bytes.data()}, 29, 2, part.data());
            }).find("outside"),
            std::string::npos);
  EXPECT_NE(evl::test::error_of([&] {
              make_array(dtype, {}, x.data(), 1);
            }).find("needs a last (channel) axis"),
            std::string::npos);
}

// What outlier channels are for: a channel 100x the others on every token
// (CLIP's residual stream has a few) no longer coarsens the 63 channels of its
// group, and a few high-norm rows (10x) keep their precision too. Version-2
// storage (no outlier channels, still readable) is the comparison.
TEST_P(Codec, ChannelAndTokenOutliersKeepTheRestPrecise) {
  const DType dtype = GetParam();
  const DType v2 = dtype == DType::kI8 ? DType::kI8V2 : DType::kFP8V2;
  const int64_t rows = 256, width = 128;
  std::vector<float> x = evl::cache::testing::synth_values(5, static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r) x[static_cast<size_t>(r * width + 9)] = 100.0f;
  for (const int64_t r : {17, 200})
    for (int64_t c = 0; c < width; ++c) x[static_cast<size_t>(r * width + c)] *= 10.0f;
  // Relative RMS error over the ordinary entries, and over the high-norm rows.
  auto errors = [&](DType d) {
    const Array a = make_array(d, {rows, width}, x.data(), x.size());
    EXPECT_EQ(evl::test::check_within_bound(a, x.data()), "") << to_string(d);
    const std::vector<float> back = evl::test::reference_dequantize(a);
    double err = 0, ref = 0, high_err = 0, high_ref = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < width; ++c) {
        const size_t i = static_cast<size_t>(r * width + c);
        const double e = (back[i] - double(x[i])) * (back[i] - double(x[i]));
        const double v = double(x[i]) * x[i];
        if (r == 17 || r == 200) {
          high_err += e, high_ref += v;
        } else if (c != 9) {
          err += e, ref += v;
        }
      }
    return std::pair{std::sqrt(err / ref), std::sqrt(high_err / high_ref)};
  };
  const auto [with, with_high] = errors(dtype);
  const auto [without, without_high] = errors(v2);
  std::cout << to_string(dtype) << " ordinary entries rel RMS " << with
            << " (version 2: " << without << "), high-norm rows " << with_high
            << " (version 2: " << without_high << ")\n";
  // int8: uniform rounding of x/s, s ~ amax/127: about 1/(127 sqrt(12)) * amax/rms;
  // fp8: 3 mantissa bits, about 2^-4 / sqrt(3) at worst.
  const double plain = dtype == DType::kI8 ? 0.01 : 0.04;
  EXPECT_LT(with, plain);
  EXPECT_LT(with_high, plain);
  if (dtype == DType::kI8) {
    EXPECT_GT(without, 5 * with);  // the group's scale set by the 100x channel
  }
}

// What the centers are for: an outlier channel that is mostly an offset (100
// plus the ordinary channels' spread, a bias the blocks add to every token) is
// coded around its center, so its error follows that spread, not its size.
// Version-3 storage (column scales, no centers: dtypes 6, 7, still readable)
// is the comparison; the other channels are coded identically by both.
TEST_P(Codec, AnOffsetOutlierChannelIsCodedAroundItsCenter) {
  const DType dtype = GetParam();
  const DType v3 = dtype == DType::kI8 ? DType::kI8V3 : DType::kFP8V3;
  const int64_t rows = 256, width = 128;
  std::vector<float> x = evl::cache::testing::synth_values(6, static_cast<size_t>(rows * width));
  double spread = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float& v = x[static_cast<size_t>(r * width + 9)];
    spread = std::max(spread, std::fabs(double(v)));
    v += 100.0f;
  }
  auto channel_error = [&](DType d, double& rest) {
    const Array a = make_array(d, {rows, width}, x.data(), x.size());
    EXPECT_EQ(evl::test::check_within_bound(a, x.data()), "") << to_string(d);
    std::vector<float> back(x.size()), ref(x.size());
    to_float32(ArrayView{a.dtype, a.shape, a.bytes.data()}, back.data());
    EXPECT_EQ(back, evl::test::reference_dequantize(a)) << to_string(d);
    double err = 0;
    rest = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < width; ++c) {
        const size_t i = static_cast<size_t>(r * width + c);
        const double e = std::fabs(back[i] - double(x[i]));
        if (c == 9)
          err = std::max(err, e);
        else
          rest = std::max(rest, e);
      }
    return err;
  };
  double rest = 0, rest_v3 = 0;
  const double with = channel_error(dtype, rest), without = channel_error(v3, rest_v3);
  std::cout << to_string(dtype) << " offset channel max |error| " << with
            << " (version 3: " << without << "), spread " << spread << "\n";
  // Around the center the codes span the spread (about spread / Q per step),
  // around 0 they span 100 + spread: at least 100 / spread / 2 times coarser.
  EXPECT_LT(with * (100.0 / spread) / 2, without);
  EXPECT_EQ(rest, rest_v3);
}

INSTANTIATE_TEST_SUITE_P(Int8AndFp8, Codec, ::testing::Values(DType::kI8, DType::kFP8),
                         [](const auto& param_info) { return to_string(param_info.param); });
