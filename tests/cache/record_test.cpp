// Record encoding, dtype conversions, keys and the manifest: round trips in
// every storage mode x dtype through a real shard (int8/fp8 within the scheme's
// bound from each group's scale, with outlier channels and zero groups),
// conversions against the compiler's _Float16 and a brute-force nearest-bf16
// oracle, manifest checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "cache/cache.h"
#include "cache/quantize.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/quant_reference.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

uint16_t bits_of(_Float16 h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
_Float16 half_of(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return h;
}
constexpr auto float_of = evl::test::float_of_bits;

void expect_error_contains(const std::function<void()>& fn, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected evl::Error containing '" << parts[0] << "'";
  } catch (const evl::Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

}  // namespace

TEST(Conversion, HalfToFloatMatchesFloat16Exhaustively) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float want = static_cast<float>(half_of(static_cast<uint16_t>(b)));
    const float got = half_to_float(static_cast<uint16_t>(b));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << b;
    } else {
      ASSERT_EQ(std::memcmp(&want, &got, 4), 0) << "half bits " << b;
    }
  }
}

TEST(Conversion, FloatToHalfRoundsLikeFloat16) {
  std::vector<uint32_t> probes;
  // Every half value, its neighbours and the exact midpoints between halves.
  for (uint32_t b = 0; b < 0x7c00; ++b) {
    uint32_t f;
    const float v = half_to_float(static_cast<uint16_t>(b));
    std::memcpy(&f, &v, 4);
    for (int d = -2; d <= 2; ++d) probes.push_back(f + d);
    const float mid = 0.5f * (v + half_to_float(static_cast<uint16_t>(b + 1)));
    std::memcpy(&f, &mid, 4);
    probes.push_back(f);
  }
  uint64_t s = 42;
  for (int i = 0; i < 1000000; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    probes.push_back(static_cast<uint32_t>(s >> 32));
  }
  for (uint32_t p : probes) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float f = float_of(p ^ sign);
      const uint16_t want = bits_of(static_cast<_Float16>(f)), got = float_to_half(f);
      if (std::isnan(f))
        EXPECT_TRUE(std::isnan(half_to_float(got)));
      else
        ASSERT_EQ(got, want) << "float " << f << " bits " << (p ^ sign);
    }
  }
}

TEST(Conversion, FloatToBf16IsNearestEven) {
  uint64_t s = 7;
  for (int i = 0; i < 1000000; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t b = static_cast<uint32_t>(s >> 32);
    if (i % 3 == 0) b = (b & 0xffff0000u) | 0x8000u;  // exact ties
    const float f = float_of(b);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f))));
      continue;
    }
    // Oracle: the two bf16 values around f (by magnitude), nearer wins, tie -> even.
    const uint32_t lo = b & 0xffff0000u, hi = lo + 0x10000u;
    const double a = std::fabs(static_cast<double>(f));
    const double vlo = std::fabs(static_cast<double>(float_of(lo)));
    const double vhi = ((hi & 0x7f800000u) == 0x7f800000u)
                           ? std::ldexp(1.0, 128)  // rounding past max goes to inf
                           : std::fabs(static_cast<double>(float_of(hi)));
    uint32_t want;
    if (a - vlo < vhi - a)
      want = lo;
    else if (a - vlo > vhi - a)
      want = hi;
    else
      want = ((lo >> 16) & 1) ? hi : lo;
    if ((b & 0x7f800000u) == 0x7f800000u) want = b & 0xffff0000u;  // inf stays inf
    ASSERT_EQ(float_to_bf16(f), static_cast<uint16_t>(want >> 16)) << "bits " << b;
  }
}

TEST(Keys, SortByClipThenViewAndNameShards) {
  EXPECT_EQ(make_key(3, 2), "0000000003/002");
  EXPECT_LT(make_key(9, 999), make_key(10, 0));
  EXPECT_EQ(shard_name(3, 16), "features-00003-of-00016");
  EXPECT_THROW(make_key(1, 1000), evl::Error);
  EXPECT_THROW(shard_name(16, 16), evl::Error);
}

