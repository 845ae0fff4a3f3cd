// The loader (train/cached_dataset.h) on int8/fp8 caches, in both storage
// modes: every batch must equal, bit for bit, the batch of a float32 cache
// holding the values FORMAT.md's decode gives for the stored codes and scales
// (tests/support/quant_reference.h, not evl's dequantizer), so compact mode
// recomputes Q/K from the dequantized X exactly as from any other dtype; and
// those values must lie within the scheme's bound of the features written. A
// cache converted by evl_cache convert loads as its source, within that bound.
#include "train/cached_dataset.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "cache/convert.h"
#include "common/check.h"
#include "tests/support/quant_reference.h"
#include "tests/support/test_support.h"

namespace evl {
namespace {

namespace fs = std::filesystem;
using cache::DType;
using cache::StorageMode;

constexpr int64_t kC = 160;  // groups of 64, 64 and 32 channels

std::vector<float> lcg_values(uint64_t seed, size_t n, float scale) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& x : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x = scale * static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return v;
}

// 3 decoder layers (blocks 4, 5, 6), T=2, grid 2 (L=5), C=160.
cache::Manifest manifest(StorageMode storage, DType dtype) {
  cache::Manifest m;
  m.tool_version = "test";
  m.created = "2026-01-01T00:00:00Z";
  m.backbone = {"tiny.pt", "0123", "openai-torchscript", kC, 8, 2, 16, 2, 32};
  m.layers = {4, 5, 6};
  m.storage = storage;
  m.dtype = dtype;
  m.frames = 2;
  m.stride = 2;
  m.temporal_views = 2;
  m.spatial_views = 1;
  m.mean = {0.5, 0.5, 0.5};
  m.std = {0.25, 0.25, 0.25};
  m.list_file = "list.txt";
  return m;
}

// Features with an outlier channel (100x) in some tokens, a zero group in
// others, and all-zero tokens.
std::vector<float> features(const std::vector<int64_t>& shape, uint64_t seed) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  auto v = lcg_values(seed, static_cast<size_t>(n), 3.0f);
  for (int64_t row = 0; row < n / kC; ++row) {
    float* p = v.data() + row * kC;
    if (row % 5 == 0) p[(row * 13) % kC] *= 100.0f;
    if (row % 5 == 1)
      for (int64_t c = 64; c < 128; ++c) p[c] = 0.0f;
    if (row % 5 == 2)
      for (int64_t c = 0; c < kC; ++c) p[c] = 0.0f;
  }
  return v;
}

void save_weights(const std::string& dir) {
  cache::Record w;
  w.key = "qk_weights";
  for (const int b : {4, 5, 6}) {
    const std::string s = "." + std::to_string(b);
    auto f32 = [](std::vector<int64_t> shape, const std::vector<float>& v) {
      return cache::make_array(DType::kF32, std::move(shape), v.data(), v.size());
    };
    auto g = lcg_values(10 + b, kC, 0.2f);
    for (auto& x : g) x += 1.0f;
    w.arrays.emplace_back("ln_1.weight" + s, f32({kC}, g));
    w.arrays.emplace_back("ln_1.bias" + s, f32({kC}, lcg_values(20 + b, kC, 0.1f)));
    w.arrays.emplace_back("q_proj.weight" + s, f32({kC, kC}, lcg_values(30 + b, kC * kC, 0.1f)));
    w.arrays.emplace_back("q_proj.bias" + s, f32({kC}, lcg_values(40 + b, kC, 0.5f)));
    w.arrays.emplace_back("k_proj.weight" + s, f32({kC, kC}, lcg_values(50 + b, kC * kC, 0.1f)));
    w.arrays.emplace_back("k_proj.bias" + s, f32({kC}, lcg_values(60 + b, kC, 0.5f)));
  }
  cache::save_qk_weights(dir, w);
}

// Writes the quantized cache `qdir` and its float32 twin `fdir` (the reference
// decode of every stored array). Returns the number of records.
int64_t write_caches(const cache::Manifest& m, const std::string& qdir, const std::string& fdir) {
  cache::Manifest mf = m;
  mf.dtype = DType::kF32;
  const std::string shard = "features-00000-of-00001";
  int64_t n = 0;
  {
    cache::ShardWriter wq(qdir + "/" + shard), wf(fdir + "/" + shard);
    for (int64_t clip = 0; clip < 3; ++clip)
      for (int32_t view = 0; view < 2; ++view, ++n) {
        cache::Record rq, rf;
        rq.key = rf.key = cache::make_key(clip, view);
        rq.video_id = rf.video_id = "v" + std::to_string(clip);
        rq.label = rf.label = clip;
        rq.clip_index = rf.clip_index = clip;
        rq.view_index = rf.view_index = view;
        uint64_t salt = 0;
        for (const auto& [name, shape] : cache::expected_arrays(m)) {
          const auto x = features(shape, static_cast<uint64_t>(n * 10) + salt++);
          cache::Array a = cache::make_array(m.dtype, shape, x.data(), x.size());
          EXPECT_EQ(test::check_within_bound(a, x.data()), "") << rq.key << " " << name;
          const auto back = test::reference_dequantize(a);
          rf.arrays.emplace_back(name,
                                 cache::make_array(DType::kF32, shape, back.data(), back.size()));
          rq.arrays.emplace_back(name, std::move(a));
        }
        wq.put(rq);
        wf.put(rf);
      }
  }
  for (auto [dir, man] : {std::pair{qdir, m}, std::pair{fdir, mf}}) {
    man.shards = {{shard, n}};
    man.num_clips = 3;
    man.save(dir);
    if (m.storage == StorageMode::kCompact) save_weights(dir);
  }
  return n;
}

