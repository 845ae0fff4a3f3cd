// Fuzz target: what evl checks and computes on a score file's contents once
// HDF5 has read its datasets (evaluate/scores.cpp validate_scores,
// to_probabilities; evaluate/metrics.cpp compute_metrics). libhdf5's own
// parsing is not fuzzed here: evl reads it in a forked child that a crash
// cannot take down (scores.cpp). The bytes are decoded into a ScoreFile:
//   u8 flags (bit 0 logits, bit 1 int64 labels), u8 N (mod 17), u8 K (mod 17),
//   i8 num_views, N*K float32, N labels (i8, or i64 with bit 1),
//   N ids (u8 length mod 8, then its bytes); short input reads as zeros.
#include <cmath>
#include <cstring>

#include "evaluate/metrics.h"
#include "evaluate/scores.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

struct Bytes {
  const uint8_t* p;
  size_t n;
  template <typename T>
  T get() {
    T v{};
    const size_t k = n < sizeof(T) ? n : sizeof(T);
    if (k) std::memcpy(&v, p, k);
    p += k;
    n -= k;
    return v;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes b{data, size};
  evl::ScoreFile f;
  const auto flags = b.get<uint8_t>();
  const int n = b.get<uint8_t>() % 17, k = b.get<uint8_t>() % 17;
  f.kind = flags & 1 ? evl::ScoreKind::kLogits : evl::ScoreKind::kProbabilities;
  f.num_views = b.get<int8_t>();
  for (int i = 0; i < n * k; ++i) f.scores.push_back(b.get<float>());
  for (int i = 0; i < n; ++i)
    f.labels.push_back(flags & 2 ? b.get<int64_t>() : static_cast<int64_t>(b.get<int8_t>()));
  for (int i = 0; i < n; ++i) {
    std::string id(b.get<uint8_t>() % 8, '\0');
    for (auto& c : id) c = static_cast<char>(b.get<uint8_t>());
    f.video_ids.push_back(id);
  }
  EVL_FUZZ_EXPECT_ERRORS({
    evl::validate_scores(f, "fuzz scores.h5");
    const std::vector<float> probs = evl::to_probabilities(f);
    for (const float p : probs)
      if (!(p >= -1e-6f && p <= 1.0f + 1e-4f)) std::abort();  // what validate_scores admits
    (void)evl::compute_metrics(probs.data(), f.num_videos(), f.num_classes(), f.labels);
  });
  return 0;
}
