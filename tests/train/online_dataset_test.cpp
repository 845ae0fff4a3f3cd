// The online training source (train/online_dataset.h) against the cached path
// it stands in for: the same generated videos are extracted by the extraction
// pipeline (evl::run_extraction, the code behind evl_extract) into LMDB caches,
// read back through CachedDataset, and compared with OnlineDataset item by item
// (features, labels, clips), sampler batch by batch, and over a short training
// run (losses, validation accuracy); that is the replay mode (--replay-views).
// Fresh views (the default): draw d of a clip is view d of a cache with more
// views, epochs see different views, and a resumed run is bit-exact. Also: a
// broken video stops training naming the file, and evl_train_head's flag
// combinations (usage errors exit 2).
#include "train/online_dataset.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/check.h"
#include "extract/pipeline.h"
#include "tests/support/rounding_budget.h"
#include "tests/support/test_support.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace evl;

namespace {

const std::string kBackbone = test::tiny_backbone();
const std::string kTrainHead = test::tool("evl_train_head");

using test::sh;
using test::slurp;

// The manifest without what legitimately differs between two writers
// (creation time) and what only a written cache has (shards).
nlohmann::json provenance(const cache::Manifest& m) {
  auto j = nlohmann::json::parse(m.to_json());
  j.erase("created");
  j.erase("shards");
  return j;
}

// Largest |a - b| in fp16 steps at |b| (1.0: one fp16 step), where |b| is not tiny.
double fp16_steps(const torch::Tensor& a, const torch::Tensor& b) {
  const auto ulp =
      torch::clamp_min(b.abs(), 1e-2 * b.abs().max().item<double>()) * std::ldexp(1.0, -10);
  return ((a - b).abs() / ulp).max().item<double>();
}

class OnlineDatasetTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("evl_online_test_" + std::to_string(getpid()));
    fs::create_directories(root_);
    const std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                            "/scripts/make_motion_dataset.py --out " + (root_ / "data").string() +
                            " --classes 4 --per-class 3 --frames 24 --size 48x40 --seed 3 "
                            "--split-ratio 0.67 >/dev/null";
    ASSERT_EQ(sh(cmd), 0) << cmd;
    backbone_ = std::make_shared<OnlineBackbone>(base_config(), "cpu");
  }
  static void TearDownTestSuite() {
    backbone_.reset();
    fs::remove_all(root_);
  }

  // Small settings exercising every kind of view randomness (RandAugment
  // included: on by default), replaying the K cached views.
  static OnlineConfig base_config() {
    OnlineConfig c;
    c.enabled = true;
    c.replay_views = true;
    c.list = (root_ / "data" / "train.txt").string();
    c.val_list = (root_ / "data" / "val.txt").string();
    c.root = (root_ / "data").string();
    c.backbone = kBackbone;
    c.views.frames = 4;
    c.views.stride = 3;
    c.views.layers = "last2";
    c.views.train_views = 3;
    c.views.temporal_views = 2;
    c.views.spatial_views = 3;
    c.views.flip = true;
    c.views.photometric = true;
    return c;
  }

  // The cache evl_extract writes for the settings `online` stands for.
  static fs::path extract(const OnlineDataset& online, const std::string& name) {
    ExtractConfig e = online.extract_config();
    e.out = (root_ / name).string();
    e.threads = 2;
    const ExtractSummary s = run_extraction(e, nullptr);
    EXPECT_EQ(s.clips_failed, 0);
    EXPECT_EQ(s.views_written, online.size());
    return e.out;
  }

  // Every item of both sources, loaded twice:
  //  1. in the extraction's backbone batches (groups of max(1, batch_size / K)
  //     consecutive clips, forwards of batch_size views): the same pixels
  //     through the same GEMMs, so the features must be bit-identical;
  //  2. in reversed batches of `batch` items (as a training step would ask):
  //     other GEMM shapes change fp32 results in their last bits, which moves
  //     some values across a rounding boundary of the storage dtype. Allowed:
  //     `steps` storage steps at |value| (relative spacing 2^-7 bf16, 2^-10
  //     fp16, 2^-23 fp32) plus twice the float32 forward rounding budget of the
  //     backbone at the tensor's scale (each side is within it of the exact value).
  static void expect_same_items(const OnlineDataset& online, const FeatureSource& cached,
                                int64_t batch, double steps) {
    ASSERT_EQ(online.size(), cached.size());
    ASSERT_EQ(online.layers(), cached.layers());
    EXPECT_EQ(online.max_label(), cached.max_label());
    const int64_t k = online.views_per_clip();
    const int64_t group = std::max<int64_t>(1, online.extract_config().batch_size / k) * k;
    const double step = online.manifest().dtype == cache::DType::kBF16  ? std::ldexp(1.0, -7)
                        : online.manifest().dtype == cache::DType::kF16 ? std::ldexp(1.0, -10)
                                                                        : std::ldexp(1.0, -23);
    const auto& bb = online.manifest().backbone;
    const double noise =
        2 * test::vit_rounding_budget(bb.depth, bb.width, bb.patch, 1 + bb.grid * bb.grid) *
        test::unit_roundoff(torch::kFloat);
    int64_t differing = 0, elements = 0;
    for (const bool as_extracted : {true, false}) {
      const int64_t n = as_extracted ? group : batch;
      for (int64_t start = 0; start < online.size(); start += n) {
        std::vector<int64_t> items;
        for (int64_t i = start; i < std::min(online.size(), start + n); ++i) items.push_back(i);
        if (!as_extracted) std::reverse(items.begin(), items.end());
        const FeatureBatch a = online.load(items), b = cached.load(items);
        EXPECT_TRUE(torch::equal(a.labels, b.labels));
        EXPECT_EQ(a.clip_index, b.clip_index);
        for (int64_t m = 0; m < online.layers(); ++m)
          for (const auto& [ta, tb] : std::vector<std::pair<torch::Tensor, torch::Tensor>>{
                   {a.x[m], b.x[m]}, {a.q[m], b.q[m]}, {a.k[m], b.k[m]}}) {
            ASSERT_EQ(ta.sizes(), tb.sizes());
            if (as_extracted) {
              EXPECT_TRUE(torch::equal(ta, tb)) << "items from " << start << " layer " << m;
              continue;
            }
            const auto allowed = tb.abs() * (steps * step) + noise * tb.abs().max();
            EXPECT_TRUE(((ta - tb).abs() <= allowed).all().item<bool>())
                << "items from " << start << " layer " << m << ": max |diff| "
                << (ta - tb).abs().max().item<double>();
            differing += (ta != tb).sum().item<int64_t>();
            elements += tb.numel();
          }
      }
    }
    // A few rounding flips, not different features.
    EXPECT_LE(differing * 100, elements) << differing << " of " << elements << " values differ";
    std::cout << differing << " of " << elements
              << " values differ in other batches than the extraction's\n";
  }

  static fs::path root_;
  static std::shared_ptr<OnlineBackbone> backbone_;
};

