// Sampling indices against values computed by hand from the official code.
#include "extract/sampling.h"

#include "common/check.h"

#include <gtest/gtest.h>

#include <set>

namespace evl {
namespace {

TEST(Sampling, RoundHalfEvenIsPythonRound) {
  EXPECT_EQ(round_half_even(93.5), 94);
  EXPECT_EQ(round_half_even(92.5), 92);
  EXPECT_EQ(round_half_even(0.5), 0);
  EXPECT_EQ(round_half_even(1.5), 2);
  EXPECT_EQ(round_half_even(2.4999), 2);
}

TEST(Sampling, DenseShortVideoRepeatsLastValidIndex) {
  std::mt19937_64 rng(0);
  EXPECT_EQ(dense_train_indices(90, 8, 16, rng),
            (std::vector<int64_t>{0, 16, 32, 48, 64, 80, 80, 80}));
  // Exactly the span: the short-video rule gives the full clip.
  EXPECT_EQ(dense_train_indices(113, 8, 16, rng),
            (std::vector<int64_t>{0, 16, 32, 48, 64, 80, 96, 112}));
  EXPECT_EQ(dense_train_indices(1, 4, 8, rng), (std::vector<int64_t>{0, 0, 0, 0}));
}

TEST(Sampling, DenseTrainStartIsUniformOverValidStarts) {
  std::mt19937_64 rng(1);
  std::vector<int> seen(300, 0);
  for (int i = 0; i < 20000; ++i) {
    auto idx = dense_train_indices(300, 8, 16, rng);
    ASSERT_EQ(idx.size(), 8u);
    for (int k = 1; k < 8; ++k) ASSERT_EQ(idx[k] - idx[k - 1], 16);
    ASSERT_LE(idx.back(), 299);
    seen[idx[0]]++;
  }
  // randint(300 - 112) covers starts 0..187 and nothing else.
  for (int s = 0; s < 300; ++s) EXPECT_EQ(seen[s] > 0, s <= 187) << s;
}

TEST(Sampling, TemporalViewStarts) {
  EXPECT_EQ(temporal_view_starts(300, 8, 16, 3), (std::vector<int64_t>{0, 94, 187}));
  EXPECT_EQ(temporal_view_starts(300, 8, 16, 1), (std::vector<int64_t>{93}));  // slide // 2
  EXPECT_EQ(temporal_view_starts(280, 32, 8, 1), (std::vector<int64_t>{15}));  // (280-249)//2
  EXPECT_EQ(temporal_view_starts(90, 8, 16, 3), (std::vector<int64_t>{0, 0, 0}));
  // slide 10, 4 views: round(10/3*i) = 0, 3, 7, 10.
  EXPECT_EQ(temporal_view_starts(123, 8, 16, 4), (std::vector<int64_t>{0, 3, 7, 10}));
  EXPECT_EQ(dense_view_indices(90, 0, 8, 16),
            (std::vector<int64_t>{0, 16, 32, 48, 64, 80, 89, 89}));
}

TEST(Sampling, TsnSegments) {
  // n=17, T=4: seg=4; segments [0,4], [4,8], [8,12], [12,16].
  std::mt19937_64 rng(5);
  std::vector<std::set<int64_t>> seen(4);
  for (int i = 0; i < 2000; ++i) {
    auto idx = tsn_train_indices(17, 4, rng);
    for (int k = 0; k < 4; ++k) seen[k].insert(idx[k]);
  }
  for (int k = 0; k < 4; ++k)
    EXPECT_EQ(seen[k], (std::set<int64_t>{4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 4}));
  EXPECT_EQ(tsn_test_indices(17, 4, 0, 1), (std::vector<int64_t>{2, 6, 10, 14}));
  // n=10, T=3: seg=3, centres at 1.5, 4.5, 7.5 -> round half even 2, 4, 8.
  EXPECT_EQ(tsn_test_indices(10, 3, 0, 1), (std::vector<int64_t>{2, 4, 8}));
}

TEST(Sampling, TrimRange) {
  std::vector<double> t;
  for (int i = 0; i < 100; ++i) t.push_back(i * 0.1);
  auto r = trim_range(t, 2.0, 5.0);
  EXPECT_EQ(r.first, 20);
  EXPECT_EQ(r.count, 30);
  r = trim_range(t, -1, -1);
  EXPECT_EQ(r.count, 100);
  r = trim_range(t, 9.95, 10.5);  // inside the last frame's display: that frame
  EXPECT_EQ(r.first, 99);
  EXPECT_EQ(r.count, 1);
  r = trim_range(t, 2.01, 2.05);  // between two frames: the nearest later one
  EXPECT_EQ(r.first, 21);
  EXPECT_EQ(r.count, 1);
  // Past the end of the video: an error, not the last frame.
  try {
    trim_range(t, 50.0, 60.0);
    FAIL() << "no error";
  } catch (const evl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("after the end of the video"), std::string::npos)
        << e.what();
  }
}

TEST(Sampling, ViewRngIsReproduciblePerView) {
  auto a = rng::view_engine(1, 2, 3), b = rng::view_engine(1, 2, 3), c = rng::view_engine(1, 2, 4),
       d = rng::view_engine(2, 2, 3);
  auto x = a();
  EXPECT_EQ(x, b());
  EXPECT_NE(x, c());
  EXPECT_NE(x, d());
}

}  // namespace
}  // namespace evl
