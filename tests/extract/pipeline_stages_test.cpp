// The extraction stages of extract/pipeline_stages.h one at a time, against
// oracles that do not go through them: the list order and group arithmetic
// written out, a direct ClipVision forward over the same images (for the
// regrouping of features per clip, view and block), the failures file and the
// records read back with CacheReader; with --dtype int8/fp8 a clip whose
// features hold a NaN fails with its reason instead of being stored.
#include "extract/pipeline_stages.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "cache/cache.h"
#include "extract/features.h"
#include "tests/support/quant_reference.h"
#include "tests/support/test_support.h"

namespace evl {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

class Stages : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("stages");
    for (int i = 0; i < 5; ++i)
      ASSERT_NE(test::make_lossless_video(
                    dir_->str(), "v" + std::to_string(i) + ".mkv",
                    "testsrc2=size=48x32:rate=10:duration=" + std::to_string(2 + i)),
                "");
  }
  static void TearDownTestSuite() { delete dir_; }

  // A list of the five videos with `missing` (if >= 0) replaced by a file that is not there.
  ExtractConfig config(const std::string& out, int missing = -1) const {
    std::string text;
    for (int i = 0; i < 5; ++i)
      text += (i == missing ? std::string("absent.mkv") : "v" + std::to_string(i) + ".mkv") + " " +
              std::to_string(i % 3) + "\n";
    const std::string list = *dir_ / (out + ".txt");
    test::write_text(list, text);
    ExtractConfig c;
    c.list = list;
    c.root = dir_->str();
    c.backbone = test::tiny_backbone();
    c.out = *dir_ / out;
    c.views.frames = 3;
    c.views.stride = 2;
    c.views.temporal_views = 2;
    c.views.layers = "last2";
    c.batch_size = 4;  // 2 views per clip: groups of 2 clips
    c.threads = 1;
    return c;
  }

  // The next `n` work items, emitted and decoded: one batch for forward/write.
  static std::unique_ptr<Batch> decoded_batch(ExtractionJob& job, int n) {
    auto batch = std::make_unique<Batch>();
    for (int i = 0; i < n; ++i) {
      auto w = job.emit();
      job.decode(*w);
      batch->push_back(std::move(w));
    }
    return batch;
  }

  static TempDir* dir_;
};
TempDir* Stages::dir_ = nullptr;

TEST_F(Stages, EmitFollowsTheListAndCollectFormsFixedGroups) {
  ExtractionJob job(config("emit"));
  ASSERT_EQ(job.group_size(), 2);  // batch_size / views per clip
  EXPECT_EQ(job.todo(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  std::vector<std::vector<int64_t>> batches;
  auto keep = [&](std::unique_ptr<Batch> b) {
    if (!b) return;
    batches.emplace_back();
    for (const auto& w : *b) batches.back().push_back(w->clip_index);
  };
  for (int64_t expected = 0;; ++expected) {
    auto w = job.emit();
    if (!w) break;
    EXPECT_EQ(w->clip_index, expected);
    EXPECT_EQ(w->entry->path, "v" + std::to_string(expected) + ".mkv");
    keep(job.collect(std::move(w)));
  }
  keep(job.collect(nullptr));  // the end flushes the last, partial group
  EXPECT_EQ(batches, (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}, {4}}));
}

TEST_F(Stages, ForwardRegroupsEveryClipsViewsAndBlocks) {
  ExtractConfig cfg = config("forward", /*missing=*/0);
  ExtractionJob job(cfg);
  // Group {0, 1} with clip 0 failing to decode: only clip 1's views are run.
  const auto owned = decoded_batch(job, 2);
  Batch& batch = *owned;
  EXPECT_NE(batch[0]->error.find("absent.mkv"), std::string::npos) << batch[0]->error;
  ASSERT_TRUE(batch[1]->error.empty()) << batch[1]->error;
  job.forward(batch);
  EXPECT_TRUE(batch[0]->features.x.empty());
  const auto& f = batch[1]->features;
  ASSERT_EQ(f.x.size(), 2u);  // blocks 1, 2
  ASSERT_EQ(f.q.size(), 2u);
  // Oracle: the model over the clip's two views in one forward (the batch's shape).
  LoadedBackbone bb = load_backbone(cfg.backbone);
  torch::NoGradGuard no_grad;
  const auto images = torch::cat({batch[1]->views[0].pixels, batch[1]->views[1].pixels}, 0);
  const BackboneOutput direct = bb.model->forward(images, {1, 2});
  for (size_t i = 0; i < 2; ++i)
    for (int64_t v = 0; v < 2; ++v) {
      const auto rows = [&](const torch::Tensor& t) { return t.narrow(0, v * 3, 3); };
      EXPECT_TRUE(torch::equal(f.x[i][v], rows(direct.layers[i].x)))
          << "block " << i << " view " << v;
      EXPECT_TRUE(torch::equal(f.q[i][v], rows(direct.layers[i].q)))
          << "block " << i << " view " << v;
      EXPECT_TRUE(torch::equal(f.k[i][v], rows(direct.layers[i].k)))
          << "block " << i << " view " << v;
    }
}

