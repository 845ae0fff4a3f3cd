// Fuzz target: the checkpoint unpickler (train/pickle_reader.cpp), on the bytes
// of data.pkl. The storages it may refer to are an in-memory torch.save archive
// made once: data/0 .. data/7 of 64 bytes each (16 float32, 32 fp16, 8 int64,
// ...), the size of every storage in the seed checkpoints (make_seeds.py).
// Tensors that come back are read whole, so a view past its storage shows.
#include <caffe2/serialize/inline_container.h>

#include <sstream>

#include "tests/fuzz/fuzz_util.h"
#include "train/pickle_reader.h"

namespace {

caffe2::serialize::PyTorchStreamReader& archive() {
  static std::string zip;
  static std::istringstream stream;
  static std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader = [] {
    caffe2::serialize::PyTorchStreamWriter writer([](const void* p, size_t n) {
      zip.append(static_cast<const char*>(p), n);
      return n;
    });
    const std::string pkl = "\x80\x02N.";  // a valid data.pkl, never read here
    writer.writeRecord("data.pkl", pkl.data(), pkl.size());
    for (int i = 0; i < 8; ++i) {
      std::string bytes(64, '\0');
      for (int j = 0; j < 64; ++j) bytes[j] = static_cast<char>(i * 64 + j);
      writer.writeRecord("data/" + std::to_string(i), bytes.data(), bytes.size());
    }
    writer.writeEndOfFile();
    stream.str(zip);
    return std::make_unique<caffe2::serialize::PyTorchStreamReader>(&stream);
  }();
  return *reader;
}

// The first and the last byte a tensor view reaches (not a copy: a stride-0
// view of 2^39 elements is a valid, small checkpoint).
unsigned touch_tensor(const torch::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  const auto* p = static_cast<const uint8_t*>(t.data_ptr());
  return p[0] + p[last * static_cast<int64_t>(t.element_size()) + t.element_size() - 1];
}

double touch(const c10::IValue& v, int depth = 0) {
  if (depth > 64) return 0;
  if (v.isTensor()) return touch_tensor(v.toTensor());
  double s = 0;
  if (v.isGenericDict())
    for (const auto& kv : v.toGenericDict()) s += touch(kv.value(), depth + 1);
  if (v.isList())
    for (const auto& e : v.toListRef()) s += touch(e, depth + 1);
  if (v.isTuple())
    for (const auto& e : v.toTupleRef().elements()) s += touch(e, depth + 1);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& a = archive();
  EVL_FUZZ_EXPECT_ERRORS(touch(evl::read_torch_pickle(data, size, a, "fuzz.pth")));
  return 0;
}