fs::path OnlineDatasetTest::root_;
std::shared_ptr<OnlineBackbone> OnlineDatasetTest::backbone_;

TEST_F(OnlineDatasetTest, TrainingViewsEqualTheCachedOnes) {
  const OnlineConfig cfg = base_config();
  const OnlineDataset online(cfg, cfg.list, OnlineDataset::Views::kTrain, 5, 0, backbone_);
  EXPECT_EQ(online.views_per_clip(), 3);
  const CachedDataset cached(extract(online, "train-cache").string(), 0);
  EXPECT_EQ(provenance(online.manifest()), provenance(cached.manifest()));
  expect_same_items(online, cached, 5, 1.0);
  // The same samples step by step, for the batch sizes a run would use.
  for (int64_t batch : {1, 4, 7})
    for (int64_t step = 0; step < 6; ++step)
      EXPECT_EQ(online.train_batch(9, step, batch), cached.train_batch(9, step, batch))
          << "step " << step << " batch " << batch;
}

TEST_F(OnlineDatasetTest, TestViewsAndDecoderLayersEqualTheCachedOnes) {
  const OnlineConfig cfg = base_config();
  // One decoder layer of the two tapped: the last block, as the cached path takes.
  const OnlineDataset online(cfg, cfg.val_list, OnlineDataset::Views::kTest, 5, 1, backbone_);
  EXPECT_EQ(online.views_per_clip(), 6);
  EXPECT_EQ(online.layers(), 1);
  const CachedDataset cached(extract(online, "val-cache").string(), 1);
  EXPECT_EQ(provenance(online.manifest()), provenance(cached.manifest()));
  expect_same_items(online, cached, 8, 1.0);
}