TEST_F(Stages, WriteRecordsGoodClipsListsFailuresAndStopsPastTheLimit) {
  ExtractConfig cfg = config("write", /*missing=*/1);
  cfg.max_failures = 0;
  std::string fatal;
  {
    ExtractionJob job(cfg);
    auto batch = decoded_batch(job, 2);
    job.forward(*batch);
    fatal = job.write(*batch);
    job.finish(false);
  }
  EXPECT_NE(fatal.find("--max-failures 0"), std::string::npos) << fatal;
  EXPECT_NE(fatal.find("failures.tsv"), std::string::npos) << fatal;
  // The failures file: path, list line, reason.
  const std::string failures = test::slurp(fs::path(cfg.out) / "failures.tsv");
  EXPECT_EQ(failures.rfind("absent.mkv\t2\t", 0), 0u) << failures;
  // The good clip's two views were committed, with the list's label and video id.
  const cache::CacheReader reader(cfg.out);
  EXPECT_EQ(reader.keys(), (std::vector<std::string>{"0000000000/000", "0000000000/001"}));
  reader.with_record("0000000000/001", [](const cache::RecordView& r) {
    EXPECT_EQ(r.video_id, "v0.mkv");
    EXPECT_EQ(r.label, 0);
    EXPECT_EQ(r.array("x").shape, (std::vector<int64_t>{2, 3, 17, 32}));  // (M, T, L, C)
  });
}

TEST_F(Stages, QuantizedStorageFailsAClipWithNonFiniteFeatures) {
  for (const std::string dtype : {"int8", "fp8"})
    for (const std::string store : {"qk", "compact"}) {
      SCOPED_TRACE(dtype + " " + store);
      ExtractConfig cfg = config("nan_" + dtype + "_" + store);
      cfg.views.dtype = dtype;
      cfg.store = store;
      ExtractionJob job(cfg);
      auto batch = decoded_batch(job, 2);
      job.forward(*batch);
      // A NaN in one value of clip 1 (one block, one view, one token, one channel).
      auto& f = (*batch)[1]->features;
      ASSERT_FALSE(f.x.empty());
      torch::Tensor poisoned = f.x.back().clone();  // (features are inference tensors)
      poisoned[1][2][3][4] = std::numeric_limits<float>::quiet_NaN();
      f.x.back() = poisoned;
      const torch::Tensor clip0 = (*batch)[0]->features.x.back().clone();  // (V, T, L, C)
      EXPECT_EQ(job.write(*batch), "");  // --max-failures -1 (default): not fatal
      job.finish(false);

      const std::string failures = test::slurp(fs::path(cfg.out) / "failures.tsv");
      EXPECT_EQ(failures.rfind("v1.mkv\t2\tnon-finite features (1 NaN, 0 inf in ", 0), 0u)
          << failures;
      EXPECT_NE(failures.find(dtype + " storage cannot represent them (x of block 2)"),
                std::string::npos)
          << failures;
      EXPECT_EQ(std::count(failures.begin(), failures.end(), '\n'), 1);
      // Clip 0 was stored quantized, within the scheme's bound of its features.
      const cache::CacheReader reader(cfg.out);
      EXPECT_EQ(reader.keys(), (std::vector<std::string>{"0000000000/000", "0000000000/001"}));
      EXPECT_EQ(cache::to_string(reader.manifest().dtype), dtype);
      const cache::Record r = reader.get("0000000000/001");
      const cache::Array& x = r.array("x");
      EXPECT_EQ(cache::to_string(x.dtype), dtype);
      const torch::Tensor want = clip0[1].contiguous();  // view 1, the last stored block
      const int64_t per_block = want.numel();
      const int64_t blocks = x.shape[0];
      // The last block of the record, cut out of the payload per FORMAT.md, as
      // an array of shape (1, T, L, C): one slice, so its column scales and
      // centers are that block's.
      std::vector<int64_t> shape(x.shape.begin(), x.shape.end());
      shape[0] = 1;
      cache::Array last{x.dtype, shape, {}};
      const auto parts = test::split_quantized(x.dtype, x.shape, x.bytes.data());
      const size_t codes = static_cast<size_t>(per_block),
                   scales = static_cast<size_t>(per_block / x.shape.back() * parts.groups),
                   width = static_cast<size_t>(x.shape.back());
      const size_t scales_at = (codes + 63) / 64 * 64;
      const bool centers = test::spec_has_centers(x.dtype);
      last.bytes.assign(
          scales_at + 2 * scales + (parts.columns ? 2 * width : 0) + (centers ? 2 * width : 0), 0);
      std::memcpy(last.bytes.data(), parts.codes + (blocks - 1) * per_block, codes);
      std::memcpy(last.bytes.data() + scales_at, parts.scales.data() + (blocks - 1) * scales,
                  2 * scales);
      if (parts.columns)
        std::memcpy(last.bytes.data() + scales_at + 2 * scales,
                    parts.cols.data() + (blocks - 1) * width, 2 * width);
      if (centers)
        std::memcpy(last.bytes.data() + scales_at + 2 * scales + 2 * width,
                    parts.mids.data() + (blocks - 1) * width, 2 * width);
      EXPECT_EQ(test::check_within_bound(last, want.data_ptr<float>()), "");
    }
}

TEST_F(Stages, PlanSkipsWhatARunCommitted) {
  ExtractConfig cfg = config("resume");
  run_extraction(cfg, nullptr);
  ExtractionJob again(cfg);
  EXPECT_TRUE(again.todo().empty());
}

}  // namespace
}  // namespace evl