class RoundTrip : public ::testing::TestWithParam<std::tuple<StorageMode, DType>> {};

TEST_P(RoundTrip, WriteThenReadIsBitExact) {
  const auto [storage, dtype] = GetParam();
  const Manifest m = tiny_manifest(storage, dtype, /*has_inputs=*/true);
  TempDir dir("roundtrip");
  write_cache(dir.str(), m, 0, 4);
  const CacheReader reader(dir.str());
  ASSERT_EQ(reader.size(), 8);
  for (int64_t i = 0; i < reader.size(); ++i) {
    const int64_t clip = i / 2;
    const int32_t view = static_cast<int32_t>(i % 2);
    const Record want = synth_record(m, clip, view);
    const Record got = reader.get(i);
    EXPECT_EQ(got.key, want.key);
    EXPECT_EQ(got.video_id, want.video_id);
    EXPECT_EQ(got.label, want.label);
    EXPECT_EQ(got.clip_index, clip);
    EXPECT_EQ(got.view_index, view);
    EXPECT_EQ(got.view, want.view);
    ASSERT_EQ(got.arrays.size(), want.arrays.size());
    for (size_t a = 0; a < want.arrays.size(); ++a) {
      EXPECT_EQ(got.arrays[a].first, want.arrays[a].first);
      EXPECT_EQ(got.arrays[a].second.dtype, want.arrays[a].second.dtype);
      EXPECT_EQ(got.arrays[a].second.shape, want.arrays[a].second.shape);
      EXPECT_TRUE(got.arrays[a].second.bytes == want.arrays[a].second.bytes)
          << want.key << " " << want.arrays[a].first;
    }
    // The zero-copy view sees the same bytes, inside the map.
    reader.with_record(i, [&](const RecordView& r) {
      const ArrayView& x = r.array("x");
      EXPECT_EQ(std::memcmp(x.data, want.array("x").bytes.data(), x.nbytes()), 0);
    });
  }
  // Values survive the dtype: fp32 exactly, fp16/bf16 within their rounding,
  // int8/fp8 within the scheme's bound from each group's scale.
  const Record r0 = reader.get(make_key(1, 1));
  const auto& x = r0.array("x");
  std::vector<float> back(static_cast<size_t>(x.numel()));
  to_float32(ArrayView{x.dtype, x.shape, x.bytes.data()}, back.data());
  const auto src = synth_values(1 * 1000 + 1 * 10 + 1, back.size());
  if (is_quantized(dtype)) {
    EXPECT_EQ(back, evl::test::reference_dequantize(x));
    EXPECT_EQ(evl::test::check_within_bound(x, src.data()), "");
    return;
  }
  const double tol = dtype == DType::kF32 ? 0 : dtype == DType::kF16 ? 1.0 / 1024 : 1.0 / 128;
  for (size_t i = 0; i < back.size(); ++i) ASSERT_LE(std::fabs(back[i] - src[i]), 2 * tol);
}

INSTANTIATE_TEST_SUITE_P(
    AllModesAndDtypes, RoundTrip,
    ::testing::Combine(::testing::Values(StorageMode::kQK, StorageMode::kCompact),
                       ::testing::Values(DType::kF16, DType::kBF16, DType::kF32, DType::kI8,
                                         DType::kFP8)));

