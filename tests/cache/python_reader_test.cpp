// FORMAT.md is enough to read the cache: tests/cache/read_record.py (python3-lmdb
// + numpy + python3-xxhash, its own XXH64 for version 1) reads records the C++ writer made, and its
// header fields, raw bytes and float32 values (numpy's fp16/bf16 conversion; for int8/fp8 its own
// dequantization from codes and scales) must equal what this test wrote and what the C++ reader
// returns, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cache/cache.h"
#include "cache/quantize.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/test_support.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

using evl::test::slurp;

}  // namespace

TEST(PythonReader, ReadsWhatCppWrote) {
  for (auto [storage, dtype] :
       {std::pair{StorageMode::kQK, DType::kF16}, std::pair{StorageMode::kCompact, DType::kBF16},
        std::pair{StorageMode::kQK, DType::kF32}, std::pair{StorageMode::kQK, DType::kI8},
        std::pair{StorageMode::kCompact, DType::kFP8}, std::pair{StorageMode::kCompact, DType::kI8},
        std::pair{StorageMode::kQK, DType::kFP8}}) {
    SCOPED_TRACE(to_string(storage) + " " + to_string(dtype));
    TempDir dir("python");
    Manifest m = tiny_manifest(storage, dtype, /*has_inputs=*/true);
    if (is_quantized(dtype)) m.backbone.width = 160;  // groups of 64, 64 and 32 channels
    write_cache(dir.str(), m, 0, 3);
    const Record want = synth_record(m, 2, 1);
    const std::string out = dir / "py.json", dump = dir / "dump";
    const std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                            "/tests/cache/read_record.py '" + dir.str() + "' " + want.key +
                            " --dump '" + dump + "' >'" + out + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const auto j = nlohmann::json::parse(slurp(out));
    EXPECT_EQ(j["key"], want.key);
    EXPECT_EQ(j["video_id"], want.video_id);
    EXPECT_EQ(j["view"], want.view);
    EXPECT_EQ(j["label"], want.label);
    EXPECT_EQ(j["clip_index"], 2);
    EXPECT_EQ(j["view_index"], 1);
    EXPECT_EQ(j.contains("quantization"), is_quantized(dtype));
    ASSERT_EQ(j["arrays"].size(), want.arrays.size());
    for (const auto& [name, a] : want.arrays) {
      EXPECT_EQ(j["arrays"][name]["dtype"], to_string(a.dtype));
      EXPECT_EQ(j["arrays"][name]["shape"].get<std::vector<int64_t>>(), a.shape);
      const std::string raw = slurp(dump + "/" + name + ".raw");
      ASSERT_EQ(raw.size(), a.bytes.size());
      EXPECT_EQ(std::memcmp(raw.data(), a.bytes.data(), raw.size()), 0) << name;
      std::vector<float> mine(static_cast<size_t>(a.numel()));
      to_float32(ArrayView{a.dtype, a.shape, a.bytes.data()}, mine.data());
      const std::string f32 = slurp(dump + "/" + name + ".f32");
      ASSERT_EQ(f32.size(), mine.size() * 4);
      EXPECT_EQ(std::memcmp(f32.data(), mine.data(), f32.size()), 0) << name;
    }
  }
}

TEST(PythonReader, DetectsAFlippedByte) {
  TempDir dir("python_bad");
  const Manifest m = tiny_manifest();
  write_cache(dir.str(), m, 0, 1);
  // Rewrite the record with one payload byte flipped, via the Python lmdb module.
  const std::string script =
      "import lmdb; e = lmdb.open('" + dir.str() +
      "/features-00000-of-00001'); t = e.begin(write=True); k = b'" + make_key(0, 0) +
      "'; v = bytearray(t.get(k)); v[len(v) // 2] ^= 1; t.put(k, bytes(v)); t.commit()";
  ASSERT_EQ(std::system((std::string(EVL_PYTHON) + " -c \"" + script + "\"").c_str()), 0);
  const std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                          "/tests/cache/read_record.py '" + dir.str() + "' " + make_key(0, 0) +
                          " >/dev/null 2>'" + (dir / "err") + "'";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(slurp(dir / "err").find("checksum mismatch"), std::string::npos);
}
