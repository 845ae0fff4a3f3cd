// Quantized feature storage (dtypes int8 and fp8, cache/FORMAT.md "Quantized
// arrays"): the absmax-symmetric group codec, the payload layout, and the OCP
// FP8 E4M3FN scalar codec. Plain loops, no LibTorch, no SIMD intrinsics (the
// compiler vectorises the inner loops). Not here: the record encoding
// (record.cpp) and anything per tensor (extract/features.cpp wraps it).
//
// Scheme "absmax-symmetric", group 64, fp16 scales. An array of shape (..., C)
// is R = numel / C rows ("tokens") of C channels; each row is cut into groups of
// kQuantGroup = 64 consecutive channels, G = ceil(C / 64) per row (the last
// group of a row has C - 64 (G-1) channels when C is not a multiple of 64).
// Per group, with Q = 127 (int8) or 448 (fp8) and amax = max |x| over the group:
//   s = up16(amax / Q)     the float32 quotient rounded UP to an fp16 value, so
//                          |x / s| <= Q holds for the stored scale itself
//   int8: q = clamp(rne(x / s), -127, 127)   (x / s the float32 quotient)
//   fp8:  q = e4m3(x / s)                     (round to nearest even, saturating)
//   amax == 0: s = 0 and every code 0.
// Dequantised: x' = float(q) * float(s), one float32 multiply (round to nearest
// even), so every reader that follows FORMAT.md gets the same float32 bits.
// Bounds (checked by tests/cache/quantize_test.cpp): int8 |x - x'| <= s/2,
// fp8 |x - x'| <= s * ulp_e4m3(|x / s|) / 2, each plus the float32 rounding of
// the quotient and the product (below 2^-22 |x|).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cache/cache.h"

namespace evl::cache {

inline constexpr int64_t kQuantGroup = 64;  // channels per scale (FORMAT.md "group")
inline constexpr float kInt8Max = 127.0f;   // largest int8 code magnitude written
inline constexpr float kFp8Max = 448.0f;    // largest finite E4M3FN value

// True for the group-quantized storage dtypes (int8, fp8).
bool is_quantized(DType dtype);

// Where the parts of a quantized payload lie (FORMAT.md "Quantized arrays"):
// codes at [0, rows*width), scales (fp16, rows*groups) at scales_offset =
// align64(rows*width); `bytes` is the payload size.
struct QuantLayout {
  int64_t rows = 0, width = 0, groups = 0;
  size_t scales_offset = 0, bytes = 0;
};
// Throws evl::Error for a shape without a last axis or with C == 0.
QuantLayout quant_layout(const std::vector<int64_t>& shape);

// `rows` x `width` floats (row-major) -> codes (rows*width bytes) and scales
// (rows*ceil(width/64) fp16 bits). dtype must be quantized. Throws evl::Error
// (with the reason of quantization_problem) for a NaN or inf, or for a group
// whose scale would not fit in fp16 (amax / Q > 65504); nothing is written then
// that a reader could mistake for features.
void quantize(DType dtype, const float* x, int64_t rows, int64_t width, uint8_t* codes,
              uint16_t* scales);
// The inverse: codes + scales -> rows*width floats.
void dequantize(DType dtype, const uint8_t* codes, const uint16_t* scales, int64_t rows,
                int64_t width, float* out);
// Rows [first_row, first_row + count) of a quantized array (a record's view)
// into `out` (count * C floats): what the loader uses to fill a batch directly.
void dequantize_rows(const ArrayView& view, int64_t first_row, int64_t count, float* out);
// quantize then dequantize, without keeping the codes: exactly the float32
// values a reader of the stored array gets. `out` may equal `x`.
void quantize_roundtrip(DType dtype, const float* x, int64_t rows, int64_t width, float* out);

// "" when `n` floats can be stored as `dtype` (always for fp16/bf16/fp32), else
// the reason, starting with a fixed tag: "non-finite features (..)" or
// "features out of range (..)". Used to fail a clip instead of throwing.
std::string quantization_problem(DType dtype, const float* x, size_t n);

// OCP FP8 E4M3FN (bias 7, no infinities, NaN = S.1111.111, max 448): the value
// of a code (exact in float32), and the code of a float: round to nearest even,
// |f| >= 448 and +-inf saturate to +-448, NaN -> S.1111.111, the sign of zero kept.
float fp8_e4m3_to_float(uint8_t code);
uint8_t float_to_fp8_e4m3(float f);

// The smallest fp16 value >= f, as fp16 bits, for f >= 0 (0x7c00, +inf, when f
// exceeds 65504). The scale rounding of the scheme.
uint16_t float_to_half_up(float f);

}  // namespace evl::cache
