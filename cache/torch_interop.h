// Cache arrays as LibTorch tensors, for the stages that use LibTorch (extract/,
// train/). Header-only, so that the evl_cache library itself stays LibTorch-free:
// include it only from code that links LibTorch.
#pragma once

#include <torch/torch.h>

#include "cache/cache.h"
#include "common/check.h"

namespace evl::cache {

// The LibTorch dtype of a storage dtype. The quantized dtypes (int8, fp8) have
// none (codes plus group scales): throws evl::Error; dequantize them with
// to_float32 / dequantize_rows (cache/quantize.h).
inline torch::ScalarType torch_dtype(DType d) {
  switch (d) {
    case DType::kF16:
      return torch::kHalf;
    case DType::kBF16:
      return torch::kBFloat16;
    case DType::kF32:
      return torch::kFloat;
    case DType::kI8:
    case DType::kFP8:
    case DType::kI8V2:
    case DType::kFP8V2:
    case DType::kI8V3:
    case DType::kFP8V3:
      break;
  }
  EVL_THROW(Error, "dtype ", to_string(d),
            " has no LibTorch equivalent (quantized: dequantize it)");
}

// A tensor over the array's memory, without a copy: valid only as long as the
// memory is (inside CacheReader::with_record's callback for a mapped record).
// Not for quantized arrays (throws, see torch_dtype).
inline torch::Tensor as_tensor(const ArrayView& a) {
  return torch::from_blob(const_cast<void*>(a.data), a.shape,
                          torch::TensorOptions().dtype(torch_dtype(a.dtype)));
}

}  // namespace evl::cache
