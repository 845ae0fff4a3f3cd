// Caches of format version 1 (before int8/fp8) still read and verify. The v1
// records are built here byte by byte from the version-1 layout of
// cache/FORMAT.md (its own header/table/alignment arithmetic, the compiler's
// _Float16 for the values, xxhash for the checksum), not by evl's encoder, and
// read through CacheReader, verify_cache, the loader-facing to_float32 and the
// numpy reader. A v1 record or manifest naming a quantized dtype is refused. A
// v1 cache converts (evl_cache convert) into version-2 records.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache/convert.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/quant_reference.h"
#include "tests/support/test_support.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

const char* kShard = "features-00000-of-00001";

struct V1Array {
  std::string name;
  uint8_t code;  // 1 fp16, 2 bf16, 3 fp32
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

size_t up64(size_t n) { return (n + 63) / 64 * 64; }

template <typename T>
void put_le(std::vector<uint8_t>& v, size_t at, T value) {
  std::memcpy(v.data() + at, &value, sizeof(T));
}

// A version-1 record value, written from the v1 spec's tables.
std::vector<uint8_t> v1_record(const std::string& key, const std::string& video_id,
                               const std::string& view, int64_t label, int64_t clip,
                               int32_t view_index, const std::vector<V1Array>& arrays,
                               uint32_t version = 1) {
  size_t table = 56 + key.size() + video_id.size() + view.size();
  for (const auto& a : arrays) table += 4 + a.name.size() + 4 + 8 * a.shape.size() + 16;
  const size_t header = up64(table);
  std::vector<size_t> offsets;
  size_t end = header;
  for (const auto& a : arrays) {
    offsets.push_back(end);
    end = up64(end + a.bytes.size());
  }
  std::vector<uint8_t> v(end + 8, 0);
  std::memcpy(v.data(), "EVLR", 4);
  put_le<uint32_t>(v, 4, version);
  put_le<uint64_t>(v, 8, v.size());
  put_le<int64_t>(v, 16, label);
  put_le<int64_t>(v, 24, clip);
  put_le<int32_t>(v, 32, view_index);
  put_le<uint32_t>(v, 36, static_cast<uint32_t>(arrays.size()));
  put_le<uint32_t>(v, 40, static_cast<uint32_t>(key.size()));
  put_le<uint32_t>(v, 44, static_cast<uint32_t>(video_id.size()));
  put_le<uint32_t>(v, 48, static_cast<uint32_t>(view.size()));
  put_le<uint32_t>(v, 52, static_cast<uint32_t>(header));
  size_t pos = 56;
  for (const std::string* s : {&key, &video_id, &view}) {
    std::memcpy(v.data() + pos, s->data(), s->size());
    pos += s->size();
  }
  for (size_t i = 0; i < arrays.size(); ++i) {
    const V1Array& a = arrays[i];
    put_le<uint32_t>(v, pos, static_cast<uint32_t>(a.name.size()));
    std::memcpy(v.data() + pos + 4, a.name.data(), a.name.size());
    pos += 4 + a.name.size();
    v[pos] = a.code;
    v[pos + 1] = static_cast<uint8_t>(a.shape.size());
    if (a.code >= 4) put_le<uint16_t>(v, pos + 2, 64);  // the v2 quantization group
    pos += 4;                                           // + 2 reserved zero bytes (v1)
    for (const int64_t d : a.shape) {
      put_le<int64_t>(v, pos, d);
      pos += 8;
    }
    put_le<uint64_t>(v, pos, offsets[i]);
    put_le<uint64_t>(v, pos + 8, a.bytes.size());
    pos += 16;
    std::memcpy(v.data() + offsets[i], a.bytes.data(), a.bytes.size());
  }
  // FORMAT.md: XXH64 (seed 0) in version 1, XXH3-64 from version 2.
  put_le<uint64_t>(
      v, v.size() - 8,
      version >= 2 ? XXH3_64bits(v.data(), v.size() - 8) : XXH64(v.data(), v.size() - 8, 0));
  return v;
}

// fp16 bits of `values` by the compiler's conversion.
std::vector<uint8_t> fp16_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> out(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const _Float16 h = static_cast<_Float16>(values[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

// The manifest as a version-1 writer saved it: format_version 1, no quantization.
std::string v1_manifest(Manifest m, int64_t records) {
  m.shards = {{kShard, records}};
  m.num_clips = records / m.views_per_clip();
  std::string text = m.to_json();
  const std::string now = "\"format_version\": " + std::to_string(kFormatVersion);
  text.replace(text.find(now), now.size(), "\"format_version\": 1");
  EXPECT_EQ(text.find("quantization"), std::string::npos);
  return text;
}

// A v1 cache of tiny_manifest() (qk, fp16, with fp32 inputs): 2 clips x 2 views.
// Returns the features each record was made from, by key and array.
std::map<std::string, std::map<std::string, std::vector<float>>> write_v1_cache(
    const std::string& dir) {
  const Manifest m = tiny_manifest(StorageMode::kQK, DType::kF16, /*has_inputs=*/true);
  std::map<std::string, std::map<std::string, std::vector<float>>> values;
  fs::create_directories(fs::path(dir) / kShard);
  for (int64_t clip = 0; clip < 2; ++clip)
    for (int32_t view = 0; view < 2; ++view) {
      const std::string key = make_key(clip, view);
      std::vector<V1Array> arrays;
      uint64_t salt = 1;
      for (const auto& [name, shape] : expected_arrays(m)) {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        auto v = synth_values(clip * 31 + view * 7 + salt++, static_cast<size_t>(n));
        std::vector<uint8_t> bytes;
        if (name == "inputs") {
          bytes.resize(v.size() * 4);
          std::memcpy(bytes.data(), v.data(), bytes.size());
        } else {
          bytes = fp16_bytes(v);
          for (auto& f : v) f = static_cast<float>(static_cast<_Float16>(f));  // stored value
        }
        arrays.push_back({name, static_cast<uint8_t>(name == "inputs" ? 3 : 1), shape, bytes});
        values[key][name] = std::move(v);
      }
      poke((fs::path(dir) / kShard).string(), key,
           v1_record(key, "old/clip" + std::to_string(clip) + ".mp4", "t" + std::to_string(view),
                     clip + 3, clip, view, arrays));
    }
  evl::test::write_text(fs::path(dir) / "manifest.json", v1_manifest(m, 4));
  return values;
}

}  // namespace

TEST(FormatV1, CachesWrittenBeforeQuantizationStillReadAndVerify) {
  TempDir dir("v1");
  const auto values = write_v1_cache(dir.str());
  const CacheReader reader(dir.str());
  EXPECT_EQ(reader.manifest().format_version, 1u);
  ASSERT_EQ(reader.size(), 4);
  for (int64_t i = 0; i < reader.size(); ++i) {
    const Record r = reader.get(i);
    EXPECT_EQ(r.label, r.clip_index + 3);
    EXPECT_EQ(r.video_id, "old/clip" + std::to_string(r.clip_index) + ".mp4");
    for (const auto& [name, a] : r.arrays) {
      const auto& want = values.at(r.key).at(name);
      std::vector<float> got(want.size());
      to_float32(ArrayView{a.dtype, a.shape, a.bytes.data()}, got.data());
      EXPECT_EQ(got, want) << r.key << " " << name;
    }
  }
  const VerifyReport report = verify_cache(dir.str());
  EXPECT_TRUE(report.ok()) << (report.bad.empty() ? "" : report.bad[0].reason);
  EXPECT_EQ(report.records, 4);
  EXPECT_EQ(
      evl::test::sh(evl::test::tool("evl_cache") + " verify '" + dir.str() + "' >/dev/null 2>&1"),
      0);

  // The numpy reader (FORMAT.md alone) reads the v1 record to the same values.
  const std::string dump = dir / "dump";
  const std::string cmd = evl::test::python() + " " +
                          evl::test::source_path("tests/cache/read_record.py") + " '" + dir.str() +
                          "' " + make_key(1, 0) + " --dump '" + dump + "' >/dev/null";
  ASSERT_EQ(evl::test::sh(cmd), 0) << cmd;
  for (const char* name : {"x", "q", "k", "inputs"}) {
    const auto& want = values.at(make_key(1, 0)).at(name);
    const std::string f32 = evl::test::slurp(fs::path(dump) / (std::string(name) + ".f32"));
    ASSERT_EQ(f32.size(), want.size() * 4) << name;
    EXPECT_EQ(std::memcmp(f32.data(), want.data(), f32.size()), 0) << name;
  }
}

TEST(FormatV1, ConvertsIntoAVersion2Cache) {
  TempDir dir("v1_convert");
  const auto values = write_v1_cache(dir / "v1");
  ConvertOptions o;
  o.in = dir / "v1";
  o.out = dir / "int8";
  o.dtype = DType::kI8;
  o.threads = 2;
  EXPECT_EQ(convert_cache(o).converted, 4);
  const Manifest m = Manifest::load(o.out);
  EXPECT_EQ(m.format_version, kFormatVersion);
  ASSERT_EQ(m.conversions.size(), 1u);
  EXPECT_EQ(m.conversions[0].from_format_version, 1u);
  const CacheReader reader(o.out);
  ASSERT_EQ(reader.size(), 4);
  for (int64_t i = 0; i < reader.size(); ++i) {
    const Record r = reader.get(i);
    const std::vector<uint8_t> bytes = encode_record(r);
    uint32_t version = 0;
    std::memcpy(&version, bytes.data() + 4, 4);
    EXPECT_EQ(version, kFormatVersion);
    EXPECT_EQ(r.video_id, "old/clip" + std::to_string(r.clip_index) + ".mp4");
    for (const char* name : {"x", "q", "k"})
      EXPECT_EQ(evl::test::check_within_bound(r.array(name), values.at(r.key).at(name).data()), "")
          << r.key << " " << name;
    const auto& inputs = values.at(r.key).at("inputs");
    EXPECT_EQ(std::memcmp(r.array("inputs").bytes.data(), inputs.data(), inputs.size() * 4), 0);
  }
  EXPECT_TRUE(verify_cache(o.out).ok());
}

TEST(FormatV1, QuantizedDtypesNeedVersion2) {
  // A v1 record with dtype code 4 (and a valid checksum) is corrupt.
  const std::vector<uint8_t> codes(64 + 2, 0);
  const auto v = v1_record("0000000000/000", "a", "b", 0, 0, 0, {{"x", 4, {1, 64}, codes}});
  const std::string err = evl::test::error_of([&] { decode_record(v.data(), v.size(), "here"); });
  EXPECT_NE(
      err.find("here: array 'x' has dtype int8 (code 4), which format version 1 does not have"),
      std::string::npos)
      << err;
  // A v1 manifest saying int8.
  std::string text = v1_manifest(tiny_manifest(), 2);
  text.replace(text.find("\"fp16\""), 6, "\"int8\"");
  EXPECT_NE(evl::test::error_of([&] {
              Manifest::from_json(text, "m.json");
            }).find("'int8' needs format version 2"),
            std::string::npos);
  // Unknown codes stay unknown; codes 6, 7 (with outlier channels) need
  // version 3, codes 8, 9 (and their centers) version 4.
  const auto bad = v1_record("0000000000/000", "a", "b", 0, 0, 0, {{"x", 10, {1}, {0}}}, 4);
  EXPECT_NE(evl::test::error_of([&] {
              decode_record(bad.data(), bad.size(), "here");
            }).find("unknown dtype code 10"),
            std::string::npos);
  const auto v3 = v1_record("0000000000/000", "a", "b", 0, 0, 0,
                            {{"x", 8, {1, 64}, std::vector<uint8_t>(64 + 2 + 256, 0)}}, 3);
  EXPECT_NE(evl::test::error_of([&] {
              decode_record(v3.data(), v3.size(), "here");
            }).find("format version 3 does not have"),
            std::string::npos);
  const auto early = v1_record("0000000000/000", "a", "b", 0, 0, 0,
                               {{"x", 6, {1, 64}, std::vector<uint8_t>(64 + 2 + 128, 0)}}, 2);
  EXPECT_NE(evl::test::error_of([&] {
              decode_record(early.data(), early.size(), "here");
            }).find("format version 2 does not have"),
            std::string::npos);
}

// Version-2 int8/fp8 records (dtype codes 4, 5: codes and fp16 group scales,
// no outlier channels), built from the version-2 tables, read to
// code * scale as version 2 defined it.
TEST(FormatV2, QuantizedRecordsWithoutExponentsStillRead) {
  const int64_t rows = 3, width = 96;  // groups of 64 and 32 channels
  for (const uint8_t code : {uint8_t{4}, uint8_t{5}}) {
    std::vector<uint8_t> payload(up64(rows * width) + 2 * rows * 2, 0);
    std::vector<double> want(rows * width);
    for (int64_t i = 0; i < rows * width; ++i) {
      payload[static_cast<size_t>(i)] = static_cast<uint8_t>((i * 37) % 120);  // valid in both
      const int64_t r = i / width, g = (i % width) / 64;
      const uint16_t scale = static_cast<uint16_t>(0x2000 + 97 * (r * 2 + g));  // fp16 bits
      std::memcpy(payload.data() + up64(rows * width) + 2 * (r * 2 + g), &scale, 2);
      const double q = code == 4 ? double(static_cast<int8_t>(payload[static_cast<size_t>(i)]))
                                 : evl::test::ocp_e4m3(payload[static_cast<size_t>(i)]);
      want[static_cast<size_t>(i)] =
          double(static_cast<float>(q) * static_cast<float>(evl::test::half_value(scale)));
    }
    const auto v =
        v1_record("0000000000/000", "a", "b", 0, 0, 0, {{"x", code, {1, rows, width}, payload}}, 2);
    const RecordView r = decode_record(v.data(), v.size(), "here");
    const ArrayView& x = r.array("x");
    EXPECT_EQ(to_string(x.dtype), code == 4 ? "int8" : "fp8");
    std::vector<float> got(static_cast<size_t>(rows * width));
    to_float32(x, got.data());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(double(got[i]), want[i]) << i;
  }
}
