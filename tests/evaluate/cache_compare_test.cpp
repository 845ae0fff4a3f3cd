// evl_cache compare (evaluate/cache_compare.h) against independent references:
//  - the feature errors against a brute-force float64 loop over the common
//    records, from cache::to_float32 of each stored array, with compact Q/K by a
//    float64 LayerNorm + projection written here (within a float32 rounding
//    bound of the loader's own recomputation);
//  - the head's figures against run_eval (evl_eval's path) on each cache: the
//    two score files give max |dp|, top-1 agreement and each top-1;
//  - key matching (only in A / only in B, views missing, --limit), refused
//    pairs (provenance, disjoint keys, other videos), and the evl_cache CLI:
//    flags, JSON keys and exit codes.
#include "evaluate/cache_compare.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cache/cache.h"
#include "evaluate/evaluator.h"
#include "evaluate/scores.h"
#include "tests/support/test_support.h"
#include "train/checkpoint.h"
#include "train/head.h"

namespace evl {
namespace {

namespace fs = std::filesystem;
using cache::DType;
using cache::StorageMode;
using test::TempDir;

const std::string kOfficial = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/head/official_ddp.pth";

// Letters: M decoder layers, T frames, L tokens per frame, C width.
struct Shape {
  int64_t width, frames, grid, heads, views;
  std::vector<int64_t> layers;  // contiguous (compact mode)
};
// The official fixture head's shapes (C=16, T=4, grid 3, 2 heads, 5 classes,
// 2 decoder layers); the caches hold 3 layers, so the head reads the last 2.
const Shape kHeadShape{16, 4, 3, 2, 3, {1, 2, 3}};
// A width of 80: two quantization groups (64 + 16 channels) per token.
const Shape kWideShape{80, 2, 2, 2, 2, {2, 3}};

std::vector<float> lcg(uint64_t seed, size_t n, double scale) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& x : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x = static_cast<float>(scale * (static_cast<double>(s >> 11) / 9007199254740992.0 * 2 - 1));
  }
  return v;
}

torch::Tensor lcg_tensor(uint64_t seed, std::vector<int64_t> shape, double scale) {
  int64_t n = 1;
  for (const auto d : shape) n *= d;
  auto v = lcg(seed, static_cast<size_t>(n), scale);
  return torch::from_blob(v.data(), shape, torch::kFloat).to(torch::kDouble);
}

// Frozen ln_1 + q/k weights of every block that feeds a decoder layer: float32
// values (as qk_weights.evl stores them), kept here in float64.
struct Weights {
  std::map<int64_t, std::array<torch::Tensor, 6>> block;  // g, beta, Wq, bq, Wk, bk
};

Weights make_weights(const Shape& s) {
  Weights w;
  const int64_t c = s.width;
  for (const int64_t b : s.layers) {
    const auto u = static_cast<uint64_t>(b) * 10;
    w.block[b] = {1 + lcg_tensor(u + 1, {c}, 0.2), lcg_tensor(u + 2, {c}, 0.1),
                  lcg_tensor(u + 3, {c, c}, 0.3),  lcg_tensor(u + 4, {c}, 0.5),
                  lcg_tensor(u + 5, {c, c}, 0.3),  lcg_tensor(u + 6, {c}, 0.5)};
  }
  return w;
}

cache::Array array_of(DType dtype, const torch::Tensor& t) {
  const auto f = t.to(torch::kFloat).contiguous();
  return cache::make_array(dtype, f.sizes().vec(), f.data_ptr<float>(),
                           static_cast<size_t>(f.numel()));
}

// A float64 LayerNorm (eps 1e-5, biased variance) + projection over (.., C).
torch::Tensor project64(const torch::Tensor& x, const std::array<torch::Tensor, 6>& w, bool key) {
  const auto mean = x.mean(-1, true), var = (x - mean).square().mean(-1, true);
  const auto ln = (x - mean) / (var + 1e-5).sqrt() * w[0] + w[1];
  return ln.matmul(w[key ? 4 : 2].t()) + w[key ? 5 : 3];
}