class QuantizedLoader : public testing::TestWithParam<std::tuple<StorageMode, DType>> {};

TEST_P(QuantizedLoader, BatchesAreTheDequantizedValues) {
  const auto [storage, dtype] = GetParam();
  test::TempDir dir("quant_loader");
  const cache::Manifest m = manifest(storage, dtype);
  const std::string qdir = dir / "q", fdir = dir / "f";
  const int64_t n = write_caches(m, qdir, fdir);
  for (const int64_t decoder_layers : {0, 2}) {  // all three, or the last two (an offset)
    SCOPED_TRACE("decoder layers " + std::to_string(decoder_layers));
    const CachedDataset quantized(qdir, decoder_layers), reference(fdir, decoder_layers);
    EXPECT_EQ(quantized.manifest().dtype, dtype);
    std::vector<int64_t> items = {4, 0, 5, 2};
    const FeatureBatch a = quantized.load(items), b = reference.load(items);
    ASSERT_EQ(a.x.size(), decoder_layers ? 2u : 3u);
    EXPECT_TRUE(torch::equal(a.labels, b.labels));
    for (size_t i = 0; i < a.x.size(); ++i) {
      EXPECT_TRUE(torch::equal(a.x[i], b.x[i])) << "x of layer " << i;
      EXPECT_TRUE(torch::equal(a.q[i], b.q[i])) << "q of layer " << i;
      EXPECT_TRUE(torch::equal(a.k[i], b.k[i])) << "k of layer " << i;
      EXPECT_EQ(a.x[i].scalar_type(), torch::kFloat);
    }
    // The evaluator's path (records copied out of the map) gives the same batch.
    std::vector<cache::Record> records;
    for (const int64_t i : items) records.push_back(quantized.reader().get(i));
    const FeatureBatch c = quantized.converter().convert(records);
    for (size_t i = 0; i < a.x.size(); ++i) {
      EXPECT_TRUE(torch::equal(c.x[i], a.x[i]));
      EXPECT_TRUE(torch::equal(c.q[i], a.q[i]));
    }
    // Storage is smaller than the float32 twin: 1-byte codes + fp16 scales, + per
    // slice an fp16 column scale and center per channel (4 C bytes per slice of
    // T L = 10 rows here: 40% of the codes; of a ViT-B/16 record's 1576, 0.25%).
    EXPECT_LT(quantized.bytes_read() * 2, reference.bytes_read()) << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Int8AndFp8, QuantizedLoader,
                         testing::Combine(testing::Values(StorageMode::kQK, StorageMode::kCompact),
                                          testing::Values(DType::kI8, DType::kFP8)),
                         [](const auto& param_info) {
                           return cache::to_string(std::get<0>(param_info.param)) + "_" +
                                  cache::to_string(std::get<1>(param_info.param));
                         });

// A cache made by `evl_cache convert` (compact fp16 -> qk int8) loads like any
// other, and its batches are the source cache's batches within the int8 bound of
// each group's stored scale: X directly, Q/K (recomputed by convert with
// compute_qk, by the source's loader with LibTorch) plus float32 noise far below it.
TEST(ConvertedCache, LoadsAsTheSourceWithinEachGroupsBound) {
  test::TempDir dir("converted_loader");
  const std::string in = dir / "compact16", out = dir / "qk8";
  cache::Manifest m = manifest(StorageMode::kCompact, DType::kF16);
  {
    cache::ShardWriter w(in + "/features-00000-of-00001");
    for (int64_t clip = 0; clip < 2; ++clip)
      for (int32_t view = 0; view < 2; ++view) {
        cache::Record r;
        r.key = cache::make_key(clip, view);
        r.video_id = "v" + std::to_string(clip);
        r.label = clip;
        r.clip_index = clip;
        r.view_index = view;
        const auto [name, shape] = cache::expected_arrays(m)[0];
        const auto x = features(shape, static_cast<uint64_t>(clip * 2 + view));
        r.arrays.emplace_back(name, cache::make_array(DType::kF16, shape, x.data(), x.size()));
        w.put(r);
      }
  }
  m.shards = {{"features-00000-of-00001", 4}};
  m.num_clips = 2;
  m.save(in);
  save_weights(in);
  cache::ConvertOptions o;
  o.in = in;
  o.out = out;
  o.dtype = DType::kI8;
  o.storage = StorageMode::kQK;
  EXPECT_EQ(cache::convert_cache(o).converted, 4);

  const CachedDataset source(in, 0), converted(out, 0);
  EXPECT_EQ(converted.manifest().storage, StorageMode::kQK);
  const std::vector<int64_t> items = {3, 0, 2};
  const FeatureBatch a = source.load(items), b = converted.load(items);
  EXPECT_TRUE(torch::equal(a.labels, b.labels));
  ASSERT_EQ(b.x.size(), 3u);
  for (size_t row = 0; row < items.size(); ++row) {
    const cache::Record rec = converted.reader().get(items[row]);
    for (const auto& [name, got, want] :
         {std::tuple{"x", &b.x, &a.x}, std::tuple{"q", &b.q, &a.q}, std::tuple{"k", &b.k, &a.k}}) {
      const test::QuantParts p = test::split_quantized(rec.array(name).dtype, rec.array(name).shape,
                                                       rec.array(name).bytes.data());
      const int64_t per = p.rows / 3;  // token rows per layer
      for (int64_t layer = 0; layer < 3; ++layer) {
        const torch::Tensor g = (*got)[layer][static_cast<int64_t>(row)].reshape({-1, kC});
        const torch::Tensor w = (*want)[layer][static_cast<int64_t>(row)].reshape({-1, kC});
        const auto ga = g.accessor<float, 2>(), wa = w.accessor<float, 2>();
        for (int64_t t = 0; t < per; ++t)
          for (int64_t c = 0; c < kC; ++c) {
            const double s = p.scale(layer * per + t, c), v = wa[t][c];
            const double bound =
                test::scheme_bound(DType::kI8, v, s, p.center(layer * per + t, c)) + 0.05 * s;
            ASSERT_LE(std::fabs(ga[t][c] - v), bound)
                << name << " layer " << layer << " token " << t << " channel " << c;
          }
      }
    }
  }
}

// load() reuses the memory of a batch its caller has dropped, never of one
// still referenced: every batch equals a fresh dataset's batch of the same items.
TEST(CachedDatasetLoad, ReusesOnlyTheMemoryOfADroppedBatch) {
  test::TempDir dir("reuse");
  const cache::Manifest m = manifest(StorageMode::kQK, DType::kI8);
  write_caches(m, dir / "q", dir / "f");
  const CachedDataset data(dir / "q", 0);
  auto fresh = [&](const std::vector<int64_t>& items) {  // the reference: a new dataset
    return CachedDataset(dir / "q", 0).load(items);
  };
  auto expect_equal = [](const FeatureBatch& a, const FeatureBatch& b) {
    EXPECT_TRUE(torch::equal(a.labels, b.labels));
    EXPECT_EQ(a.clip_index, b.clip_index);
    for (size_t i = 0; i < b.x.size(); ++i) {
      EXPECT_TRUE(torch::equal(a.x[i], b.x[i]));
      EXPECT_TRUE(torch::equal(a.q[i], b.q[i]));
      EXPECT_TRUE(torch::equal(a.k[i], b.k[i]));
    }
  };
  FeatureBatch a = data.load({0, 1});
  FeatureBatch b = data.load({4, 5});  // `a` is held: fresh memory
  EXPECT_NE(a.x[0].data_ptr(), b.x[0].data_ptr());
  expect_equal(a, fresh({0, 1}));
  expect_equal(b, fresh({4, 5}));

  void* memory = b.x[0].data_ptr();
  b = FeatureBatch();
  FeatureBatch c = data.load({3, 2});  // `b` was dropped: its memory again
  EXPECT_EQ(c.x[0].data_ptr(), memory);
  expect_equal(c, fresh({3, 2}));
  expect_equal(a, fresh({0, 1}));

  const torch::Tensor view = c.k[1][0];  // a view keeps the memory from reuse
  const torch::Tensor kept = view.clone();
  c = FeatureBatch();
  FeatureBatch d = data.load({0, 5});
  EXPECT_NE(d.x[0].data_ptr(), memory);
  EXPECT_TRUE(torch::equal(view, kept));
  expect_equal(d, fresh({0, 5}));
  d = FeatureBatch();
  expect_equal(data.load({1, 2, 4}), fresh({1, 2, 4}));  // another batch size
}

}  // namespace
}  // namespace evl
