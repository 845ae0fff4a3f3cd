// LibTorch helpers shared by the test suites that link LibTorch: reference
// fixtures saved by PyTorch, errors measured in float64, cache arrays from
// tensors and back. Header-only; include test_support.h for the rest.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "common/check.h"

namespace evl::test {

// A dict written with torch.save(..., _use_new_zipfile_serialization=True) from
// Python (the fixtures' generators); torch::pickle_load reads that format.
inline c10::Dict<c10::IValue, c10::IValue> load_pickle_dict(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EVL_CHECK(f.good(), "cannot open fixture ", path);
  const std::vector<char> buf((std::istreambuf_iterator<char>(f)), {});
  return torch::pickle_load(buf).toGenericDict();
}

// The same, for a dict of tensors only, by name.
inline std::map<std::string, torch::Tensor> load_tensor_dict(const std::string& path) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : load_pickle_dict(path)) out[kv.key().toStringRef()] = kv.value().toTensor();
  return out;
}

// max |a - b| / max |b|, in float64: an error relative to the result's scale that
// does not blow up where b is near zero (the references are float64).
inline double rel_max_error(const torch::Tensor& a, const torch::Tensor& b) {
  EVL_CHECK(a.sizes() == b.sizes(), "shapes differ: ", a.sizes(), " vs ", b.sizes());
  const auto a64 = a.to(torch::kCPU, torch::kDouble), b64 = b.to(torch::kCPU, torch::kDouble);
  const double scale = std::max(b64.abs().max().item<double>(), 1e-300);
  return (a64 - b64).abs().max().item<double>() / scale;
}

// A float32 cache array holding t's values.
inline cache::Array f32_array(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat).contiguous();
  return cache::make_array(cache::DType::kF32, c.sizes().vec(), c.data_ptr<float>(),
                           static_cast<size_t>(c.numel()));
}

// A float32 array's values as a tensor (a copy).
inline torch::Tensor f32_tensor(const cache::Array& a) {
  EVL_CHECK(a.dtype == cache::DType::kF32, "expected a float32 array");
  auto t = torch::empty(a.shape, torch::kFloat);
  EVL_CHECK(a.bytes.size() == static_cast<size_t>(t.numel()) * sizeof(float),
            "array bytes do not match its shape");
  std::memcpy(t.data_ptr<float>(), a.bytes.data(), a.bytes.size());
  return t;
}

}  // namespace evl::test