// Elementwise bound on |float32 recomputation - project64| (the loader's
// torch::layer_norm + linear in float32), with the probabilistic rounding
// model of tests/support/rounding_budget.h (a sum of n terms commits ~sqrt(n)
// u): LayerNorm's mean and variance are sums of C terms, so a normalised value
// is off by <= (sqrt(C)+4) u |g| (|x_j| + 2 max |x|) / sigma; the projection
// sums C products ((sqrt(C)+2) u sum |W| |ln|). Twice their sum, for margin.
torch::Tensor project_bound(const torch::Tensor& x, const std::array<torch::Tensor, 6>& w,
                            bool key) {
  const double u = std::ldexp(1.0, -24), n = std::sqrt(static_cast<double>(x.size(-1)));
  const auto mean = x.mean(-1, true), sigma = ((x - mean).square().mean(-1, true) + 1e-5).sqrt();
  const auto ln = ((x - mean) / sigma * w[0] + w[1]).abs();
  const auto ln_err =
      (n + 4) * u * w[0].abs() * (x.abs() + 2 * std::get<0>(x.abs().max(-1, true))) / sigma;
  const auto& wm = w[key ? 4 : 2];
  return 2 * ((ln_err.matmul(wm.abs().t())) +
              (n + 2) * u * (ln.matmul(wm.abs().t()) + w[key ? 5 : 3].abs()));
}

struct CacheSpec {
  StorageMode storage = StorageMode::kQK;
  DType dtype = DType::kF16;
  std::vector<int64_t> clips = {0, 1, 2};
  std::function<bool(int64_t, int32_t)> keep;  // views to write (default: all)
  double noise = 0;                            // B's features: + noise * clip * lcg
  std::string video_prefix = "videos/v";
  int64_t stride = 4;
};

// Block outputs of a clip-view, float64: blocks layers.front()-1 .. layers.back()
// (M+1, T, L, C), the same "true" features for every cache.
torch::Tensor block_outputs(const Shape& s, int64_t clip, int32_t view, double noise) {
  const int64_t l = s.grid * s.grid + 1, m1 = static_cast<int64_t>(s.layers.size()) + 1;
  const auto seed = static_cast<uint64_t>(clip * 100 + view);
  auto y = lcg_tensor(seed, {m1, s.frames, l, s.width}, 2.0);
  if (noise > 0)
    y = y + noise * static_cast<double>(clip) * lcg_tensor(seed + 7777, y.sizes().vec(), 1.0);
  return y;
}

int64_t label_of(int64_t clip) { return clip % 3 == 2 ? -1 : clip % 5; }

cache::Manifest manifest_of(const Shape& s, const CacheSpec& spec) {
  cache::Manifest m;
  m.tool_version = "test";
  m.created = "2026-01-01T00:00:00Z";
  const int64_t depth = 6;  // the same for every shape: the layers are compared, not the depth
  m.backbone = {"tiny.pt", "0123",    "openai-torchscript", s.width, depth, s.heads, 8,
                s.grid,    8 * s.grid};
  m.layers = s.layers;
  m.storage = spec.storage;
  m.dtype = spec.dtype;
  m.frames = s.frames;
  m.stride = spec.stride;
  m.temporal_views = s.views;
  m.mean = {0.5, 0.5, 0.5};
  m.std = {0.25, 0.25, 0.25};
  m.list_file = "list.txt";
  return m;
}

