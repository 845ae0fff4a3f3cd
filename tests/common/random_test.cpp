// common/random.h against independent references: published reference outputs
// of SplitMix64 and mt19937_64, libstdc++'s own distributions (on GCC, where the
// project promises bit-identical draws), and the statistics of the draws.
#include "common/random.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

namespace evl {
namespace {

TEST(Random, SplitMix64MatchesTheReferenceOutputs) {
  // Vigna's splitmix64.c from state 0: the first outputs.
  uint64_t s = 0;
  EXPECT_EQ(rng::splitmix64(s), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng::splitmix64(s), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng::splitmix64(s), 0x06c45d188009454fULL);
}

TEST(Random, EngineIsTheStandardsMt19937_64) {
  // [rand.predef]: the 10000th output of a default-constructed mt19937_64.
  rng::Engine g;
  for (int i = 0; i < 9999; ++i) g();
  EXPECT_EQ(g(), 9981545732273789042ULL);
}

#if defined(__GLIBCXX__)
TEST(Random, DistributionsEqualLibstdcxxOnThisLibrary) {
  // The promise of random.h: evl's draws are libstdc++'s (so caches made with
  // std:: distributions before keep their bytes), on any standard library.
  rng::Engine a(12345), b(12345);
  for (int i = 0; i < 20000; ++i) {
    const int64_t lo = (i % 7) - 3, hi = lo + (i % 1000) + (i % 3 == 0 ? 1000000007LL : 0);
    ASSERT_EQ(rng::uniform_int(a, lo, hi), std::uniform_int_distribution<int64_t>(lo, hi)(b)) << i;
    const double x = rng::uniform_real(a, -0.5, 2.0);
    ASSERT_EQ(x, std::uniform_real_distribution<double>(-0.5, 2.0)(b)) << i;
    ASSERT_EQ(rng::bernoulli(a, 0.3), std::bernoulli_distribution(0.3)(b)) << i;
  }
  // normal(): a fresh std::normal_distribution's first value (libstdc++ caches
  // the polar method's second value; rng::normal draws a new pair every call).
  for (int i = 0; i < 2000; ++i)
    ASSERT_EQ(rng::normal(a, 7.0, 0.5), std::normal_distribution<double>(7.0, 0.5)(b)) << i;
  // The full 64-bit range and a single value.
  EXPECT_EQ(rng::uniform_int(a, INT64_MIN, INT64_MAX),
            std::uniform_int_distribution<int64_t>(INT64_MIN, INT64_MAX)(b));
  EXPECT_EQ(rng::uniform_int(a, 5, 5), 5);
}
#endif

TEST(Random, UniformIntIsUniformAndInRange) {
  rng::Engine g(7);
  std::map<int64_t, int64_t> counts;
  const int64_t n = 60000;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = rng::uniform_int(g, -2, 3);
    ASSERT_GE(v, -2);
    ASSERT_LE(v, 3);
    ++counts[v];
  }
  ASSERT_EQ(counts.size(), 6u);
  // Each bin ~ Binomial(n, 1/6): sd = 91; 5 sd is far outside chance.
  for (const auto& [v, c] : counts) EXPECT_NEAR(c, n / 6, 5 * std::sqrt(n * (1.0 / 6) * (5.0 / 6)));
}

TEST(Random, CanonicalIsInUnitInterval) {
  rng::Engine g(3);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double c = rng::canonical(g);
    ASSERT_GE(c, 0.0);
    ASSERT_LT(c, 1.0);
    sum += c;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 5 * std::sqrt(1.0 / 12 / 100000));
}

TEST(Random, BelowIsUnbiasedAndSeedsAreDistinct) {
  uint64_t s = 42;
  std::map<uint64_t, int> counts;
  for (int i = 0; i < 30000; ++i) ++counts[rng::below(s, 3)];
  for (const auto& [v, c] : counts) EXPECT_NEAR(c, 10000, 5 * std::sqrt(30000 * (2.0 / 9)));
  EXPECT_NE(rng::step_seed(0, 0), rng::step_seed(0, 1));
  EXPECT_NE(rng::step_seed(0, 0), rng::step_seed(1, 0));
  EXPECT_LT(rng::step_seed(123, 456), uint64_t(1) << 63);  // a non-negative int64
  EXPECT_NE(rng::epoch_state(1, 0), rng::epoch_state(1, 1));
  EXPECT_NE(rng::view_choice_state(1, 0, 5), rng::view_choice_state(1, 0, 6));
  auto a = rng::view_engine(1, 2, 3), b = rng::view_engine(1, 2, 3), c = rng::view_engine(1, 3, 3);
  EXPECT_EQ(a(), b());
  EXPECT_NE(a(), c());
}

}  // namespace
}  // namespace evl
