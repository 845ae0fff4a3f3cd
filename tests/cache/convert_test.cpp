// evl_cache convert (cache/convert.h) against references written out here:
// int8 codes and scales from FORMAT.md's rules applied to the source values
// decoded with the compiler's _Float16, fp8 within each group's bound, fp16
// through _Float16, compact -> qk Q/K against a float64 LayerNorm + projection
// of the stored weights; resume after an interruption and --threads against an
// uninterrupted serial run (the same record bytes); the refusals; failures.tsv;
// and the evl_cache binary's flags and exit codes.
#include "cache/convert.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/quant_reference.h"
#include "tests/support/test_support.h"

using namespace evl::cache;
using namespace evl::cache::testing;
using evl::test::half_value;

namespace {

constexpr int64_t kC = 80;  // two groups per token: 64 + 16 channels

// tiny_manifest (layers 2, 3; T=3, L=5; 2 views per clip) at width 80.
Manifest manifest(StorageMode storage, DType dtype, bool inputs = false) {
  Manifest m = tiny_manifest(storage, dtype, inputs);
  m.backbone.width = kC;
  return m;
}

// Frozen ln_1/q/k weights of blocks 2 and 3.
Record make_weights() {
  Record w;
  w.key = "qk_weights";
  auto f32 = [](std::vector<int64_t> shape, const std::vector<float>& v) {
    return make_array(DType::kF32, std::move(shape), v.data(), v.size());
  };
  for (int b : {2, 3}) {
    const std::string s = "." + std::to_string(b);
    auto g = synth_values(100 + b, kC), wq = synth_values(300 + b, kC * kC),
         wk = synth_values(400 + b, kC * kC);
    for (auto& x : g) x = 1.0f + 0.25f * x;
    for (auto& x : wq) x *= 0.1f;
    for (auto& x : wk) x *= 0.1f;
    w.arrays.emplace_back("ln_1.weight" + s, f32({kC}, g));
    w.arrays.emplace_back("ln_1.bias" + s, f32({kC}, synth_values(200 + b, kC)));
    w.arrays.emplace_back("q_proj.weight" + s, f32({kC, kC}, wq));
    w.arrays.emplace_back("q_proj.bias" + s, f32({kC}, synth_values(500 + b, kC)));
    w.arrays.emplace_back("k_proj.weight" + s, f32({kC, kC}, wk));
    w.arrays.emplace_back("k_proj.bias" + s, f32({kC}, synth_values(600 + b, kC)));
  }
  return w;
}

// A source cache: shard j holds clips [first_j, first_j + clips_j) with all
// their views (synth_record); `edit` may change a record before it is written.
void write_source(const std::string& dir, Manifest m, const std::vector<int64_t>& clips,
                  const std::function<void(Record&)>& edit = {}) {
  int64_t clip = 0;
  for (size_t j = 0; j < clips.size(); ++j) {
    const std::string name = shard_name(static_cast<int>(j), static_cast<int>(clips.size()));
    int64_t n = 0;
    {
      ShardWriter w(dir + "/" + name, 4);
      for (int64_t c = 0; c < clips[j]; ++c, ++clip)
        for (int32_t v = 0; v < m.views_per_clip(); ++v, ++n) {
          Record r = synth_record(m, clip, v);
          if (edit) edit(r);
          w.put(r);
        }
    }
    m.shards.push_back({name, n});
  }
  m.num_clips = clip;
  m.save(dir);
  if (m.storage == StorageMode::kCompact) save_qk_weights(dir, make_weights());
}

// Every record's value bytes, by key, read straight from LMDB.
std::map<std::string, std::string> raw_records(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& s : Manifest::load(dir).shards) {
    if (!fs::exists(dir + "/" + s.name)) continue;
    MDB_env* env = nullptr;
    EVL_CHECK(0 == mdb_env_create(&env), "lmdb");
    EVL_CHECK(0 == mdb_env_open(env, (dir + "/" + s.name).c_str(), MDB_RDONLY, 0644), "lmdb");
    MDB_txn* txn = nullptr;
    EVL_CHECK(0 == mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), "lmdb");
    MDB_dbi dbi;
    EVL_CHECK(0 == mdb_dbi_open(txn, nullptr, 0, &dbi), "lmdb");
    MDB_cursor* cur = nullptr;
    EVL_CHECK(0 == mdb_cursor_open(txn, dbi, &cur), "lmdb");
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
      out[std::string(static_cast<char*>(k.mv_data), k.mv_size)] =
          std::string(static_cast<char*>(v.mv_data), v.mv_size);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
  }
  return out;
}