void write_test_cache(const std::string& dir, const Shape& s, const Weights& w,
                      const CacheSpec& spec) {
  cache::Manifest m = manifest_of(s, spec);
  const std::string shard = cache::shard_name(0, 1);
  int64_t n = 0;
  {
    cache::ShardWriter writer(dir + "/" + shard);
    for (const int64_t clip : spec.clips)
      for (int32_t view = 0; view < s.views; ++view) {
        if (spec.keep && !spec.keep(clip, view)) continue;
        cache::Record r;
        r.key = cache::make_key(clip, view);
        r.video_id = spec.video_prefix + std::to_string(clip) + ".mp4";
        r.label = label_of(clip);
        r.clip_index = clip;
        r.view_index = view;
        const auto y = block_outputs(s, clip, view, spec.noise);  // (M+1, T, L, C)
        if (spec.storage == StorageMode::kCompact) {
          r.arrays = {{"x", array_of(spec.dtype, y)}};
        } else {
          std::vector<torch::Tensor> q, k;
          for (size_t i = 0; i < s.layers.size(); ++i) {
            const auto& wb = w.block.at(s.layers[i]);
            q.push_back(project64(y[static_cast<int64_t>(i)], wb, false));
            k.push_back(project64(y[static_cast<int64_t>(i)], wb, true));
          }
          r.arrays = {{"x", array_of(spec.dtype, y.slice(0, 1))},
                      {"q", array_of(spec.dtype, torch::stack(q))},
                      {"k", array_of(spec.dtype, torch::stack(k))}};
        }
        writer.put(r);
        ++n;
      }
  }
  m.shards = {{shard, n}};
  m.num_clips = 10;
  m.save(dir);
  if (spec.storage == StorageMode::kCompact) {
    cache::Record qk;
    qk.key = "qk_weights";
    for (const auto& [b, t] : w.block) {
      const std::string sfx = "." + std::to_string(b);
      const char* names[] = {"ln_1.weight", "ln_1.bias",     "q_proj.weight",
                             "q_proj.bias", "k_proj.weight", "k_proj.bias"};
      for (size_t i = 0; i < 6; ++i)
        qk.arrays.emplace_back(names[i] + sfx, array_of(DType::kF32, t[i]));
    }
    cache::save_qk_weights(dir, qk);
  }
}

// A record's decoder inputs in float64 from to_float32 of its arrays: x, q, k
// each (M, T, L, C), compact Q/K by project64, with their rounding bounds
// (zero for arrays read as stored).
struct Inputs64 {
  std::array<torch::Tensor, 3> value, bound;
};

Inputs64 decoder_inputs(const cache::Record& r, const cache::Manifest& m, const Weights& w) {
  auto read = [&](const char* name) {
    const cache::Array& a = r.array(name);
    auto t = torch::empty(a.shape, torch::kFloat);
    cache::to_float32(cache::ArrayView{a.dtype, a.shape, a.bytes.data()}, t.data_ptr<float>());
    return t.to(torch::kDouble);
  };
  Inputs64 out;
  const auto x = read("x");
  if (m.storage == StorageMode::kQK) {
    out.value = {x, read("q"), read("k")};
    for (int a = 0; a < 3; ++a) out.bound[static_cast<size_t>(a)] = torch::zeros_like(x);
    return out;
  }
  std::vector<torch::Tensor> q, k, bq, bk;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const auto& wb = w.block.at(m.layers[i]);
    const auto xi = x[static_cast<int64_t>(i)];
    q.push_back(project64(xi, wb, false));
    k.push_back(project64(xi, wb, true));
    bq.push_back(project_bound(xi, wb, false));
    bk.push_back(project_bound(xi, wb, true));
  }
  out.value = {x.slice(0, 1), torch::stack(q), torch::stack(k)};
  out.bound = {torch::zeros_like(out.value[0]), torch::stack(bq), torch::stack(bk)};
  return out;
}

// Brute force: sums over the given keys, per layer and array.
struct Brute {
  double sse = 0, ssr = 0, max_abs = 0;  // of b - a, and a
  double bound_a2 = 0, bound_b2 = 0;     // sum of squared rounding bounds
  double bound_max = 0;                  // max (bound_a + bound_b)
  int64_t values = 0;
  double rel_rms() const { return std::sqrt(sse / ssr); }
};

