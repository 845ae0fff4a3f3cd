// XXH3-64's streaming functions compiled for AVX2 (this file alone gets
// -mavx2; cache/CMakeLists.txt), for ChecksumPass on CPUs that have it. Why not
// libxxhash's: Debian's 0.8.1 dispatches XXH3 to AVX-512 here, and its 512-bit
// loop interleaved with memcpy copied records ~20% slower than this build
// (tests/cache/cache_bench.cpp; checksum.cpp has the figures). Same header,
// same algorithm, the same hash value. Only xxhash.h is included, and with
// XXH_INLINE_ALL every function in it is static: no AVX2 code can leak into
// another translation unit through a shared inline definition.
#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "cache/checksum_avx2.h"

namespace evl::cache::detail {

static_assert(sizeof(XXH3_state_t) <= kXxh3StateBytes);

void xxh3_reset_avx2(void* state) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state)); }

void xxh3_update_avx2(void* state, const void* data, size_t n) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state), data, n);
}

uint64_t xxh3_digest_avx2(const void* state) {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state));
}

}  // namespace evl::cache::detail
