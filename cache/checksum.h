// Record checksums (cache/FORMAT.md "Record value"): XXH3-64 (seed 0) from
// format version 2, XXH64 (seed 0) in version 1, over every byte of a record
// but its last 8. Computed in one call, or streamed front to back by a
// ChecksumPass so that a reader verifies a record in the same pass that copies
// or converts it: a record of tens of MiB is then read from memory once, not
// twice (once to hash it, once to use it). Not here: the record layout
// (record.cpp) and what a reader does with the bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace evl::cache {

// The checksum of `n` bytes as a record of format `version` stores it.
uint64_t record_checksum(uint32_t version, const void* data, size_t n);

// Which build of XXH3 ChecksumPass streams with: "avx2" (evl's, on x86-64 CPUs
// with AVX2; checksum.cpp says why) or "libxxhash" (the library's own, any
// CPU). Both give the same value; for benchmark reports.
const char* xxh3_stream_build();

// Hashes one record's bytes [0, size - 8) in address order, in pieces, while
// its reader walks it; finish() compares with the stored checksum (the last 8
// bytes). The record must be one that decode_record accepted (its version
// field is read from offset 4). Hashing ahead of use is only a matter of
// speed: the bytes must not change until finish() (true of LMDB's memory map
// inside a read transaction), and a reader must drop whatever it made of the
// bytes when finish() returns false. A pass constructed with enabled=false
// hashes nothing and finish() returns true (checksums off). Not thread-safe;
// no allocation.
class ChecksumPass {
 public:
  ChecksumPass(const void* record, size_t size, bool enabled = true);
  ChecksumPass(const ChecksumPass&) = delete;
  ChecksumPass& operator=(const ChecksumPass&) = delete;

  // Hashes the bytes not hashed yet below `end` (a pointer into the record;
  // nothing when they are). Call it just before reading bytes up to `end`, in
  // pieces that fit the CPU's L2 cache, so that the read finds them there.
  void hash_to(const void* end);
  // memcpy(dst, src, n) for [src, src + n) inside the record, hashing the bytes
  // not hashed yet on the way: the bytes before `src` first, then the copy in
  // L1-sized chunks, each hashed from `dst` right after it is written.
  void copy(void* dst, const void* src, size_t n);
  // Hashes the rest of the record; true when it matches the stored checksum.
  bool finish();

 private:
  void update(const uint8_t* p, size_t n);

  const uint8_t* pos_;  // the first byte not hashed yet
  const uint8_t* end_;  // the stored checksum (the end of the hashed bytes)
  uint32_t version_ = 0;
  bool enabled_ = true;
  bool avx2_ = false;  // XXH3 through checksum_avx2.cpp
  // The xxHash streaming state (XXH3_state_t or XXH64_state_t), kept inline
  // so that a pass allocates nothing; checksum.cpp checks that it fits.
  alignas(64) unsigned char state_[640];
};

}  // namespace evl::cache