// An fp16 array's values through the compiler's binary16 (not evl's converter).
std::vector<float> fp16_values(const Array& a) {
  std::vector<float> v(static_cast<size_t>(a.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, a.bytes.data() + 2 * i, 2);
    v[i] = static_cast<float>(half_value(h));
  }
  return v;
}

std::vector<float> f32_values(const Array& a) {
  std::vector<float> v(static_cast<size_t>(a.numel()));
  std::memcpy(v.data(), a.bytes.data(), v.size() * 4);
  return v;
}

// The smallest binary16 >= f (f >= 0, finite), as bits.
uint16_t half_at_least(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return half_value(b) < f ? static_cast<uint16_t>(b + 1) : b;
}

// FORMAT.md "How evl writes them" for int8, in the test's own words: outlier
// channels (reference_outliers: median 3+ binades above the typical channel's)
// get center m = the nearest fp16 to (min + max) / 2 over the slice and column
// scale s = the smallest fp16 >= max |x - m| over the slice / 127; per group of
// 64 channels s = the smallest fp16 >= amax of the other channels / 127
// (float32 quotient); codes round-half-even((x - m) / s) in [-127, 127] with the
// channel's scale and center (m = 0 in a group); an all-zero group gets s = 0
// (codes 0).
void expect_int8_of(const Array& a, const std::vector<float>& x, const std::string& what) {
  ASSERT_EQ(a.dtype, DType::kI8) << what;
  const evl::test::QuantParts p = evl::test::split_quantized(a.dtype, a.shape, a.bytes.data());
  ASSERT_EQ(p.rows * p.width, static_cast<int64_t>(x.size())) << what;
  const std::vector<bool> outlier = evl::test::reference_outliers(a.shape, x.data());
  auto is_outlier = [&](int64_t r, int64_t c) {
    return outlier[static_cast<size_t>(r / p.slice_rows * p.width + c)];
  };
  for (int64_t s = 0; s < p.slices; ++s)
    for (int64_t c = 0; c < p.width; ++c) {
      const size_t at = static_cast<size_t>(s * p.width + c);
      if (!is_outlier(s * p.slice_rows, c)) {
        ASSERT_EQ(p.cols[at], 0) << what << " slice " << s << " channel " << c;
        ASSERT_EQ(p.mids[at], 0) << what << " slice " << s << " channel " << c;
        continue;
      }
      float lo = x[static_cast<size_t>(s * p.slice_rows * p.width + c)], hi = lo;
      for (int64_t r = s * p.slice_rows; r < (s + 1) * p.slice_rows; ++r) {
        lo = std::min(lo, x[static_cast<size_t>(r * p.width + c)]);
        hi = std::max(hi, x[static_cast<size_t>(r * p.width + c)]);
      }
      const auto m = static_cast<_Float16>(0.5f * lo + 0.5f * hi);  // float32 sum, then fp16
      uint16_t want_m;
      std::memcpy(&want_m, &m, 2);
      ASSERT_EQ(p.mids[at], want_m) << what << " slice " << s << " channel " << c;
      float amax = 0;
      for (int64_t r = s * p.slice_rows; r < (s + 1) * p.slice_rows; ++r)
        amax = std::max(amax,
                        std::fabs(x[static_cast<size_t>(r * p.width + c)] - static_cast<float>(m)));
      ASSERT_EQ(p.cols[at], amax == 0 ? 0 : half_at_least(amax / 127.0f))
          << what << " slice " << s << " channel " << c;
    }
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t c0 = g * 64, c1 = std::min(p.width, c0 + 64);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c)
        if (!is_outlier(r, c)) amax = std::max(amax, std::fabs(x[r * p.width + c]));
      const uint16_t want_s = amax == 0 ? 0 : half_at_least(amax / 127.0f);
      ASSERT_EQ(p.scales[r * p.groups + g], want_s) << what << " row " << r << " group " << g;
      for (int64_t c = c0; c < c1; ++c) {
        const size_t i = static_cast<size_t>(r * p.width + c);
        const auto s = static_cast<float>(p.scale(r, c));
        const auto m = static_cast<float>(p.center(r, c));
        const float q = s == 0 ? 0.0f : std::nearbyint((x[i] - m) / s);
        const auto want = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
        ASSERT_EQ(static_cast<int8_t>(p.codes[i]), want) << what << " value " << i;
      }
    }
}