TEST_F(OnlineDatasetTest, StorageDtypeRoundingIsTheCaches) {
  OnlineConfig cfg = base_config();
  cfg.views.dtype = "bf16";
  cfg.views.train_views = 1;
  const OnlineDataset online(cfg, cfg.list, OnlineDataset::Views::kTrain, 2, 0, backbone_);
  const CachedDataset cached(extract(online, "bf16-cache").string(), 0);
  EXPECT_EQ(cached.manifest().dtype, cache::DType::kBF16);
  expect_same_items(online, cached, 3, 1.0);
  // The values are bf16-rounded; with --dtype fp16 they keep more bits.
  cfg.views.dtype = "fp16";
  const OnlineDataset fp16(cfg, cfg.list, OnlineDataset::Views::kTrain, 2, 0, backbone_);
  const auto b = online.load({0}), h = fp16.load({0});
  EXPECT_TRUE(torch::equal(b.x[0], b.x[0].to(torch::kBFloat16).to(torch::kFloat)));
  EXPECT_FALSE(torch::equal(h.x[0], h.x[0].to(torch::kBFloat16).to(torch::kFloat)));
  EXPECT_LE(fp16_steps(b.x[0], h.x[0]), 9.0);  // half a bf16 step + half an fp16 step
}

// int8/fp8: the online source quantizes and dequantizes each (V, T, L, C) chunk
// exactly as the extraction stores the record, so in the extraction's batches
// the loaded features are bit-identical to the cache's. (Other batch shapes
// can flip a code where GEMM noise crosses a rounding boundary; that is the
// fp16/bf16 case above, with a bound of a code step instead of a dtype step.)
TEST_F(OnlineDatasetTest, QuantizedStorageIsTheCaches) {
  for (const std::string dtype : {"int8", "fp8"}) {
    SCOPED_TRACE(dtype);
    OnlineConfig cfg = base_config();
    cfg.views.dtype = dtype;
    cfg.views.train_views = 2;
    const OnlineDataset online(cfg, cfg.list, OnlineDataset::Views::kTrain, 4, 0, backbone_);
    const CachedDataset cached(extract(online, dtype + "-cache").string(), 0);
    EXPECT_EQ(cache::to_string(cached.manifest().dtype), dtype);
    EXPECT_EQ(provenance(online.manifest()), provenance(cached.manifest()));
    const int64_t k = online.views_per_clip();
    const int64_t group = std::max<int64_t>(1, online.extract_config().batch_size / k) * k;
    for (int64_t start = 0; start < online.size(); start += group) {
      std::vector<int64_t> items;
      for (int64_t i = start; i < std::min(online.size(), start + group); ++i) items.push_back(i);
      const FeatureBatch a = online.load(items), b = cached.load(items);
      for (int64_t m = 0; m < online.layers(); ++m) {
        EXPECT_TRUE(torch::equal(a.x[m], b.x[m])) << "items from " << start << " layer " << m;
        EXPECT_TRUE(torch::equal(a.q[m], b.q[m])) << "items from " << start << " layer " << m;
        EXPECT_TRUE(torch::equal(a.k[m], b.k[m])) << "items from " << start << " layer " << m;
      }
    }
  }
}

TEST_F(OnlineDatasetTest, ShortTrainingRunGivesTheCachedLosses) {
  const OnlineConfig cfg = base_config();
  const OnlineDataset train(cfg, cfg.list, OnlineDataset::Views::kTrain, 11, 0, backbone_);
  const OnlineDataset val(cfg, cfg.val_list, OnlineDataset::Views::kTest, 11, 0, backbone_);
  const CachedDataset train_cache(extract(train, "run-train-cache").string(), 0);
  const CachedDataset val_cache(extract(val, "run-val-cache").string(), 0);

  TrainConfig tc;
  tc.steps = 4, tc.batch_size = 4, tc.batch_split = 2, tc.seed = 11, tc.lr = 1e-3;
  tc.eval_every = 2, tc.save_every = 0, tc.log_every = 1, tc.mlp_dropout = 0.1;
  tc.precision = "fp32";  // bf16 rounding would hide one-ulp feature differences behind bigger ones
  std::vector<std::vector<double>> losses;
  std::vector<double> top1;
  for (const bool online : {true, false}) {
    tc.out = (root_ / (online ? "run-online" : "run-cached")).string();
    const TrainSummary s =
        online ? train_head(tc, "", train, &val) : train_head(tc, "", train_cache, &val_cache);
    EXPECT_EQ(s.steps, 4);
    top1.push_back(s.val_top1);
    std::ifstream metrics(fs::path(tc.out) / "metrics.jsonl");
    std::vector<double> l;
    for (std::string line; std::getline(metrics, line);)
      l.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    losses.push_back(l);
  }
  ASSERT_EQ(losses[0].size(), 4u);
  ASSERT_EQ(losses[1].size(), 4u);
  // The same float32 steps on features that differ by a few storage-rounding
  // flips: within one forward + backward rounding budget of the head, relative.
  HeadConfig head;
  head.width = train.manifest().backbone.width, head.grid = train.manifest().backbone.grid;
  head.frames = train.manifest().frames, head.decoder_layers = train.layers();
  const double loss_tol = test::rounding_budget(head) * test::unit_roundoff(torch::kFloat);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_NEAR(losses[0][i], losses[1][i], loss_tol * losses[1][i]) << "step " << i;
  EXPECT_EQ(top1[0], top1[1]);
  EXPECT_GE(top1[0], 0.0);
}

