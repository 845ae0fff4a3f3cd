// Fuzz target: manifest.json (cache/manifest.cpp Manifest::from_json). A
// manifest that parses must give the shapes its records would need
// (expected_arrays, array_bytes: the sizes a reader allocates) and survive a
// to_json -> from_json round trip.
#include "cache/cache.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void exercise(const std::string& text) {
  using namespace evl::cache;
  const Manifest m = Manifest::from_json(text, "fuzz manifest.json");
  for (const auto& [name, shape] : expected_arrays(m)) (void)array_bytes(m.dtype, shape);
  const Manifest again = Manifest::from_json(m.to_json(), "re-encoded manifest.json");
  check_matches(m, again, "round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  EVL_FUZZ_EXPECT_ERRORS(exercise(std::string(reinterpret_cast<const char*>(data), size)));
  return 0;
}