// Brute force in double: layer_norm(x) @ W^T + b per row of C, and the sum of
// magnitudes that scales float32's rounding of it.
std::vector<double> reference_proj(const Record& w, int64_t block, const char* which,
                                   const float* x, size_t rows, std::vector<double>& mag) {
  auto data = [&](const std::string& name) {
    return reinterpret_cast<const float*>(w.array(name + "." + std::to_string(block)).bytes.data());
  };
  const float *g = data("ln_1.weight"), *bb = data("ln_1.bias");
  const float *W = data(std::string(which) + "_proj.weight"),
              *b = data(std::string(which) + "_proj.bias");
  std::vector<double> y(rows * kC);
  mag.assign(rows * kC, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < kC; ++c) mean += x[r * kC + c] / double(kC);
    for (int c = 0; c < kC; ++c) var += std::pow(x[r * kC + c] - mean, 2) / double(kC);
    std::vector<double> n(kC);
    for (int c = 0; c < kC; ++c)
      n[c] = (x[r * kC + c] - mean) / std::sqrt(var + 1e-5) * g[c] + bb[c];
    for (int o = 0; o < kC; ++o) {
      double acc = b[o], m = std::fabs(b[o]);
      for (int c = 0; c < kC; ++c) {
        acc += n[c] * W[o * kC + c];
        m += std::fabs(n[c] * W[o * kC + c]);
      }
      y[r * kC + o] = acc;
      mag[r * kC + o] = m;
    }
  }
  return y;
}

ConvertOptions options(const std::string& in, const std::string& out, DType dtype,
                       std::optional<StorageMode> storage = std::nullopt, int threads = 1) {
  ConvertOptions o;
  o.in = in;
  o.out = out;
  o.dtype = dtype;
  o.storage = storage;
  o.threads = threads;
  return o;
}

// The UsageError convert_cache throws ("<no error>" when it succeeds).
std::string usage_error(const ConvertOptions& o) {
  try {
    convert_cache(o);
  } catch (const evl::UsageError& e) {
    return e.what();
  }
  return "<no usage error>";
}