// |a - b| within what a different GEMM batch composition can do to features
// stored as fp16 (see expect_same_items): one fp16 step plus the backbone's
// float32 rounding budget at the tensor's scale.
void expect_same_features(const FeatureBatch& a, const FeatureBatch& b, const cache::Manifest& m,
                          const std::string& what) {
  ASSERT_EQ(a.x.size(), b.x.size());
  const auto& bb = m.backbone;
  const double noise =
      2 * test::vit_rounding_budget(bb.depth, bb.width, bb.patch, 1 + bb.grid * bb.grid) *
      test::unit_roundoff(torch::kFloat);
  for (size_t i = 0; i < a.x.size(); ++i)
    for (const auto& [ta, tb] : std::vector<std::pair<torch::Tensor, torch::Tensor>>{
             {a.x[i], b.x[i]}, {a.q[i], b.q[i]}, {a.k[i], b.k[i]}}) {
      const auto allowed = tb.abs() * std::ldexp(1.0, -10) + noise * tb.abs().max();
      EXPECT_TRUE(((ta - tb).abs() <= allowed).all().item<bool>())
          << what << " layer " << i << ": max |diff| " << (ta - tb).abs().max().item<double>();
    }
}

TEST_F(OnlineDatasetTest, FreshViewsAreLaterViewsOfACacheAndChangeEveryEpoch) {
  OnlineConfig cfg = base_config();
  cfg.replay_views = false;
  const OnlineDataset fresh(cfg, cfg.list, OnlineDataset::Views::kTrain, 5, 0, backbone_);
  ASSERT_TRUE(fresh.fresh_views());
  const int64_t n = fresh.num_clips(), batch = 3, epochs = 3;
  // The reference: a cache of K = 3 views per clip with the same seed.
  OnlineConfig replay = base_config();
  replay.views.train_views = epochs;
  const OnlineDataset k3(replay, replay.list, OnlineDataset::Views::kTrain, 5, 0, backbone_);
  const CachedDataset cached(extract(k3, "fresh-k3-cache").string(), 0);
  // Three epochs of steps: every clip once per epoch, epoch e as draw e, which
  // is the cache's view e of that clip (record clip * K + e).
  std::map<int64_t, std::set<int64_t>> draws;  // clip -> draws seen
  for (int64_t step = 0; step * batch < epochs * n; ++step) {
    const auto items = fresh.train_batch(9, step, batch);
    EXPECT_EQ(items, fresh.train_batch(9, step, batch)) << "not a pure function of the step";
    std::vector<int64_t> as_cached;
    for (size_t i = 0; i < items.size(); ++i) {
      const int64_t pos = step * batch + static_cast<int64_t>(i);
      const int64_t clip = items[i] % n, draw = items[i] / n;
      EXPECT_EQ(draw, pos / n) << "step " << step;
      draws[clip].insert(draw);
      as_cached.push_back(clip * epochs + draw);
    }
    const FeatureBatch a = fresh.load(items), b = cached.load(as_cached);
    EXPECT_TRUE(torch::equal(a.labels, b.labels));
    EXPECT_EQ(a.clip_index, b.clip_index);
    expect_same_features(a, b, fresh.manifest(), "step " + std::to_string(step));
  }
  ASSERT_EQ(static_cast<int64_t>(draws.size()), n);
  for (const auto& [clip, d] : draws) EXPECT_EQ(d, (std::set<int64_t>{0, 1, 2})) << clip;
  // Two epochs of the same clip: different views, so different features.
  const FeatureBatch e0 = fresh.load({0}), e1 = fresh.load({n});
  EXPECT_GT((e0.x.back() - e1.x.back()).abs().max().item<double>(),
            0.1 * e0.x.back().abs().max().item<double>());
}

