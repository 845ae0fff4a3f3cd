// Tests the ensemble library: the simplex grid, a two-model case whose best
// alpha is known by construction, the tie-break, the pruned search against the
// dense brute force (fuse + compute_metrics) with exact ties, and alignment errors.
#include "ensemble/ensemble.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "common/check.h"
#include "tests/support/test_support.h"

namespace {

evl::AlignedScores make(int64_t k, const std::vector<std::vector<std::vector<float>>>& rows,
                        const std::vector<int64_t>& labels) {
  // rows[m][i] = probabilities of video i under model m.
  evl::AlignedScores s;
  s.num_classes = k;
  s.labels = labels;
  for (size_t i = 0; i < labels.size(); ++i) s.video_ids.push_back("v" + std::to_string(i));
  for (const auto& model : rows) {
    std::vector<float> flat;
    for (const auto& r : model) flat.insert(flat.end(), r.begin(), r.end());
    s.probs.push_back(flat);
    s.models.push_back("m" + std::to_string(s.models.size()));
  }
  return s;
}

evl::ScoreFile file(std::vector<std::string> ids, int64_t k, std::vector<int64_t> labels) {
  evl::ScoreFile f;
  f.video_ids = std::move(ids);
  f.labels = std::move(labels);
  f.scores.assign(f.video_ids.size() * k, 1.0f / static_cast<float>(k));
  return f;
}

using evl::test::error_of;

}  // namespace

TEST(SimplexGrid, CountsOrderAndLimits) {
  const auto g2 = evl::simplex_grid(2, 0.1);
  ASSERT_EQ(g2.num_points(), 11);
  for (int64_t p = 0; p < 11; ++p) {
    EXPECT_DOUBLE_EQ(g2.weights(p)[0], p / 10.0);
    EXPECT_EQ(g2.counts[p * 2] + g2.counts[p * 2 + 1], 10);
  }
  EXPECT_EQ(evl::simplex_grid(3, 0.1).num_points(), 66);
  EXPECT_EQ(evl::simplex_grid(4, 0.25).num_points(), 35);
  EXPECT_EQ(evl::simplex_grid(5, 0.1).num_points(), 1001);
  const auto g3 = evl::simplex_grid(3, 0.2);
  std::set<std::vector<int32_t>> seen;
  std::vector<int32_t> prev;
  for (int64_t p = 0; p < g3.num_points(); ++p) {
    std::vector<int32_t> c(g3.counts.begin() + p * 3, g3.counts.begin() + p * 3 + 3);
    EXPECT_EQ(c[0] + c[1] + c[2], 5);
    EXPECT_TRUE(seen.insert(c).second);
    if (!prev.empty()) {
      EXPECT_LT(prev, c);  // ascending lexicographic
    }
    prev = c;
  }
  EXPECT_EQ(seen.size(), 21u);  // C(7, 2)
  EXPECT_THROW(evl::simplex_grid(2, 0.3), evl::UsageError);
  EXPECT_THROW(evl::simplex_grid(2, 0.0), evl::UsageError);
  EXPECT_THROW(evl::simplex_grid(2, 1.5), evl::UsageError);
  EXPECT_THROW(evl::simplex_grid(1, 0.1), evl::UsageError);
  EXPECT_THROW(evl::simplex_grid(12, 0.01), evl::UsageError);  // too many points
}

TEST(Search, TwoModelsBestAlphaKnownByConstruction) {
  // Two classes. Fused score of the label for alpha = a (weight of model 1):
  //  type X (label 0): p1 = (u, 1-u), p2 = (0, 1): correct iff a > 1/(2u) = 0.65
  //  type Y (label 1): p1 = (w, 1-w), p2 = (0, 1): correct iff a < 1/(2w) = 0.75
  // so only alpha = 0.7 gets both types right; 4 videos of each type.
  const float u = static_cast<float>(1.0 / 1.3), w = static_cast<float>(1.0 / 1.5);
  std::vector<std::vector<float>> m1, m2;
  std::vector<int64_t> labels;
  for (int i = 0; i < 4; ++i) {
    m1.push_back({u, 1 - u}), m2.push_back({0, 1}), labels.push_back(0);
    m1.push_back({w, 1 - w}), m2.push_back({0, 1}), labels.push_back(1);
  }
  const auto s = make(2, {m1, m2}, labels);
  const auto grid = evl::simplex_grid(2, 0.1);
  const auto points = evl::evaluate_grid(s, grid, 2);
  for (int64_t p = 0; p < grid.num_points(); ++p) {
    const double a = grid.weights(p)[0];
    const int64_t want = 4 * (a > 0.65) + 4 * (a < 0.75);
    EXPECT_EQ(points[p].top1_hits, want) << "alpha " << a;
    EXPECT_EQ(points[p].top5_hits, 8);  // K = 2: everything is in the top-2
  }
  const int64_t best = evl::choose_best(grid, points);
  EXPECT_DOUBLE_EQ(grid.weights(best)[0], 0.7);
  // Finer grid: 0.66..0.74 all tie at 8/8, so the tie-break picks the one
  // closest to uniform: 0.66 (step 0.02).
  const auto fine = evl::simplex_grid(2, 0.02);
  const auto fp = evl::evaluate_grid(s, fine, 1);
  EXPECT_NEAR(fine.weights(evl::choose_best(fine, fp))[0], 0.66, 1e-12);
}