void expect_contains(const std::string& text, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << p << " in: " << text;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

TEST(Convert, Fp16ToInt8IsTheSpecQuantizationOfTheDecodedSource) {
  TempDir dir("convert_int8");
  const std::string in = dir / "fp16", out = dir / "int8";
  write_source(in, manifest(StorageMode::kQK, DType::kF16, /*inputs=*/true), {2, 1});
  const Manifest src = Manifest::load(in);
  const ConvertSummary s = convert_cache(options(in, out, DType::kI8));
  EXPECT_EQ(s.records, 6);
  EXPECT_EQ(s.converted, 6);
  EXPECT_EQ(s.failed, 0);
  EXPECT_FALSE(s.interrupted);
  EXPECT_EQ(evl::test::slurp(out + "/failures.tsv"), "");

  const CacheReader source(in), converted(out);
  ASSERT_EQ(converted.size(), 6);
  EXPECT_EQ(converted.keys(), source.keys());
  for (int64_t i = 0; i < converted.size(); ++i) {
    const Record a = source.get(i), b = converted.get(i);
    EXPECT_EQ(b.video_id, a.video_id);
    EXPECT_EQ(b.label, a.label);
    EXPECT_EQ(b.view, a.view);
    EXPECT_EQ(b.clip_index, a.clip_index);
    EXPECT_EQ(b.view_index, a.view_index);
    for (const char* name : {"x", "q", "k"}) {
      EXPECT_EQ(b.array(name).shape, a.array(name).shape);
      expect_int8_of(b.array(name), fp16_values(a.array(name)), b.key + " " + name);
    }
    EXPECT_EQ(b.array("inputs").dtype, DType::kF32);
    EXPECT_EQ(b.array("inputs").bytes, a.array("inputs").bytes);  // copied unchanged
  }
  // Provenance: the source's, re-encoded, with the conversion recorded.
  const Manifest m = converted.manifest();
  EXPECT_EQ(m.dtype, DType::kI8);
  EXPECT_EQ(m.storage, StorageMode::kQK);
  EXPECT_EQ(m.format_version, kFormatVersion);
  EXPECT_NO_THROW(
      check_matches(src, m, "converted",
                    {"backbone.hash", "layers", "has_inputs", "seed", "list_file", "num_clips"}));
  EXPECT_EQ(m.shards[0].records, 4);
  EXPECT_EQ(m.shards[1].records, 2);
  ASSERT_EQ(m.conversions.size(), 1u);
  EXPECT_EQ(m.conversions[0].from, fs::canonical(in).string());
  EXPECT_EQ(m.conversions[0].from_dtype, DType::kF16);
  EXPECT_EQ(m.conversions[0].from_storage, StorageMode::kQK);
  EXPECT_EQ(m.conversions[0].from_format_version, kFormatVersion);
  EXPECT_EQ(m.conversions[0].created, m.created);
  EXPECT_TRUE(verify_cache(out).ok());
}

TEST(Convert, Fp16ToFp8IsWithinTheSchemeBoundAndCompactKeepsItsWeights) {
  TempDir dir("convert_fp8");
  const std::string in = dir / "fp16", out = dir / "fp8";
  write_source(in, manifest(StorageMode::kCompact, DType::kF16), {3});
  convert_cache(options(in, out, DType::kFP8, std::nullopt, 2));
  EXPECT_EQ(evl::test::slurp(out + "/qk_weights.evl"), evl::test::slurp(in + "/qk_weights.evl"));
  const CacheReader source(in), converted(out);
  EXPECT_EQ(converted.manifest().storage, StorageMode::kCompact);
  ASSERT_EQ(converted.size(), 6);
  for (int64_t i = 0; i < converted.size(); ++i) {
    const Record ra = source.get(i), rb = converted.get(i);
    const Array &a = ra.array("x"), &b = rb.array("x");
    EXPECT_EQ(b.dtype, DType::kFP8);
    EXPECT_EQ(b.shape, (std::vector<int64_t>{3, 3, 5, kC}));  // M+1 blocks, as the source
    EXPECT_EQ(evl::test::check_within_bound(b, fp16_values(a).data()), "") << i;
  }
  EXPECT_TRUE(verify_cache(out).ok());
}

TEST(Convert, Fp32ToFp16RoundsToNearestEven) {
  TempDir dir("convert_fp16");
  const std::string in = dir / "fp32", out = dir / "fp16";
  write_source(in, manifest(StorageMode::kQK, DType::kF32), {2});
  convert_cache(options(in, out, DType::kF16));
  const CacheReader source(in), converted(out);
  for (int64_t i = 0; i < converted.size(); ++i)
    for (const char* name : {"x", "q", "k"}) {
      const Record ra = source.get(i), rb = converted.get(i);
      const Array &a = ra.array(name), &b = rb.array(name);
      ASSERT_EQ(b.dtype, DType::kF16);
      const std::vector<float> x = f32_values(a);
      for (size_t j = 0; j < x.size(); ++j) {
        const _Float16 h = static_cast<_Float16>(x[j]);
        ASSERT_EQ(std::memcmp(b.bytes.data() + 2 * j, &h, 2), 0) << name << " " << j;
      }
    }
}

TEST(Convert, CompactToQkRecomputesQkFromEachBlocksInput) {
  TempDir dir("convert_qk");
  const std::string in = dir / "compact", out = dir / "qk";
  write_source(in, manifest(StorageMode::kCompact, DType::kF32, /*inputs=*/true), {2});
  convert_cache(options(in, out, DType::kF32, StorageMode::kQK, 3));
  EXPECT_FALSE(fs::exists(out + "/qk_weights.evl"));
  const Record w = make_weights();
  const CacheReader source(in), converted(out);
  EXPECT_EQ(converted.manifest().storage, StorageMode::kQK);
  EXPECT_EQ(converted.manifest().conversions.at(0).from_storage, StorageMode::kCompact);
  const int64_t T = 3, L = 5, per = T * L * kC;
  const double u = std::ldexp(1.0, -24), per_mag = (kC + 8) * u;  // as tests/cache/compact_test
  for (int64_t i = 0; i < converted.size(); ++i) {
    const Record a = source.get(i), b = converted.get(i);
    const std::vector<float> xs = f32_values(a.array("x"));  // (3, T, L, C): blocks 1, 2, 3
    for (const char* name : {"x", "q", "k"})
      EXPECT_EQ(b.array(name).shape, (std::vector<int64_t>{2, T, L, kC})) << name;
    // x loses its first entry (the input of block 2, the first decoder block).
    EXPECT_EQ(f32_values(b.array("x")), std::vector<float>(xs.begin() + per, xs.end()));
    for (const char* name : {"q", "k"}) {
      const std::vector<float> got = f32_values(b.array(name));
      for (int64_t l = 0; l < 2; ++l) {
        std::vector<double> mag;
        const auto want = reference_proj(w, 2 + l, name, xs.data() + l * per, T * L, mag);
        for (int64_t j = 0; j < per; ++j)
          ASSERT_NEAR(got[l * per + j], want[j], per_mag * mag[j])
              << name << " of layer " << l << " value " << j;
      }
    }
    EXPECT_EQ(b.array("inputs").bytes, a.array("inputs").bytes);
  }
  EXPECT_TRUE(verify_cache(out).ok());
}

TEST(Convert, RefusesWhatItCannotOrShouldNotDo) {
  TempDir dir("convert_refuse");
  const std::string fp16 = dir / "fp16", int8 = dir / "int8", qk = dir / "qk";
  write_source(fp16, manifest(StorageMode::kCompact, DType::kF16), {1});
  write_source(qk, manifest(StorageMode::kQK, DType::kF16), {1});
  // A lossy -> wider "upgrade" only with --force.
  convert_cache(options(fp16, int8, DType::kI8));
  expect_contains(usage_error(options(int8, dir / "back", DType::kF16)),
                  {"int8 -> fp16", "adds bytes but no precision", "--force"});
  expect_contains(usage_error(options(fp16, dir / "f32", DType::kF32)), {"fp16 -> fp32"});
  ConvertOptions forced = options(int8, dir / "back", DType::kF16);
  forced.force = true;
  EXPECT_EQ(convert_cache(forced).converted, 2);
  EXPECT_EQ(Manifest::load(dir / "back").conversions.size(), 2u);  // a conversion appends
  EXPECT_EQ(Manifest::load(dir / "back").conversions[1].from_dtype, DType::kI8);
  // Same rank (fp16 -> bf16) and downgrades need no --force.
  EXPECT_EQ(convert_cache(options(fp16, dir / "bf16", DType::kBF16)).converted, 2);
  // qk -> compact: the first decoder block's input is not in a qk cache.
  expect_contains(usage_error(options(qk, dir / "c", DType::kF16, StorageMode::kCompact)),
                  {"qk cache cannot be made compact", "input of the first decoder block",
                   "evl_extract --store compact"});
  expect_contains(usage_error(options(qk, dir / "c", DType::kI8, StorageMode::kCompact)),
                  {"evl_extract --store compact"});
  EXPECT_FALSE(fs::exists(dir / "c"));
  expect_contains(usage_error(options(fp16, dir / "same", DType::kF16)), {"nothing to convert"});
  forced = options(fp16, dir / "same", DType::kF16, StorageMode::kCompact);
  forced.force = true;
  expect_contains(usage_error(forced), {"nothing to convert"});
  // Into the source itself, however spelled.
  expect_contains(usage_error(options(fp16, fp16, DType::kI8)), {"is the input cache"});
  expect_contains(usage_error(options(fp16, fp16 + "/../fp16/.", DType::kI8)),
                  {"is the input cache"});
  // Into a non-empty directory that is not a conversion.
  expect_contains(usage_error(options(fp16, qk, DType::kI8)),
                  {"'conversions'", "another directory"});
  fs::create_directories(dir / "junk");
  evl::test::write_text(dir / "junk/notes.txt", "x");
  expect_contains(usage_error(options(fp16, dir / "junk", DType::kI8)), {"not empty"});
  EXPECT_EQ(precision_rank(DType::kFP8), 0);
  EXPECT_LT(precision_rank(DType::kI8), precision_rank(DType::kBF16));
  EXPECT_EQ(precision_rank(DType::kBF16), precision_rank(DType::kF16));
  EXPECT_LT(precision_rank(DType::kF16), precision_rank(DType::kF32));
}

TEST(Convert, ResumeAndThreadsGiveTheBytesOfAnUninterruptedSerialRun) {
  TempDir dir("convert_resume");
  const std::string in = dir / "compact", serial = dir / "serial", resumed = dir / "resumed";
  write_source(in, manifest(StorageMode::kCompact, DType::kF16, true), {3, 2});  // 6 + 4 records
  convert_cache(options(in, serial, DType::kI8, StorageMode::kQK, 1));
  const auto want = raw_records(serial);
  ASSERT_EQ(want.size(), 10u);

  // Interrupted after the first group of 4 records (2 threads): committed, counts 0.
  std::atomic<bool> stop{false};
  const ConvertSummary first = convert_cache(options(in, resumed, DType::kI8, StorageMode::kQK, 2),
                                             &stop, [&](int64_t done) { stop = done >= 3; });
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.converted, 4);
  const Manifest partial = Manifest::load(resumed);
  EXPECT_EQ(partial.shards[0].records, 0);
  EXPECT_EQ(partial.shards[1].records, 0);
  expect_contains(evl::test::error_of([&] { CacheReader r(resumed); }), {"the manifest says 0"});
  EXPECT_FALSE(verify_cache(resumed).ok());
  EXPECT_EQ(raw_records(resumed).size(), 4u);
  // A committed record that no longer verifies (a flipped byte) is redone, not skipped.
  std::string flipped = raw_records(resumed).at(make_key(1, 0));
  flipped[200] ^= 0x5a;
  poke(resumed + "/" + shard_name(0, 2), make_key(1, 0), {flipped.begin(), flipped.end()});

  // A rerun with other settings or another source refuses, naming the field.
  expect_contains(usage_error(options(in, resumed, DType::kFP8, StorageMode::kQK)),
                  {"'dtype'", "rerun that command"});
  expect_contains(usage_error(options(in, resumed, DType::kI8)), {"'storage'"});
  const std::string copy = dir / "copy";
  fs::copy(in, copy, fs::copy_options::recursive);
  expect_contains(usage_error(options(copy, resumed, DType::kI8, StorageMode::kQK)),
                  {"'conversions[-1].from'", fs::canonical(in).string()});

  const ConvertSummary second =
      convert_cache(options(in, resumed, DType::kI8, StorageMode::kQK, 3));
  EXPECT_FALSE(second.interrupted);
  EXPECT_EQ(second.skipped, 3);
  EXPECT_EQ(second.converted, 7);
  EXPECT_EQ(raw_records(resumed), want);
  const Manifest done = Manifest::load(resumed);
  EXPECT_EQ(done.shards[0].records, 6);
  EXPECT_EQ(done.shards[1].records, 4);
  EXPECT_EQ(done.conversions.size(), 1u);
  EXPECT_TRUE(verify_cache(resumed).ok());
  // Complete: a third run has nothing left to do.
  EXPECT_EQ(convert_cache(options(in, resumed, DType::kI8, StorageMode::kQK)).skipped, 10);
}

