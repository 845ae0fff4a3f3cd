// Fuzz target: cache records (cache/record.cpp decode_record, FORMAT.md), all
// dtypes including the quantized ones (their payload layout and dequantization).
// Checksums are skipped on the first pass so mutations reach the structure
// checks; the second pass checks them. A record that decodes must also copy,
// re-encode and decode again to the same structure.
#include <algorithm>
#include <vector>

#include "cache/cache.h"
#include "cache/quantize.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void exercise(const evl::cache::RecordView& view) {
  using namespace evl::cache;
  for (const auto& [name, a] : view.arrays) {
    const size_t nbytes = a.nbytes();
    // Touch every payload byte: an array whose bytes lie outside the value is
    // an ASan report here.
    const auto* p = static_cast<const uint8_t*>(a.data);
    unsigned sum = 0;
    for (size_t i = 0; i < nbytes; ++i) sum += p[i];
    (void)sum;
    if (is_quantized(a.dtype)) {
      const QuantLayout l = quant_layout(a.dtype, a.shape);
      const int64_t rows = std::min<int64_t>(l.rows, 64);
      if (l.width > 0 && l.width <= (int64_t(1) << 16)) {
        std::vector<float> out(static_cast<size_t>(rows * l.width));
        dequantize_rows(a, 0, rows, out.data());
      }
    }
  }
  const Record copy = view.to_record();
  const std::vector<uint8_t> again = encode_record(copy);
  const RecordView back = decode_record(again.data(), again.size(), "re-encoded");
  if (back.key != view.key || back.arrays.size() != view.arrays.size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  EVL_FUZZ_EXPECT_ERRORS(exercise(evl::cache::decode_record(data, size, "fuzz record", false)));
  EVL_FUZZ_EXPECT_ERRORS(evl::cache::decode_record(data, size, "fuzz record", true));
  return 0;
}