// Features with what stresses a per-group absmax scale: per record, rows
// (tokens) with one channel 100x the rest, rows whose second group is all
// zeros, all-zero rows, and C = 160 = 64 + 64 + 32 (a short last group).
Record outlier_record(const Manifest& m, int64_t clip, int32_t view,
                      std::vector<std::vector<float>>& features) {
  Record r;
  r.key = make_key(clip, view);
  r.video_id = "v" + std::to_string(clip);
  r.clip_index = clip;
  r.view_index = view;
  features.clear();
  uint64_t salt = 1;
  for (const auto& [name, shape] : expected_arrays(m)) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    auto v = synth_values(clip * 100 + view * 10 + salt++, static_cast<size_t>(n));
    const int64_t c = shape.back();
    for (int64_t row = 0; row < n / c; ++row) {
      float* p = v.data() + row * c;
      if (row % 4 == 0) p[(row * 7) % c] *= 100.0f;
      if (row % 4 == 1)
        for (int64_t i = 64; i < std::min<int64_t>(128, c); ++i) p[i] = 0.0f;
      if (row % 4 == 2)
        for (int64_t i = 0; i < c; ++i) p[i] = 0.0f;
    }
    const DType dt = name == "inputs" ? DType::kF32 : m.dtype;
    r.arrays.emplace_back(name, make_array(dt, shape, v.data(), v.size()));
    features.push_back(std::move(v));
  }
  return r;
}

class QuantizedRoundTrip : public ::testing::TestWithParam<std::tuple<StorageMode, DType>> {};