TEST(Convert, MergeOfConvertedPartsKeepsTheFirstsConversions) {
  TempDir dir("convert_merge");
  Manifest m = manifest(StorageMode::kQK, DType::kF16);
  m.num_clips = 4;
  write_cache(dir / "a16", m, 0, 2, shard_name(0, 2));
  write_cache(dir / "b16", m, 2, 2, shard_name(1, 2));
  write_cache(dir / "b8", manifest(StorageMode::kQK, DType::kI8), 2, 2, shard_name(1, 2));
  convert_cache(options(dir / "a16", dir / "a8", DType::kI8));
  convert_cache(options(dir / "b16", dir / "b8c", DType::kI8));
  merge_caches(dir / "merged", {dir / "a8", dir / "b8c"});
  const CacheReader reader(dir / "merged");
  EXPECT_EQ(reader.size(), 8);
  ASSERT_EQ(reader.manifest().conversions.size(), 1u);
  EXPECT_EQ(reader.manifest().conversions[0].from, fs::canonical(dir / "a16").string());
  EXPECT_TRUE(verify_cache(dir / "merged").ok());
  // A converted int8 part and an extracted int8 part hold differently rounded values.
  expect_contains(evl::test::error_of([&] {
                    merge_caches(dir / "mixed", {dir / "a8", dir / "b8"});
                  }),
                  {"'conversions'"});
}

