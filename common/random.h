// Randomness in evl, in one place (docs/ARCHITECTURE.md §6). The policy:
//  - Every draw whose result must reproduce (training views and their
//    augmentations, the training sampler, dropout seeds, shuffled cache reads)
//    comes from this header, never from std::*_distribution. The C++ standard
//    specifies the engines (std::mt19937_64) and std::seed_seq exactly, but not
//    the distributions: libstdc++ and libc++ draw different numbers from the
//    same engine, so a cache or a training run would change with the library.
//  - Generators are seeded from a tuple (seed, clip, view) or (seed, step) by a
//    derivation written down here, so every item is reproducible on its own,
//    whatever the threads, batching, sharding or resume point.
//  - The distributions reproduce, bit for bit, the algorithms of libstdc++ 12
//    (GCC 12, Debian 12) on a 64-bit engine, which evl used before this header
//    existed: caches and runs made then keep their bytes.
// No LibTorch here. LibTorch's own generator (dropout masks) is seeded from
// step_seed(); its algorithm is LibTorch's and does not depend on the C++ library.
#pragma once

#include <cstdint>
#include <random>

namespace evl::rng {

// The engine of views and augmentations (fully specified by the standard).
using Engine = std::mt19937_64;

// SplitMix64 (Steele, Lea, Flood 2014; Vigna's constants): advances `state` by
// the golden-ratio increment and returns the mixed output.
uint64_t splitmix64(uint64_t& state);
// SplitMix64's output function alone: a bijective 64-bit mix.
uint64_t mix64(uint64_t z);
// Uniform in [0, n), n >= 1, from splitmix64 without modulo bias (rejects the
// (2^64 mod n) lowest outputs).
uint64_t below(uint64_t& state, uint64_t n);

// --- distributions on an Engine (libstdc++ 12's algorithms) ---
// Uniform integer in [lo, hi] (lo <= hi), as std::uniform_int_distribution:
// Lemire's multiply-and-reject with a 128-bit product.
int64_t uniform_int(Engine& g, int64_t lo, int64_t hi);
// Uniform double in [0, 1), as std::generate_canonical<double, 53>: one 64-bit
// draw divided by 2^64 (a result that rounds to 1 becomes the largest double < 1).
double canonical(Engine& g);
// Uniform double a + (b - a) * canonical(g), as std::uniform_real_distribution.
double uniform_real(Engine& g, double a, double b);
// True with probability p: canonical(g) < p, as std::bernoulli_distribution.
bool bernoulli(Engine& g, double p);
// Normal with mean `mean` and standard deviation `stddev` (>= 0) by Marsaglia's
// polar method, as std::normal_distribution: two canonical() draws per try
// mapped to [-1, 1), rejected outside the unit disc, then y * sqrt(-2 ln r2 / r2).
// libstdc++ keeps the pair's other value for its next call; this function does
// not (each call is independent of the previous ones), so it equals libstdc++'s
// odd-numbered results only.
double normal(Engine& g, double mean, double stddev);

// --- seed derivations ---
// The engine of training view `view_index` of clip `clip_index` (evl_extract
// --seed, evl_train_head --seed): std::seed_seq over the 32-bit words
// (seed lo, seed hi, clip lo, clip hi, view, 0x45564c "EVL").
Engine view_engine(uint64_t seed, int64_t clip_index, int64_t view_index);
// The engine of the augmentation draw (RandAugment) of the same view: the same
// words with the tag 0x52414e44 ("RAND"). Separate from view_engine so that the
// temporal start and crop of a view do not depend on whether it is augmented.
Engine augment_engine(uint64_t seed, int64_t clip_index, int64_t view_index);
// The LibTorch seed of optimiser step `step` (dropout masks; step -1 seeds the
// head's initial weights): mix64(seed * golden + step + 1), top bit cleared
// (torch::manual_seed takes a non-negative int64 in practice).
uint64_t step_seed(uint64_t seed, int64_t step);
// State of the training sampler's permutation of epoch `epoch`.
uint64_t epoch_state(uint64_t seed, int64_t epoch);
// State of the sampler's choice of which cached view of `clip_index` epoch
// `epoch` uses.
uint64_t view_choice_state(uint64_t seed, int64_t epoch, int64_t clip_index);
// State of CacheReader::epoch_order (a shuffled read order of records).
uint64_t read_order_state(uint64_t seed, int64_t epoch);

}  // namespace evl::rng
