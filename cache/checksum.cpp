// Record checksums (checksum.h) over libxxhash's one-shot and streaming APIs,
// and, on x86-64 CPUs with AVX2, XXH3's streaming functions built for AVX2
// (checksum_avx2.cpp). The streamed result equals the one-shot one for any
// split of the input (xxHash's contract), which is what lets a reader hash a
// record in pieces.
//
// Why the AVX2 build: ChecksumPass::copy alternates memcpy of 32 KiB with
// hashing it. Debian's libxxhash 0.8.1 runs XXH3 with AVX-512 on the Xeons
// measured, and interleaved with the copies that ran at 68-70% of pread() of
// the same bytes, the AVX2 build at 87-88% and even the SSE2 build at 75-78%
// (1.16 GB of 28 MiB records through a memory map, load 3.7), although alone,
// in L1, AVX-512 hashes fastest (27 GB/s vs 20 for AVX2).
#define XXH_STATIC_LINKING_ONLY  // the state types, to keep them inside ChecksumPass
#include "cache/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "cache/checksum_avx2.h"

namespace evl::cache {

namespace {

bool stream_avx2() {
#if EVL_XXH3_AVX2
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

// Copy chunks: a chunk just written is still in L1 (48 KiB on the Xeons
// measured) when it is hashed. Chunks from 16 KiB to 512 KiB measured the same
// (63-66% of pread with libxxhash's XXH3, same setting as above).
constexpr size_t kCopyChunk = size_t(32) << 10;

static_assert(sizeof(XXH3_state_t) <= detail::kXxh3StateBytes && alignof(XXH3_state_t) <= 64);
static_assert(sizeof(XXH64_state_t) <= detail::kXxh3StateBytes && alignof(XXH64_state_t) <= 64);

}  // namespace

const char* xxh3_stream_build() { return stream_avx2() ? "avx2" : "libxxhash"; }

uint64_t record_checksum(uint32_t version, const void* data, size_t n) {
  return version >= 2 ? XXH3_64bits(data, n) : XXH64(data, n, 0);
}

ChecksumPass::ChecksumPass(const void* record, size_t size, bool enabled)
    : pos_(static_cast<const uint8_t*>(record)),
      end_(static_cast<const uint8_t*>(record) + size - 8),
      enabled_(enabled) {
  std::memcpy(&version_, pos_ + 4, 4);
  if (!enabled_) return;
  avx2_ = version_ >= 2 && stream_avx2();
  if (version_ < 2)
    XXH64_reset(new (state_) XXH64_state_t, 0);
  else if (avx2_)
    detail::xxh3_reset_avx2(new (state_) XXH3_state_t);
  else
    XXH3_64bits_reset(new (state_) XXH3_state_t);
}

void ChecksumPass::update(const uint8_t* p, size_t n) {
  if (version_ < 2)
    XXH64_update(reinterpret_cast<XXH64_state_t*>(state_), p, n);
  else if (avx2_)
    detail::xxh3_update_avx2(state_, p, n);
  else
    XXH3_64bits_update(reinterpret_cast<XXH3_state_t*>(state_), p, n);
}

void ChecksumPass::hash_to(const void* end) {
  const auto* e = std::min(static_cast<const uint8_t*>(end), end_);
  if (e <= pos_) return;
  if (enabled_) update(pos_, static_cast<size_t>(e - pos_));
  pos_ = e;
}

void ChecksumPass::copy(void* dst, const void* src, size_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  hash_to(s);
  // Bytes hashed already (arrays out of address order, or overlapping): copy only.
  const size_t done = pos_ > s ? std::min(n, static_cast<size_t>(pos_ - s)) : 0;
  if (done) std::memcpy(d, s, done);
  for (size_t o = done; o < n; o += kCopyChunk) {
    const size_t k = std::min(kCopyChunk, n - o);
    std::memcpy(d + o, s + o, k);
    const uint8_t* e = std::min(s + o + k, end_);  // pos_ == s + o here
    if (e <= pos_) continue;
    if (enabled_) update(d + (pos_ - s), static_cast<size_t>(e - pos_));  // the copy, in L1
    pos_ = e;
  }
}

bool ChecksumPass::finish() {
  hash_to(end_);
  if (!enabled_) return true;
  uint64_t stored;
  std::memcpy(&stored, end_, 8);
  const uint64_t h = version_ < 2 ? XXH64_digest(reinterpret_cast<XXH64_state_t*>(state_))
                     : avx2_      ? detail::xxh3_digest_avx2(state_)
                                  : XXH3_64bits_digest(reinterpret_cast<XXH3_state_t*>(state_));
  return h == stored;
}

}  // namespace evl::cache