std::vector<std::array<Brute, 3>> brute_force(const std::string& da, const std::string& db,
                                              const std::vector<std::string>& keys,
                                              const Weights& w) {
  const cache::CacheReader ra(da), rb(db);
  std::vector<std::array<Brute, 3>> out(ra.manifest().layers.size());
  for (const auto& key : keys) {
    const Inputs64 a = decoder_inputs(ra.get(key), ra.manifest(), w);
    const Inputs64 b = decoder_inputs(rb.get(key), rb.manifest(), w);
    for (size_t i = 0; i < out.size(); ++i)
      for (size_t j = 0; j < 3; ++j) {
        const auto ai = a.value[j][static_cast<int64_t>(i)],
                   bi = b.value[j][static_cast<int64_t>(i)];
        const auto ea = a.bound[j][static_cast<int64_t>(i)],
                   eb = b.bound[j][static_cast<int64_t>(i)];
        Brute& s = out[i][j];
        s.sse += (bi - ai).square().sum().item<double>();
        s.ssr += ai.square().sum().item<double>();
        s.max_abs = std::max(s.max_abs, (bi - ai).abs().max().item<double>());
        s.bound_a2 += ea.square().sum().item<double>();
        s.bound_b2 += eb.square().sum().item<double>();
        s.bound_max = std::max(s.bound_max, (ea + eb).max().item<double>());
        s.values += ai.numel();
      }
  }
  return out;
}

// The report's figures against the brute force: |r_got - r_want| <= ((Da + Db)
// + r_want Da) / (Na - Da) with D the norms of the rounding bounds and Na of A
// (triangle inequality on numerator and denominator), plus float64 summation
// order; max |B-A| within the largest bound_a + bound_b.
void expect_matches(const ArrayError& got, const Brute& want, const std::string& what) {
  const double da = std::sqrt(want.bound_a2), db = std::sqrt(want.bound_b2),
               na = std::sqrt(want.ssr), r = want.rel_rms();
  const double tol = ((da + db) + r * da) / (na - da) + 1e-12 * r;
  EXPECT_NEAR(got.rel_rms(), r, tol) << what;
  EXPECT_NEAR(got.max_abs, want.max_abs, want.bound_max + 1e-12 * want.max_abs) << what;
  EXPECT_EQ(got.values, want.values) << what;
  EXPECT_GT(r, 0) << what;  // the candidate differs: the test has power
}

void expect_features_match(const CompareReport& rep, const std::vector<std::array<Brute, 3>>& want,
                           const std::vector<int64_t>& blocks) {
  ASSERT_EQ(rep.layers.size(), want.size());
  std::array<Brute, 3> all{};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(rep.layers[i].block, blocks[i]);
    const ArrayError* got[] = {&rep.layers[i].x, &rep.layers[i].q, &rep.layers[i].k};
    for (size_t j = 0; j < 3; ++j) {
      expect_matches(*got[j], want[i][j], "block " + std::to_string(blocks[i]) + " " + "xqk"[j]);
      Brute& s = all[j];
      s.sse += want[i][j].sse, s.ssr += want[i][j].ssr;
      s.max_abs = std::max(s.max_abs, want[i][j].max_abs);
      s.bound_a2 += want[i][j].bound_a2, s.bound_b2 += want[i][j].bound_b2;
      s.bound_max = std::max(s.bound_max, want[i][j].bound_max);
      s.values += want[i][j].values;
    }
  }
  expect_matches(rep.x, all[0], "overall x");
  expect_matches(rep.q, all[1], "overall q");
  expect_matches(rep.k, all[2], "overall k");
}

std::vector<std::string> keys_of(const std::vector<int64_t>& clips, int32_t views) {
  std::vector<std::string> out;
  for (const int64_t c : clips)
    for (int32_t v = 0; v < views; ++v) out.push_back(cache::make_key(c, v));
  return out;
}

// A freshly initialised evl head for kHeadShape (2 decoder layers, 5 classes),
// saved as evl_train_head saves one: unlike the official fixture, whose top-1
// hardly moves with its inputs, its top-1 follows the features.
std::string fresh_head(const std::string& dir) {
  HeadConfig hc;
  hc.width = kHeadShape.width, hc.heads = 2, hc.decoder_layers = 2;
  hc.frames = kHeadShape.frames, hc.grid = kHeadShape.grid, hc.num_classes = 5;
  torch::manual_seed(11);
  EvlHead head(hc);
  torch::optim::AdamW opt(head->parameters());
  const std::string path = dir + "/fresh_head.pth";
  save_training_checkpoint(path, head, opt, 0, hc.to_ini());
  return path;
}

