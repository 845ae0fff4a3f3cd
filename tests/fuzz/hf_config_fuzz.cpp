// Fuzz target: a Hugging Face config.json as evl reads it beside safetensors
// weights (extract/weights.cpp parse_hf_vision_config).
#include "extract/weights.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  EVL_FUZZ_EXPECT_ERRORS({
    const auto c = evl::parse_hf_vision_config(text, "fuzz config.json");
    if (c.heads <= 0) std::abort();  // the documented guarantee
  });
  return 0;
}