TEST(Search, TieBreakPrefersUniformThenGridOrder) {
  std::vector<std::vector<float>> m = {{0.6f, 0.4f}, {0.3f, 0.7f}};
  const std::vector<int64_t> labels = {0, 1};
  const auto s2 = make(2, {m, m}, labels);
  const auto g2 = evl::simplex_grid(2, 0.1);
  EXPECT_DOUBLE_EQ(g2.weights(evl::choose_best(g2, evl::evaluate_grid(s2, g2)))[0], 0.5);
  const auto s3 = make(2, {m, m, m}, labels);
  const auto g3 = evl::simplex_grid(3, 0.1);
  const int64_t best = evl::choose_best(g3, evl::evaluate_grid(s3, g3));
  // (3,3,4), (3,4,3) and (4,3,3) are equally close to uniform; (3,3,4) is first.
  EXPECT_EQ(std::vector<int32_t>(g3.counts.begin() + best * 3, g3.counts.begin() + best * 3 + 3),
            (std::vector<int32_t>{3, 3, 4}));
}

TEST(Search, PrunedSearchEqualsDenseBruteForceWithTies) {
  for (int64_t models : {2, 3, 4}) {
    for (bool coarse : {false, true}) {
      SCOPED_TRACE(std::to_string(models) + (coarse ? " coarse" : " random"));
      std::mt19937 rng(static_cast<uint32_t>(models * 10 + coarse));
      const int64_t n = 300, k = 9;
      std::vector<std::vector<std::vector<float>>> rows(models);
      std::vector<int64_t> labels(n);
      for (auto& y : labels) y = rng() % 11 == 0 ? -1 : static_cast<int64_t>(rng() % k);
      for (auto& model : rows)
        for (int64_t i = 0; i < n; ++i) {
          std::vector<float> r(k);
          float sum = 0;
          for (auto& v : r) sum += v = coarse ? static_cast<float>(rng() % 3) : rng() % 1000 + 1.f;
          if (sum == 0) r[0] = sum = 1;
          for (auto& v : r) v = coarse ? v / 4.0f : v / sum;  // coarse: exact ties in fusions
          model.push_back(r);
        }
      const auto s = make(k, rows, labels);
      const auto grid = evl::simplex_grid(models, models == 4 ? 0.25 : 0.1);
      const auto points = evl::evaluate_grid(s, grid, 3);
      for (int64_t p = 0; p < grid.num_points(); ++p) {
        const auto fused = evl::fuse(s, grid.weights(p));
        const auto m = evl::compute_metrics(fused.data(), n, k, labels);
        EXPECT_EQ(points[p].num_labelled, m.num_labelled);
        EXPECT_DOUBLE_EQ(points[p].top1(), m.top1) << p;
        EXPECT_DOUBLE_EQ(points[p].top5(), m.top5) << p;
      }
    }
  }
}

TEST(Align, ReordersByIdAndMergesLabels) {
  evl::ScoreFile a = file({"x", "y", "z"}, 2, {0, -1, 1});
  a.scores = {0.9f, 0.1f, 0.2f, 0.8f, 0.5f, 0.5f};
  evl::ScoreFile b = file({"z", "x", "y"}, 2, {-1, 0, 1});
  b.kind = evl::ScoreKind::kLogits;
  b.scores = {0, 0, 1, 0, 0, 1};
  const auto s = evl::align_scores({a, b}, {"a.h5", "b.h5"}, false);
  EXPECT_EQ(s.video_ids, (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(s.labels, (std::vector<int64_t>{0, 1, 1}));
  EXPECT_FLOAT_EQ(s.probs[1][0], static_cast<float>(std::exp(1.0) / (1 + std::exp(1.0))));
  EXPECT_FLOAT_EQ(s.probs[1][4], 0.5f);  // z: logits (0, 0)
}

TEST(Align, ErrorsNameFilesAndIds) {
  const auto a = file({"x", "y", "z", "w"}, 3, {0, 1, 2, 0});
  const auto b = file({"x", "y", "q"}, 3, {0, 1, 2});
  const std::string msg = error_of([&] { evl::align_scores({a, b}, {"a.h5", "b.h5"}, false); });
  EXPECT_NE(msg.find("'a.h5' and 'b.h5' cover different videos"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 only in the first ('z', 'w')"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1 only in the second ('q')"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--intersect"), std::string::npos) << msg;
  const auto s = evl::align_scores({a, b}, {"a.h5", "b.h5"}, true);
  EXPECT_EQ(s.video_ids, (std::vector<std::string>{"x", "y"}));

  const auto c = file({"x", "y", "z", "w"}, 5, {0, 1, 2, 0});
  EXPECT_NE(error_of([&] {
              evl::align_scores({a, c}, {"a.h5", "c.h5"}, false);
            }).find("'a.h5' and 'c.h5' have different class counts (3 vs 5)"),
            std::string::npos);
  const auto d = file({"x", "y", "z", "w"}, 3, {0, 2, 2, 0});
  EXPECT_NE(error_of([&] {
              evl::align_scores({a, d}, {"a.h5", "d.h5"}, false);
            }).find("'d.h5': video 'y' has label 2 but an earlier file says 1"),
            std::string::npos);
  const auto e = file({"p", "q"}, 3, {0, 1});
  EXPECT_NE(error_of([&] {
              evl::align_scores({a, e}, {"a.h5", "e.h5"}, true);
            }).find("no video id in common"),
            std::string::npos);
}