CompareConfig config(const std::string& a, const std::string& b) {
  CompareConfig cfg;
  cfg.reference = a;
  cfg.candidate = b;
  cfg.batch_size = 3;  // batches span clips
  return cfg;
}

}  // namespace

// fp16 qk against int8 compact, fp8 qk and int8 qk, and fp16 compact against
// fp8 qk: per layer and array, and overall, as the brute force.
TEST(CacheCompare, FeatureErrorsMatchFloat64BruteForce) {
  TempDir tmp("compare_features");
  const Weights w = make_weights(kWideShape);
  struct Case {
    StorageMode sa;
    DType ta;
    StorageMode sb;
    DType tb;
  };
  const std::vector<Case> cases = {
      {StorageMode::kQK, DType::kF16, StorageMode::kCompact, DType::kI8},
      {StorageMode::kQK, DType::kF16, StorageMode::kQK, DType::kFP8},
      {StorageMode::kQK, DType::kF32, StorageMode::kQK, DType::kI8},
      {StorageMode::kCompact, DType::kF16, StorageMode::kQK, DType::kFP8}};
  int n = 0;
  for (const auto& c : cases) {
    const std::string name = cache::to_string(c.sa) + "_" + cache::to_string(c.ta) + "_vs_" +
                             cache::to_string(c.sb) + "_" + cache::to_string(c.tb);
    SCOPED_TRACE(name);
    const std::string da = tmp / ("a" + std::to_string(n)), db = tmp / ("b" + std::to_string(n++));
    CacheSpec sa, sb;
    sa.storage = c.sa, sa.dtype = c.ta, sb.storage = c.sb, sb.dtype = c.tb;
    write_test_cache(da, kWideShape, w, sa);
    write_test_cache(db, kWideShape, w, sb);
    const CompareReport rep = compare_caches(config(da, db));
    EXPECT_EQ(rep.reference.dtype, c.ta);
    EXPECT_EQ(rep.candidate.storage, c.sb);
    EXPECT_EQ(rep.common_records, 6);
    EXPECT_EQ(rep.compared_clips, 3);
    EXPECT_EQ(rep.reference.only_here + rep.candidate.only_here, 0);
    EXPECT_FALSE(rep.head);
    expect_features_match(rep, brute_force(da, db, keys_of({0, 1, 2}, 2), w), kWideShape.layers);
    // A quantized candidate is close but not equal: int8 within ~1%, fp8 within ~5%.
    EXPECT_LT(rep.x.rel_rms(), c.tb == DType::kI8 ? 0.01 : 0.05);
  }
  // A cache against an identical copy: zero error, exactly.
  const std::string da = tmp / "same_a", db = tmp / "same_b";
  CacheSpec spec;
  spec.storage = StorageMode::kCompact, spec.dtype = DType::kI8;
  write_test_cache(da, kWideShape, w, spec);
  write_test_cache(db, kWideShape, w, spec);
  const CompareReport same = compare_caches(config(da, db));
  for (const ArrayError* e : {&same.x, &same.q, &same.k}) {
    EXPECT_EQ(e->rel_rms(), 0.0);
    EXPECT_EQ(e->max_abs, 0.0);
  }
}