TEST(Convert, UnstorableAndCorruptRecordsAreListedAndTheRestConverted) {
  TempDir dir("convert_fail");
  const std::string in = dir / "fp32", out = dir / "int8";
  write_source(in, manifest(StorageMode::kQK, DType::kF32), {4}, [](Record& r) {
    auto poison = [&](const std::string& name, size_t at, float v) {
      for (auto& [n, a] : r.arrays)
        if (n == name) std::memcpy(a.bytes.data() + 4 * at, &v, 4);
    };
    if (r.key == make_key(0, 1)) poison("x", 3, std::numeric_limits<float>::quiet_NaN());
    if (r.key == make_key(2, 0)) poison("k", 3 * 5 * kC + 7, 1e9f);  // block 3 of k
  });
  // A record whose bytes no longer match its checksum.
  std::string bad = raw_records(in).at(make_key(3, 1));
  bad[bad.size() / 2] ^= 1;
  poke(in + "/" + shard_name(0, 1), make_key(3, 1), {bad.begin(), bad.end()});

  const ConvertSummary s = convert_cache(options(in, out, DType::kI8, std::nullopt, 2));
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(s.converted, 5);
  const std::string tsv = evl::test::slurp(s.failures_file);
  EXPECT_EQ(s.failures_file, out + "/failures.tsv");
  EXPECT_EQ(tsv.rfind("videos/clip_0.mp4\t0000000000/001\tnon-finite features (1 NaN, 0 inf", 0),
            0u)
      << tsv;
  expect_contains(tsv, {"int8 storage cannot represent them (x of block 2)\n",
                        "videos/clip_2.mp4\t0000000002/000\tfeatures out of range",
                        "(k of block 3)\n", "-\t0000000003/001\tcache shard '", "checksum"});
  EXPECT_EQ(std::count(tsv.begin(), tsv.end(), '\n'), 3);
  // The rest is a complete cache of the records that could be stored.
  const CacheReader reader(out);
  EXPECT_EQ(reader.size(), 5);
  EXPECT_EQ(reader.index_of(make_key(0, 1)), -1);
  EXPECT_TRUE(verify_cache(out).ok());
  // A rerun retries them and lists them again, once.
  const ConvertSummary again = convert_cache(options(in, out, DType::kI8));
  EXPECT_EQ(again.skipped, 5);
  EXPECT_EQ(again.failed, 3);
  EXPECT_EQ(evl::test::slurp(out + "/failures.tsv"), tsv);
}

