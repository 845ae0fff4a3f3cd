// Fuzz target: qk_weights.evl (cache/qk_weights.cpp load_qk_weights), read from
// a scratch cache directory as evl reads it; weights that load are then used
// to recompute Q/K of a few rows (compute_qk), for every block they hold.
#include <set>
#include <vector>

#include "cache/cache.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void exercise() {
  using namespace evl::cache;
  const Record w = load_qk_weights(evl::fuzz::scratch_dir());
  std::set<int64_t> blocks;
  for (const auto& [name, a] : w.arrays) {
    const auto dot = name.rfind('.');
    try {
      blocks.insert(std::stoll(name.substr(dot + 1)));
    } catch (const std::exception&) {  // not a block number: compute_qk never asks for it
    }
  }
  for (const int64_t b : blocks) {
    const Array* g = w.find("ln_1.weight." + std::to_string(b));
    if (!g || g->shape.size() != 1 || g->shape[0] > 1024) continue;
    const int64_t width = g->shape[0], rows = 2;
    std::vector<float> x(static_cast<size_t>(rows * width), 0.5f), q(x.size()), k(x.size());
    EVL_FUZZ_EXPECT_ERRORS(compute_qk(w, b, x.data(), rows, width, q.data(), k.data()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  evl::fuzz::write_scratch("qk_weights.evl", data, size);
  EVL_FUZZ_EXPECT_ERRORS(exercise());
  return 0;
}