// Keys only in A or only in B are counted and listed; --limit takes the first
// N common clips; a clip whose views differ is compared but not fused.
TEST(CacheCompare, OnlyInOneCacheAndLimit) {
  TempDir tmp("compare_keys");
  const Weights w = make_weights(kHeadShape);
  const std::string da = tmp / "a", db = tmp / "b";
  CacheSpec sa, sb;
  sa.clips = {0, 1, 2, 3, 4};
  sb.clips = {1, 2, 3, 7};
  sb.dtype = DType::kI8;
  sb.keep = [](int64_t clip, int32_t view) { return !(clip == 2 && view == 1); };
  write_test_cache(da, kHeadShape, w, sa);
  write_test_cache(db, kHeadShape, w, sb);

  CompareConfig cfg = config(da, db);
  CompareReport rep = compare_caches(cfg);
  EXPECT_EQ(rep.reference.records, 15);
  EXPECT_EQ(rep.candidate.records, 11);
  EXPECT_EQ(rep.reference.only_here, 7);  // clips 0 and 4, and view 1 of clip 2
  EXPECT_EQ(rep.reference.only_keys,
            (std::vector<std::string>{"0000000000/000", "0000000000/001", "0000000000/002",
                                      "0000000002/001", "0000000004/000"}));
  EXPECT_EQ(rep.candidate.only_here, 3);
  EXPECT_EQ(rep.candidate.only_keys,
            (std::vector<std::string>{"0000000007/000", "0000000007/001", "0000000007/002"}));
  EXPECT_EQ(rep.common_records, 8);
  EXPECT_EQ(rep.compared_clips, 3);
  EXPECT_EQ(rep.compared_records, 8);
  {
    std::vector<std::string> common = keys_of({1, 3}, 3);
    common.push_back("0000000002/000");
    common.push_back("0000000002/002");
    expect_features_match(rep, brute_force(da, db, common, w), kHeadShape.layers);
  }

  cfg.limit = 2;  // clips 1 and 2
  cfg.checkpoint = kOfficial;
  rep = compare_caches(cfg);
  EXPECT_EQ(rep.limit, 2);
  EXPECT_EQ(rep.compared_clips, 2);
  EXPECT_EQ(rep.compared_records, 5);
  expect_features_match(rep,
                        brute_force(da, db,
                                    {keys_of({1}, 3)[0], keys_of({1}, 3)[1], keys_of({1}, 3)[2],
                                     "0000000002/000", "0000000002/002"},
                                    w),
                        kHeadShape.layers);
  ASSERT_TRUE(rep.head);
  EXPECT_EQ(rep.head->clips, 1);  // clip 2 lacks a view in B
  EXPECT_EQ(rep.head->skipped_clips, 1);
}

// The head's figures are those of evl_eval's two score files (run_eval on
// each cache): max |dp| over clips and classes, top-1 agreement, top-1 of each.
TEST(CacheCompare, HeadFiguresMatchRunEvalOnBothCaches) {
  TempDir tmp("compare_head");
  const Weights w = make_weights(kHeadShape);
  const std::string da = tmp / "a", db = tmp / "b";
  CacheSpec sa, sb;
  sa.clips = sb.clips = {0, 1, 2, 3, 4, 5, 6, 7};
  sb.storage = StorageMode::kCompact;
  sb.dtype = DType::kI8;
  sb.noise = 1.0;  // later clips drift further from A: some top-1s change
  write_test_cache(da, kHeadShape, w, sa);
  write_test_cache(db, kHeadShape, w, sb);
  const std::string checkpoint = fresh_head(tmp.str());
  for (const std::string fuse : {"prob", "logits"}) {
    SCOPED_TRACE(fuse);
    auto scores = [&](const std::string& dir) {
      EvalConfig e;
      e.cache = dir;
      e.checkpoint = checkpoint;
      e.scores = dir + "_" + fuse + ".h5";
      e.fuse = fuse;
      e.batch_size = 3;
      run_eval(e);
      return read_scores(e.scores);
    };
    const ScoreFile fa = scores(da), fb = scores(db);
    ASSERT_EQ(fa.video_ids, fb.video_ids);
    const int64_t n = fa.num_videos(), k = fa.num_classes();
    double max_diff = 0;
    int64_t agree = 0, labelled = 0, hits_a = 0, hits_b = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float *ra = fa.scores.data() + i * k, *rb = fb.scores.data() + i * k;
      for (int64_t j = 0; j < k; ++j)
        max_diff = std::max(max_diff, std::fabs(static_cast<double>(rb[j]) - ra[j]));
      const int64_t ta = std::max_element(ra, ra + k) - ra, tb = std::max_element(rb, rb + k) - rb;
      agree += ta == tb;
      const int64_t y = fa.labels[static_cast<size_t>(i)];
      if (y < 0) continue;
      ++labelled;
      hits_a += ta == y;
      hits_b += tb == y;
    }
    CompareConfig cfg = config(da, db);
    cfg.checkpoint = checkpoint;
    cfg.fuse = fuse;
    const CompareReport rep = compare_caches(cfg);
    ASSERT_TRUE(rep.head);
    const HeadAgreement& h = *rep.head;
    EXPECT_EQ(h.fuse, fuse);
    EXPECT_EQ(h.num_classes, 5);
    EXPECT_EQ(h.clips, n);
    EXPECT_EQ(h.skipped_clips, 0);
    // Same batches (3 views), same float32 head on the same inputs: the scores
    // agree up to the float32 file's rounding.
    EXPECT_NEAR(h.max_abs_diff, max_diff, 1e-6 * std::max(1.0, max_diff));
    EXPECT_DOUBLE_EQ(h.top1_agreement, static_cast<double>(agree) / static_cast<double>(n));
    EXPECT_EQ(h.labelled, labelled);
    EXPECT_DOUBLE_EQ(h.top1_reference, static_cast<double>(hits_a) / static_cast<double>(labelled));
    EXPECT_DOUBLE_EQ(h.top1_candidate, static_cast<double>(hits_b) / static_cast<double>(labelled));
    EXPECT_GT(max_diff, 0);
    if (fuse == "prob") {
      EXPECT_LT(agree, n) << "the noise should change some top-1s";
    }
  }
}

