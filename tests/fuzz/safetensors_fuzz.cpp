// Fuzz target: Hugging Face safetensors (extract/weights.cpp SafetensorsFile,
// read_hf_safetensors, infer_arch), read from a scratch file beside a valid
// config.json as evl reads a backbone. Every tensor of a file that opens is
// read whole, so offsets or shapes past the data section show under ASan.
#include "extract/weights.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void exercise(const std::string& path) {
  const evl::SafetensorsFile file(path);
  for (const auto& [name, e] : file.entries()) {
    const torch::Tensor t = file.tensor(name);
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    unsigned sum = 0;
    for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
    (void)sum;
  }
  const evl::ClipWeights w = evl::read_hf_safetensors(path);
  (void)evl::infer_arch(w, path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string config = R"({"num_attention_heads": 2, "hidden_act": "quick_gelu"})";
  static const bool once = [] {
    evl::fuzz::write_scratch("config.json", reinterpret_cast<const uint8_t*>(config.data()),
                             config.size());
    return true;
  }();
  (void)once;
  const std::string path = evl::fuzz::write_scratch("model.safetensors", data, size);
  EVL_FUZZ_EXPECT_ERRORS(exercise(path));
  return 0;
}
