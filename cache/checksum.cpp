// Record checksums (checksum.h) over libxxhash's one-shot and streaming APIs.
// The streamed result equals the one-shot one for any split of the input
// (xxHash's contract), which is what lets a reader hash a record in pieces.
#define XXH_STATIC_LINKING_ONLY  // the state types, to keep them inside ChecksumPass
#include "cache/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace evl::cache {

namespace {

// Copy chunks: small enough that a chunk just written is still in L1 when it is
// hashed (48 KiB L1d on the Xeons measured; tests/cache/cache_bench.cpp), large
// enough that the per-call overhead of memcpy and the hash update is noise.
constexpr size_t kCopyChunk = size_t(32) << 10;

static_assert(sizeof(XXH3_state_t) <= 640 && alignof(XXH3_state_t) <= 64);
static_assert(sizeof(XXH64_state_t) <= 640 && alignof(XXH64_state_t) <= 64);

}  // namespace

uint64_t record_checksum(uint32_t version, const void* data, size_t n) {
  return version >= 2 ? XXH3_64bits(data, n) : XXH64(data, n, 0);
}

ChecksumPass::ChecksumPass(const void* record, size_t size, bool enabled)
    : pos_(static_cast<const uint8_t*>(record)),
      end_(static_cast<const uint8_t*>(record) + size - 8),
      enabled_(enabled) {
  std::memcpy(&version_, pos_ + 4, 4);
  if (!enabled_) return;
  if (version_ >= 2)
    XXH3_64bits_reset(new (state_) XXH3_state_t);
  else
    XXH64_reset(new (state_) XXH64_state_t, 0);
}

void ChecksumPass::update(const uint8_t* p, size_t n) {
  if (version_ >= 2)
    XXH3_64bits_update(reinterpret_cast<XXH3_state_t*>(state_), p, n);
  else
    XXH64_update(reinterpret_cast<XXH64_state_t*>(state_), p, n);
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
  const uint64_t h = version_ >= 2 ? XXH3_64bits_digest(reinterpret_cast<XXH3_state_t*>(state_))
                                   : XXH64_digest(reinterpret_cast<XXH64_state_t*>(state_));
  return h == stored;
}

}  // namespace evl::cache
