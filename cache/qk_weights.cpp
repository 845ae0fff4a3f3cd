// Compact mode's companion file qk_weights.evl (frozen ln_1 and q/k projections
// of the blocks whose Q/K the decoder needs) and the Q/K recomputation from a
// block's input. Plain C++ on float32; not a BLAS: fast enough for export.
#include <cmath>
#include <filesystem>

#include "cache/cache.h"
#include "cache/lmdb_env.h"
#include "common/atomic_file.h"
#include "common/check.h"

namespace evl::cache {

namespace fs = std::filesystem;

namespace {

const char* const kParts[] = {"ln_1.weight", "ln_1.bias",     "q_proj.weight",
                              "q_proj.bias", "k_proj.weight", "k_proj.bias"};

// The array `<part>.<block>` as float32 with the expected number of values.
const float* weight(const Record& w, const std::string& part, int64_t block, int64_t numel) {
  const std::string name = part + "." + std::to_string(block);
  const Array* a = w.find(name);
  EVL_CHECK(a, "qk weights: no array '", name, "'");
  EVL_CHECK(a->dtype == DType::kF32 && a->numel() == numel, "qk weights: array '", name,
            "' must be float32 with ", numel, " values");
  return reinterpret_cast<const float*>(a->bytes.data());
}

float dot(const float* a, const float* b, int64_t n) {
  // Eight partial sums so the compiler can vectorise without -ffast-math.
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

}  // namespace

void save_qk_weights(const std::string& cache_dir, const Record& weights) {
  for (const auto& [name, a] : weights.arrays)
    EVL_CHECK(a.dtype == DType::kF32, "qk weights: array '", name, "' must be float32");
  fs::create_directories(cache_dir);
  const auto bytes = encode_record(weights);
  write_file_atomic((fs::path(cache_dir) / "qk_weights.evl").string(),
                    std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

Record load_qk_weights(const std::string& cache_dir) {
  const std::string path = (fs::path(cache_dir) / "qk_weights.evl").string();
  EVL_CHECK(fs::exists(path), "cache '", cache_dir,
            "': no qk_weights.evl (needed to recompute Q/K of a compact cache)");
  const std::string bytes = read_file(path);
  Record r = decode_record(bytes.data(), bytes.size(), path).to_record();
  for (const auto& [name, a] : r.arrays) {
    const auto dot_pos = name.rfind('.');
    EVL_CHECK(dot_pos != std::string::npos, path, ": unexpected array '", name, "'");
    const std::string part = name.substr(0, dot_pos);
    bool known = false;
    for (const char* p : kParts) known |= part == p;
    EVL_CHECK(known && a.dtype == DType::kF32, path, ": unexpected array '", name, "' (",
              to_string(a.dtype), ")");
    const bool matrix = part.find("proj.weight") != std::string::npos;
    EVL_CHECK(a.shape.size() == (matrix ? 2u : 1u) && (!matrix || a.shape[0] == a.shape[1]), path,
              ": array '", name, "' has the wrong rank/shape");
  }
  return r;
}

void compute_qk(const Record& weights, int64_t block, const float* x_in, int64_t rows,
                int64_t width, float* q, float* k) {
  const int64_t C = width;
  const float* g = weight(weights, "ln_1.weight", block, C);
  const float* b = weight(weights, "ln_1.bias", block, C);
  const float* wq = weight(weights, "q_proj.weight", block, C * C);
  const float* bq = weight(weights, "q_proj.bias", block, C);
  const float* wk = weight(weights, "k_proj.weight", block, C * C);
  const float* bk = weight(weights, "k_proj.bias", block, C);
  std::vector<float> xn(static_cast<size_t>(C));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = x_in + r * C;
    // layer_norm in double for the statistics (as PyTorch accumulates), eps 1e-5.
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += x[c];
    mean /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) var += (x[c] - mean) * (x[c] - mean);
    var /= static_cast<double>(C);
    const double inv = 1.0 / std::sqrt(var + 1e-5);
    for (int64_t c = 0; c < C; ++c) xn[c] = static_cast<float>((x[c] - mean) * inv) * g[c] + b[c];
    for (int64_t o = 0; o < C; ++o) {
      q[r * C + o] = dot(xn.data(), wq + o * C, C) + bq[o];
      k[r * C + o] = dot(xn.data(), wk + o * C, C) + bk[o];
    }
  }
}

}  // namespace evl::cache