// Provenance other than storage and dtype must match; refusals name both caches.
TEST(CacheCompare, RefusesCachesOfOtherClipsOrSettings) {
  TempDir tmp("compare_refuse");
  const Weights w = make_weights(kWideShape);
  const std::string da = tmp / "a";
  write_test_cache(da, kWideShape, w, CacheSpec{});
  auto refusal = [&](const std::string& name, const CacheSpec& spec, const Shape& shape) {
    const std::string db = tmp / name;
    write_test_cache(db, shape, make_weights(shape), spec);
    const std::string err = test::error_of([&] { compare_caches(config(da, db)); });
    EXPECT_NE(err.find(da), std::string::npos) << err;
    EXPECT_NE(err.find(db), std::string::npos) << err;
    return err;
  };
  CacheSpec stride;
  stride.stride = 8;
  EXPECT_NE(refusal("stride", stride, kWideShape).find("'stride'"), std::string::npos);
  Shape other_layers = kWideShape;
  other_layers.layers = {1, 2};
  EXPECT_NE(refusal("layers", CacheSpec{}, other_layers).find("'layers'"), std::string::npos);
  CacheSpec disjoint;
  disjoint.clips = {5, 6};
  EXPECT_NE(refusal("disjoint", disjoint, kWideShape).find("no key in common"), std::string::npos);
  CacheSpec other_videos;
  other_videos.video_prefix = "elsewhere/v";
  EXPECT_NE(refusal("videos", other_videos, kWideShape).find("different lists"), std::string::npos);

  // Bad settings are usage errors.
  CompareConfig cfg = config(da, da);
  EXPECT_THROW(compare_caches(cfg), UsageError);  // a cache against itself
  const std::string db = tmp / "b";
  write_test_cache(db, kWideShape, w, CacheSpec{});
  cfg = config(da, db);
  cfg.limit = 0;
  EXPECT_THROW(compare_caches(cfg), UsageError);
  cfg = config(da, db);
  cfg.min_top1_agreement = 0.9;  // without a head
  EXPECT_THROW(compare_caches(cfg), UsageError);
  cfg.checkpoint = kOfficial;
  cfg.fuse = "median";
  EXPECT_THROW(compare_caches(cfg), UsageError);
  // A head that does not fit the caches (C=80, the fixture's is 16).
  cfg = config(da, db);
  cfg.checkpoint = kOfficial;
  const std::string err = test::error_of([&] { compare_caches(cfg); });
  EXPECT_NE(err.find("width:"), std::string::npos) << err;
}