TEST_F(OnlineDatasetTest, FreshViewsResumeBitExactly) {
  OnlineConfig cfg = base_config();
  cfg.replay_views = false;
  const OnlineDataset train(cfg, cfg.list, OnlineDataset::Views::kTrain, 7, 0, backbone_);
  TrainConfig tc;
  tc.steps = 6, tc.batch_size = 3, tc.seed = 7, tc.lr = 1e-3, tc.mlp_dropout = 0.1;
  tc.save_every = 3, tc.log_every = 1, tc.eval_every = 0, tc.precision = "fp32";
  // Straight through 6 steps (3 epochs of fresh views: 8 clips, 3 per step),
  // then a run interrupted after step 3 (its checkpoint as last.pth) resumed.
  tc.out = (root_ / "fresh-straight").string();
  train_head(tc, "", train, nullptr);
  TrainConfig split = tc;
  split.out = (root_ / "fresh-split").string();
  fs::create_directories(split.out);
  fs::copy_file(fs::path(tc.out) / "checkpoint-3.pth", fs::path(split.out) / "last.pth");
  split.resume = true;
  train_head(split, "", train, nullptr);
  const StateDict a = read_state_dict((fs::path(tc.out) / "last.pth").string());
  const StateDict b = read_state_dict((fs::path(split.out) / "last.pth").string());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
  // The checkpoint says what the head saw.
  const std::string ini = slurp(fs::path(tc.out) / "config.ini");
  EXPECT_NE(ini.find("augment = rand-m7-n4-mstd0.5-inc1"), std::string::npos) << ini;
}

TEST_F(OnlineDatasetTest, ABrokenVideoStopsLoadingNamingTheFile) {
  const fs::path list = root_ / "broken.txt", bad = root_ / "data" / "not_a_video.mp4";
  std::ofstream(bad) << "this is not a video";
  std::ofstream(list) << "not_a_video.mp4 1\n";  // relative to --root
  OnlineConfig cfg = base_config();
  const OnlineDataset online(cfg, list.string(), OnlineDataset::Views::kTrain, 0, 0, backbone_);
  try {
    online.load({0});
    FAIL() << "a broken video was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not_a_video.mp4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line 1"), std::string::npos) << e.what();
  }
}

TEST_F(OnlineDatasetTest, CommandLineModesAndUsageErrors) {
  const OnlineConfig cfg = base_config();
  const std::string videos =
      " --list " + cfg.list + " --root " + cfg.root + " --backbone " + kBackbone;
  const fs::path out = root_ / "cli";
  auto run = [&](const std::string& flags, const std::string& name) {
    const std::string log = (root_ / (name + ".log")).string();
    const int rc = sh(kTrainHead + " " + flags + " --out " + (out / name).string() +
                      " --steps 2 --batch-size 2 --threads 1 >" + log + " 2>&1");
    return std::pair{rc, slurp(log)};
  };
  // Usage errors (exit 2), each with a message naming the flag.
  const auto cache_and_online = run("--online --cache /nonexistent" + videos, "e1");
  EXPECT_EQ(cache_and_online.first, 2) << cache_and_online.second;
  EXPECT_NE(cache_and_online.second.find("--cache"), std::string::npos);
  const auto val_cache_and_online = run("--online --val-cache /nonexistent" + videos, "e2");
  EXPECT_EQ(val_cache_and_online.first, 2) << val_cache_and_online.second;
  const auto list_without_online = run("--cache /nonexistent --list " + cfg.list, "e3");
  EXPECT_EQ(list_without_online.first, 2) << list_without_online.second;
  EXPECT_NE(list_without_online.second.find("--list"), std::string::npos);
  const auto frames_without_online = run("--cache /nonexistent --frames 4", "e4");
  EXPECT_EQ(frames_without_online.first, 2) << frames_without_online.second;
  EXPECT_NE(frames_without_online.second.find("--frames"), std::string::npos);
  const auto flip_without_online = run("--cache /nonexistent --flip", "e5");
  EXPECT_EQ(flip_without_online.first, 2) << flip_without_online.second;
  const auto online_without_list = run("--online --backbone " + kBackbone, "e6");
  EXPECT_EQ(online_without_list.first, 2) << online_without_list.second;
  const auto no_train_views =
      run("--online --train-views 0 --frames 4 --stride 3 --layers last2" + videos, "e7");
  EXPECT_EQ(no_train_views.first, 2) << no_train_views.second;

  // A real online run records its online settings in config.ini.
  const auto ok =
      run("--online --frames 4 --stride 3 --layers last2 --val-list " + cfg.val_list + videos,
          "online");
  ASSERT_EQ(ok.first, 0) << ok.second;
  const std::string ini = slurp(out / "online" / "config.ini");
  for (const char* line :
       {"online = true", "frames = 4", "layers = last2", "dtype = fp16", "train-views = 1"})
    EXPECT_NE(ini.find(line), std::string::npos) << line << " not in\n" << ini;
  EXPECT_TRUE(fs::exists(out / "online" / "last.pth"));
}

}  // namespace
