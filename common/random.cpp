// The generators and distributions of random.h. The distribution code follows
// libstdc++ 12 (bits/uniform_int_dist.h, bits/random.tcc) step for step; the
// tests compare it with std:: on GCC and with hand-computed values.
#include "common/random.h"

#include <cmath>

#include "common/check.h"

namespace evl::rng {

namespace {
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
__extension__ typedef unsigned __int128 U128;  // GCC/Clang: a 128-bit product
}  // namespace

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t splitmix64(uint64_t& state) { return mix64(state += kGolden); }

uint64_t below(uint64_t& state, uint64_t n) {
  EVL_CHECK(n >= 1, "rng::below: empty range");
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = splitmix64(state);
    if (x >= threshold) return x % n;
  }
}

int64_t uniform_int(Engine& g, int64_t lo, int64_t hi) {
  EVL_CHECK(lo <= hi, "rng::uniform_int: empty range [", lo, ", ", hi, "]");
  static_assert(Engine::min() == 0 && Engine::max() == UINT64_MAX, "64-bit engine expected");
  const uint64_t urange = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (urange == UINT64_MAX) return static_cast<int64_t>(g() + static_cast<uint64_t>(lo));
  const uint64_t erange = urange + 1;
  // Lemire, "Fast Random Integer Generation in an Interval" (2019).
  U128 product = static_cast<U128>(g()) * erange;
  auto low = static_cast<uint64_t>(product);
  if (low < erange) {
    const uint64_t threshold = (0 - erange) % erange;
    while (low < threshold) {
      product = static_cast<U128>(g()) * erange;
      low = static_cast<uint64_t>(product);
    }
  }
  return static_cast<int64_t>(static_cast<uint64_t>(product >> 64) + static_cast<uint64_t>(lo));
}

double canonical(Engine& g) {
  // generate_canonical<double, 53> with a 2^64-range engine takes one draw.
  const double r = static_cast<double>(g()) / 18446744073709551616.0;  // 2^64
  return r >= 1.0 ? std::nextafter(1.0, 0.0) : r;
}

double uniform_real(Engine& g, double a, double b) { return canonical(g) * (b - a) + a; }

bool bernoulli(Engine& g, double p) { return canonical(g) < p; }

double normal(Engine& g, double mean, double stddev) {
  double x, y, r2;
  do {
    x = 2.0 * canonical(g) - 1.0;
    y = 2.0 * canonical(g) - 1.0;
    r2 = x * x + y * y;
  } while (r2 > 1.0 || r2 == 0.0);
  return y * std::sqrt(-2.0 * std::log(r2) / r2) * stddev + mean;
}

Engine view_engine(uint64_t seed, int64_t clip_index, int64_t view_index) {
  std::seed_seq seq{static_cast<uint32_t>(seed),       static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(clip_index), static_cast<uint32_t>(clip_index >> 32),
                    static_cast<uint32_t>(view_index), 0x45564cu};
  return Engine(seq);
}

Engine augment_engine(uint64_t seed, int64_t clip_index, int64_t view_index) {
  std::seed_seq seq{static_cast<uint32_t>(seed),       static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(clip_index), static_cast<uint32_t>(clip_index >> 32),
                    static_cast<uint32_t>(view_index), 0x52414e44u};
  return Engine(seq);
}

uint64_t step_seed(uint64_t seed, int64_t step) {
  return mix64(seed * kGolden + static_cast<uint64_t>(step) + 1) & 0x7fffffffffffffffULL;
}

uint64_t epoch_state(uint64_t seed, int64_t epoch) {
  return seed * 0x2545f4914f6cdd1dULL + static_cast<uint64_t>(epoch);
}

uint64_t view_choice_state(uint64_t seed, int64_t epoch, int64_t clip_index) {
  return seed ^ (static_cast<uint64_t>(epoch) * kGolden) ^
         (static_cast<uint64_t>(clip_index) * 0xc2b2ae3d27d4eb4fULL);
}

uint64_t read_order_state(uint64_t seed, int64_t epoch) {
  return seed ^ (0xd1b54a32d192ed03ULL * (static_cast<uint64_t>(epoch) + 1));
}

}  // namespace evl::rng