// The evl_cache binary: the table, --json on stdout and --json=FILE, the
// optional checks' exit status, and usage errors.
TEST(CacheCompare, EvlCacheCommandLine) {
  TempDir tmp("compare_cli");
  const Weights w = make_weights(kHeadShape);
  const std::string da = tmp / "a", db = tmp / "b", dc = tmp / "c";
  CacheSpec sb, sc;
  sb.storage = StorageMode::kCompact, sb.dtype = DType::kI8;
  sc.clips = {8, 9};
  write_test_cache(da, kHeadShape, w, CacheSpec{});
  write_test_cache(db, kHeadShape, w, sb);
  write_test_cache(dc, kHeadShape, w, sc);
  const std::string base = test::tool("evl_cache") + " compare '" + da + "' '" + db + "'";
  auto run = [&](const std::string& args) { return test::run(base + " " + args, tmp.path()); };

  auto r = run("");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("rel RMS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("block 3 q"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("int8 compact"), std::string::npos) << r.out;

  r = run("--json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["reference"]["dtype"], "fp16");
  EXPECT_EQ(j["reference"]["storage"], "qk");
  EXPECT_EQ(j["candidate"]["dtype"], "int8");
  EXPECT_EQ(j["candidate"]["storage"], "compact");
  EXPECT_EQ(j["common_records"], 9);
  EXPECT_EQ(j["features"]["layers"].size(), 3u);
  EXPECT_EQ(j["features"]["layers"][0]["block"], 1);
  for (const char* a : {"x", "q", "k"}) {
    EXPECT_GT(j["features"]["overall"][a]["rel_rms"].get<double>(), 0) << a;
    EXPECT_TRUE(j["features"]["overall"][a].contains("max_abs")) << a;
  }
  EXPECT_TRUE(j["head"].is_null());
  EXPECT_TRUE(j["failures"].empty());

  const std::string json_file = tmp / "report.json";
  r = run("--checkpoint '" + kOfficial + "' --limit 2 --min-top1-agreement 0 --json='" + json_file +
          "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("top-1 agreement"), std::string::npos) << r.out;
  j = nlohmann::json::parse(test::slurp(json_file));
  EXPECT_EQ(j["compared_clips"], 2);
  EXPECT_EQ(j["limit"], 2);
  for (const char* key : {"max_abs_diff", "top1_agreement", "top1_reference", "top1_candidate",
                          "clips", "skipped_clips", "labelled_clips", "fuse", "checkpoint"})
    EXPECT_TRUE(j["head"].contains(key)) << key;
  EXPECT_EQ(j["head"]["clips"], 2);

  // The optional checks make a failure exit 1; they list what failed.
  r = run("--max-rel-rms 1e-9");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.out.find("check failed: block 1 x"), std::string::npos) << r.out;
  r = run("--max-rel-rms 1e-9 --json");
  EXPECT_EQ(r.code, 1);
  EXPECT_FALSE(nlohmann::json::parse(r.out)["failures"].empty());
  EXPECT_NE(r.err.find("check failed"), std::string::npos) << r.err;
  EXPECT_EQ(run("--max-rel-rms 0.5").code, 0);
  EXPECT_EQ(run("--checkpoint '" + kOfficial + "' --min-top1-agreement 0.5").code, 0);

  // Usage errors exit 2, runtime errors 1, each with `error:` on stderr.
  for (const std::string& bad : std::vector<std::string>{
           "--min-top1-agreement 0.5", "--limit 0", "--fuse median",
           "--checkpoint '" + kOfficial + "' --min-top1-agreement 2", "'" + dc + "'"}) {
    r = run(bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  }
  r = test::run(test::tool("evl_cache") + " compare '" + da + "' '" + dc + "'", tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no key in common"), std::string::npos) << r.err;
  r = test::run(test::tool("evl_cache") + " compare --json '" + da + "' '" + db + "'", tmp.path());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--json=FILE"), std::string::npos) << r.err;

  // info keeps its --json (stdout), and takes --json=FILE too.
  r = test::run(test::tool("evl_cache") + " info '" + da + "' --json", tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["records"], 9);
  r = test::run(test::tool("evl_cache") + " info '" + da + "' --json='" + (tmp / "info.json") + "'",
                tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(test::slurp(tmp / "info.json"))["records"], 9);
}

}  // namespace evl
