// Quantized feature storage (dtypes int8 and fp8, cache/FORMAT.md "Quantized
// arrays"): the absmax-symmetric group codec, the payload layout, and the OCP
// FP8 E4M3FN scalar codec. Plain loops, no LibTorch, no SIMD intrinsics (the
// compiler vectorises the inner loops). Not here: the record encoding
// (record.cpp) and anything per tensor (extract/features.cpp wraps it).
//
// Scheme "absmax-symmetric", group 64, fp16 scales, with outlier channels and
// their centers (dtypes 8 and 9, written since format version 4). Read only:
// dtypes 6 and 7 (version 3: outlier channels without centers, i.e. center 0)
// and 4 and 5 (version 2: no outlier channels).
// An array of shape (..., C) is R = numel / C rows ("tokens") of C channels in
// S slices of R / S consecutive rows: S = d0 (the first axis: a layer of a
// record's (M, T, L, C) array) when the array has at least 3 dims, else 1.
//  1. Outlier channels (dtypes 6 to 9): per slice, a channel whose median |x|
//     lies 3 or more binades (float32 exponent fields) above the typical
//     channel's (the median over channels of those fields) leaves the groups
//     and is coded on its own: x - m_c with the column scale
//     s_c = up16(max |x - m_c| over the slice's rows / Q), where the center
//     m_c = fp16(rne((min + max) / 2)) of its values (dtypes 8, 9; 0 when that
//     does not fit fp16, and always 0 for dtypes 6, 7).
//     CLIP's residual stream carries a few channels 10-100x the rest on every
//     token; inside a group such a channel would set the scale of the other 63
//     and int8 would keep only a few levels for them. Such a channel is mostly
//     an offset (a bias the blocks add to every token): coded around its
//     center, its error follows the spread of its values, not their size (the
//     asymmetric per-channel quantization of KV-cache keys in KIVI). Per-row
//     group scales still follow high-norm tokens.
//  2. Groups: each row is cut into groups of kQuantGroup = 64 consecutive
//     channels, G = ceil(C / 64) per row (the last group of a row has
//     C - 64 (G-1) channels when C is not a multiple of 64). Per group, with
//     Q = 127 (int8) or 448 (fp8) and amax = max |x| over its channels that
//     are not outlier channels:
//       s = up16(amax / Q)  the float32 quotient rounded UP to an fp16 value, so
//                           |x / s| <= Q holds for the stored scale itself
//       int8: q = clamp(rne(x / s), -127, 127)   (x / s the float32 quotient)
//       fp8:  q = e4m3(x / s)                     (round to nearest even, saturating)
//       amax == 0: s = 0 and every code 0.
//     Outlier channels are coded the same way, v = (x - m_c) / s_c (float32
//     difference, then quotient).
// Dequantised: x' = float(q) * float(s) for a group's channel; for an outlier
// channel x' = float(m_c) + float(q) * float(s_c), a float32 product and then a
// float32 sum (each rounded to nearest even, no fused multiply-add), so every
// reader that follows FORMAT.md gets the same float32 bits.
// Bounds (checked by tests/cache/quantize_test.cpp): int8 |x - x'| <= s/2,
// fp8 |x - x'| <= s * ulp_e4m3(|v|) / 2, each plus the float32 rounding of the
// difference, the quotient, the product and the sum (below 2^-22 (|x| + |m_c|)).
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

// True for the group-quantized storage dtypes (int8, fp8: codes 4 to 9).
bool is_quantized(DType dtype);
// True for the dtypes with outlier channels (6 to 9).
bool has_outlier_channels(DType dtype);
// True for the dtypes whose outlier channels have centers (8, 9: the ones evl writes).
bool has_column_centers(DType dtype);
// int8 or fp8 codes (kI8 for codes 4, 6, 8; kFP8 for 5, 7, 9).
DType code_kind(DType dtype);

// Where the parts of a quantized payload lie (FORMAT.md "Quantized arrays"):
// codes at [0, rows*width), scales (fp16, rows*groups) at scales_offset =
// align64(rows*width), then for dtypes 6 to 9 the column scales (fp16,
// slices*width) at columns_offset, then for dtypes 8, 9 the column centers
// (fp16, slices*width) at centers_offset; a channel with column scale and
// center both 0 is coded with its group. `bytes` is the payload size.
struct QuantLayout {
  int64_t rows = 0, width = 0, groups = 0;
  int64_t slices = 0, slice_rows = 0;  // S and R / S (S = 0 without outlier channels)
  size_t scales_offset = 0, columns_offset = 0, centers_offset = 0, bytes = 0;
};
// Throws evl::Error for a shape without a last axis or with C == 0.
QuantLayout quant_layout(DType dtype, const std::vector<int64_t>& shape);

// The whole payload of a quantized array of `shape` from its floats (payload:
// quant_layout(dtype, shape).bytes, zero-filled by the caller). "" on success,
// else the reason (that of quantization_problem) and the payload is unusable.
std::string quantize_array(DType dtype, const std::vector<int64_t>& shape, const float* x,
                           uint8_t* payload);

// The group codec alone (step 2, no outlier channels) on `rows` x `width` floats
// (row-major) -> codes (rows*width bytes) and scales (rows*ceil(width/64) fp16
// bits); dtype's code kind decides int8 or fp8. Throws evl::Error (with the
// reason of quantization_problem) for a NaN or inf, or for a group whose scale
// would not fit in fp16 (amax / Q > 65504).
void quantize(DType dtype, const float* x, int64_t rows, int64_t width, uint8_t* codes,
              uint16_t* scales);
// Its inverse: codes + scales -> rows*width floats.
void dequantize(DType dtype, const uint8_t* codes, const uint16_t* scales, int64_t rows,
                int64_t width, float* out);
// Rows [first_row, first_row + count) of a quantized array (a record's view)
// into `out` (count * C floats), column scales and centers applied: what the loader
// uses to fill a batch directly.
void dequantize_rows(const ArrayView& view, int64_t first_row, int64_t count, float* out);
// quantize then dequantize an array of `shape`: exactly the float32 values a
// reader of the stored array gets. `out` may equal `x`. Throws like make_array.
void quantize_roundtrip(DType dtype, const std::vector<int64_t>& shape, const float* x, float* out);

// "" when an array of `shape` (its floats `x`) can be stored as `dtype` (always
// for fp16/bf16/fp32), else the reason, starting with a fixed tag:
// "non-finite features (..)" or "features out of range (..)". Used to fail a
// clip instead of throwing.
std::string quantization_problem(DType dtype, const std::vector<int64_t>& shape, const float* x);

// OCP FP8 E4M3FN (bias 7, no infinities, NaN = S.1111.111, max 448): the value
// of a code (exact in float32), and the code of a float: round to nearest even,
// |f| >= 448 and +-inf saturate to +-448, NaN -> S.1111.111, the sign of zero kept.
float fp8_e4m3_to_float(uint8_t code);
uint8_t float_to_fp8_e4m3(float f);

// The smallest fp16 value >= f, as fp16 bits, for f >= 0 (0x7c00, +inf, when f
// exceeds 65504). The scale rounding of the scheme.
uint16_t float_to_half_up(float f);

}  // namespace evl::cache