TEST(Convert, ToolFlagsAndExitCodes) {
  TempDir dir("convert_tool");
  const std::string in = dir / "fp16", tool = evl::test::tool("evl_cache");
  write_source(in, manifest(StorageMode::kCompact, DType::kF16), {2});
  auto run = [&](const std::string& args) {
    return evl::test::run(quoted(tool) + " " + args, dir.path());
  };
  const auto help = run("--help");
  EXPECT_EQ(help.code, 0);
  expect_contains(help.out, {"convert IN OUT --dtype", "--store", "--force", "--threads"});

  const auto ok = run("convert " + quoted(in) + " " + quoted(dir / "int8") +
                      " --dtype int8 --store qk --threads 2");
  EXPECT_EQ(ok.code, 0) << ok.err;
  expect_contains(ok.out, {"converted 4 records", "0 failed"});
  EXPECT_EQ(run("verify " + quoted(dir / "int8")).code, 0);
  expect_contains(run("info " + quoted(dir / "int8")).out,
                  {"qk, int8", "converted ", "from fp16 compact"});
  // Rerun: resumes, nothing to do.
  const auto again =
      run("convert " + quoted(in) + " " + quoted(dir / "int8") + " --dtype int8 --store qk");
  EXPECT_EQ(again.code, 0) << again.err;
  expect_contains(again.out, {"converted 0 records, skipped 4"});

  for (const std::string& args :
       {"convert " + quoted(in) + " " + quoted(dir / "x"),  // no --dtype
        "convert " + quoted(in) + " --dtype int8",          // no OUT
        "convert " + quoted(in) + " " + quoted(dir / "x") + " --dtype int4",
        "convert " + quoted(in) + " " + quoted(dir / "x") + " --dtype int8 --store packed",
        "convert " + quoted(in) + " " + quoted(dir / "x") + " --dtype fp32",  // upgrade
        "convert " + quoted(dir / "int8") + " " + quoted(dir / "x") +
            " --dtype int8 --store compact"}) {
    const auto r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  }
  EXPECT_FALSE(fs::exists(dir / "x"));
  const auto forced =
      run("convert " + quoted(in) + " " + quoted(dir / "x") + " --dtype fp32 --force");
  EXPECT_EQ(forced.code, 0) << forced.err;
  EXPECT_EQ(run("convert " + quoted(dir / "nope") + " " + quoted(dir / "y") + " --dtype int8").code,
            1);

  // Some records cannot be stored: exit 3, the failures listed.
  const std::string nan = dir / "nan";
  write_source(nan, manifest(StorageMode::kQK, DType::kF32), {2}, [](Record& r) {
    const float v = std::numeric_limits<float>::infinity();
    for (auto& [name, a] : r.arrays)
      if (r.key == make_key(1, 1) && name == "q") std::memcpy(a.bytes.data(), &v, 4);
  });
  const auto failed = run("convert " + quoted(nan) + " " + quoted(dir / "nan8") + " --dtype fp8");
  EXPECT_EQ(failed.code, 3) << failed.err;
  expect_contains(failed.out, {"1 failed", "failures.tsv"});
  expect_contains(evl::test::slurp(dir / "nan8/failures.tsv"),
                  {"0000000001/001\tnon-finite features (0 NaN, 1 inf", "(q of block 2)"});
  EXPECT_EQ(run("verify " + quoted(dir / "nan8")).code, 0);
}