TEST_P(QuantizedRoundTrip, ReadValuesAreWithinEachGroupsBound) {
  const auto [storage, dtype] = GetParam();
  Manifest m = tiny_manifest(storage, dtype, /*has_inputs=*/true);
  m.backbone.width = 160;
  TempDir dir("quant_roundtrip");
  std::vector<std::vector<std::vector<float>>> features;  // per record, per array
  {
    ShardWriter w(dir.str() + "/features-00000-of-00001", 3);
    for (int64_t clip = 0; clip < 3; ++clip)
      for (int32_t view = 0; view < 2; ++view) {
        features.emplace_back();
        w.put(outlier_record(m, clip, view, features.back()));
      }
  }
  m.shards.push_back({"features-00000-of-00001", 6});
  m.num_clips = 3;
  m.save(dir.str());
  const Manifest back = Manifest::load(dir.str());
  EXPECT_EQ(back.dtype, dtype);
  EXPECT_NE(back.to_json().find("\"scheme\": \"absmax-symmetric\""), std::string::npos);

  const CacheReader reader(dir.str());
  ASSERT_EQ(reader.size(), 6);
  for (int64_t i = 0; i < reader.size(); ++i) {
    const Record r = reader.get(i);
    ASSERT_EQ(r.arrays.size(), features[static_cast<size_t>(i)].size());
    for (size_t a = 0; a < r.arrays.size(); ++a) {
      const auto& [name, arr] = r.arrays[a];
      const auto& want = features[static_cast<size_t>(i)][a];
      std::vector<float> got(want.size());
      reader.with_record(i, [&](const RecordView& v) { to_float32(v.array(name), got.data()); });
      if (name == "inputs") {
        EXPECT_EQ(got, want);
        continue;
      }
      EXPECT_EQ(arr.dtype, dtype);
      EXPECT_EQ(arr.shape.back(), 160);
      // The reader's values (zero-copy, from the map) are the spec's decode of
      // the stored bytes, and within each group's bound of the features.
      EXPECT_EQ(got, evl::test::reference_dequantize(arr)) << r.key << " " << name;
      EXPECT_EQ(evl::test::check_within_bound(arr, want.data()), "") << r.key << " " << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Int8AndFp8, QuantizedRoundTrip,
                         ::testing::Combine(::testing::Values(StorageMode::kQK,
                                                              StorageMode::kCompact),
                                            ::testing::Values(DType::kI8, DType::kFP8)));

TEST(Manifest, QuantizationIsRecordedAndChecked) {
  Manifest m = tiny_manifest(StorageMode::kQK, DType::kI8);
  const std::string text = m.to_json();
  EXPECT_NE(text.find("\"quantization\""), std::string::npos) << text;
  EXPECT_EQ(Manifest::from_json(text, "m.json").to_json(), text);
  EXPECT_EQ(tiny_manifest().to_json().find("quantization"), std::string::npos);
  std::string other = text;
  other.replace(other.find("\"group\": 64"), 11, "\"group\": 32");
  expect_error_contains([&] { Manifest::from_json(other, "m.json"); },
                        {"m.json quantization", "group 32", "not supported"});
  std::string missing = text;
  missing.replace(missing.find("\"quantization\""), 14, "\"quantisation\"");
  expect_error_contains([&] { Manifest::from_json(missing, "m.json"); },
                        {"m.json", "'quantization'"});
  std::string v1 = text;
  v1.replace(v1.find("\"format_version\": 4"), 19, "\"format_version\": 1");
  expect_error_contains([&] { Manifest::from_json(v1, "m.json"); },
                        {"m.json", "'int8' needs format version 2"});
  // Version 4 records outlier channels with centers; version 3 wrote them
  // without (dtype codes 6, 7), version 2 none (codes 4, 5).
  const std::string centered = "\"outlier_channels\": \"median-8x-column-midrange\"";
  ASSERT_NE(text.find(centered), std::string::npos) << text;
  std::string v3 = text;
  v3.replace(v3.find("\"format_version\": 4"), 19, "\"format_version\": 3");
  expect_error_contains([&] { Manifest::from_json(v3, "m.json"); },
                        {"m.json quantization", "need format version 4"});
  v3.replace(v3.find(centered), centered.size(),
             "\"outlier_channels\": \"median-8x-column-absmax\"");
  EXPECT_EQ(Manifest::from_json(v3, "m.json").dtype, DType::kI8V3);
  std::string v2 = v3;
  v2.replace(v2.find("\"format_version\": 3"), 19, "\"format_version\": 2");
  expect_error_contains([&] { Manifest::from_json(v2, "m.json"); },
                        {"m.json quantization", "need format version 3"});
  const std::string outliers = ",\n    \"outlier_channels\": \"median-8x-column-absmax\"";
  ASSERT_NE(v2.find(outliers), std::string::npos) << v2;
  v2.erase(v2.find(outliers), outliers.size());
  EXPECT_EQ(Manifest::from_json(v2, "m.json").dtype, DType::kI8V2);
  std::string odd = text;
  odd.replace(odd.find(centered), centered.size(), "\"outlier_channels\": \"median-4x\"");
  expect_error_contains([&] { Manifest::from_json(odd, "m.json"); },
                        {"m.json quantization", "'median-4x' is not supported"});
  EXPECT_EQ(to_string(DType::kI8V2), "int8");
  EXPECT_EQ(to_string(DType::kFP8V3), "fp8");
  EXPECT_EQ(parse_dtype("fp8"), DType::kFP8);
  EXPECT_EQ(parse_dtype("int8"), DType::kI8);
  EXPECT_THROW(parse_dtype("int4"), evl::UsageError);
}

TEST(Manifest, JsonRoundTripAndStrictParsing) {
  Manifest m = tiny_manifest(StorageMode::kCompact, DType::kBF16, true);
  m.shards = {{"features-00000-of-00002", 10}, {"features-00001-of-00002", 12}};
  const Manifest back = Manifest::from_json(m.to_json(), "m.json");
  EXPECT_EQ(back.to_json(), m.to_json());
  EXPECT_NO_THROW(check_matches(m, back, "m.json"));

  std::string future = m.to_json();
  future.replace(future.find("\"format_version\": 4"), 19, "\"format_version\": 9");
  expect_error_contains([&] { Manifest::from_json(future, "m.json"); },
                        {"m.json", "format version 9", "upgrade"});
  std::string missing = m.to_json();
  missing.replace(missing.find("\"frames\""), 8, "\"framez\"");
  expect_error_contains([&] { Manifest::from_json(missing, "m.json"); }, {"m.json", "'frames'"});
  expect_error_contains([&] { Manifest::from_json("{\"format\": 3}", "m.json"); }, {"m.json"});
}

TEST(Manifest, CheckMatchesNamesTheField) {
  const Manifest a = tiny_manifest();
  Manifest b = a;
  b.frames = 16;
  expect_error_contains([&] { check_matches(a, b, "cache 'x'"); },
                        {"cache 'x'", "'frames'", "16", "expected 3"});
  b = a;
  b.backbone.hash = "ffff";
  expect_error_contains([&] { check_matches(a, b, "c"); }, {"'backbone.hash'"});
  b = a;
  b.dtype = DType::kF32;  // dtype only when asked for
  EXPECT_NO_THROW(check_matches(a, b, "c"));
  expect_error_contains([&] { check_matches(a, b, "c", {"dtype"}); }, {"'dtype'"});
  b = a;
  b.layers = {8, 9, 10, 11};
  expect_error_contains([&] { check_matches(a, b, "c", {"frames", "layers"}); }, {"'layers'"});
}

TEST(Manifest, ConversionsAreOptionalRoundTripAndComparedByChain) {
  const Manifest plain = tiny_manifest();
  EXPECT_EQ(plain.to_json().find("conversions"), std::string::npos);  // old manifests unchanged
  EXPECT_TRUE(Manifest::from_json(plain.to_json(), "m.json").conversions.empty());
  Manifest m = tiny_manifest(StorageMode::kQK, DType::kI8);
  m.conversions = {
      {"/data/k400-fp32", DType::kF32, StorageMode::kCompact, 1, "0.1", "2026-01-02T00:00:00Z"},
      {"/data/k400-fp16", DType::kF16, StorageMode::kQK, 2, "0.2", "2026-01-03T00:00:00Z"}};
  const std::string text = m.to_json();
  EXPECT_NE(text.find("\"from_storage\": \"compact\""), std::string::npos) << text;
  const Manifest back = Manifest::from_json(text, "m.json");
  EXPECT_EQ(back.to_json(), text);
  ASSERT_EQ(back.conversions.size(), 2u);
  EXPECT_EQ(back.conversions[0].from, "/data/k400-fp32");
  EXPECT_EQ(back.conversions[0].from_dtype, DType::kF32);
  EXPECT_EQ(back.conversions[0].from_storage, StorageMode::kCompact);
  EXPECT_EQ(back.conversions[0].from_format_version, 1u);
  EXPECT_EQ(back.conversions[1].created, "2026-01-03T00:00:00Z");
  std::string bad = text;
  bad.replace(bad.find("\"from_dtype\": \"fp32\""), 20, "\"from_dtype\": \"fp64\"");
  expect_error_contains([&] { Manifest::from_json(bad, "m.json"); },
                        {"m.json conversions[]", "fp64"});
  std::string missing = text;
  missing.replace(missing.find("\"tool_version\": \"0.1\""), 14, "\"tool_versio\"");
  expect_error_contains([&] { Manifest::from_json(missing, "m.json"); },
                        {"m.json conversions[]", "'tool_version'"});
  // Compared only by name, and only by the re-encodings (not directory or date).
  Manifest other = m;
  other.conversions[0].from = "/elsewhere";
  other.conversions[1].created = "2027-01-01T00:00:00Z";
  EXPECT_NO_THROW(check_matches(m, other, "c", {"conversions"}));
  other.conversions[0].from_dtype = DType::kBF16;
  EXPECT_NO_THROW(check_matches(m, other, "c"));
  expect_error_contains([&] { check_matches(m, other, "c", {"conversions"}); },
                        {"'conversions'", "bf16 compact v1", "fp32 compact v1"});
  other.conversions.pop_back();
  expect_error_contains([&] { check_matches(m, other, "c", {"conversions"}); }, {"'conversions'"});
}

TEST(Manifest, SaveIsAtomicAndLoadable) {
  TempDir dir("manifest");
  const Manifest m = tiny_manifest();
  m.save(dir.str());
  EXPECT_EQ(Manifest::load(dir.str()).to_json(), m.to_json());
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename(), "manifest.json");  // no temp file left
  expect_error_contains([&] { Manifest::load(dir / "nope"); }, {"nope", "manifest.json"});
}
