// Internal to checksum.cpp: XXH3-64's streaming functions built for AVX2
// (checksum_avx2.cpp). Call them only where the CPU has AVX2
// (__builtin_cpu_supports); `state` is an XXH3_state_t of xxhash.h's layout,
// 64-byte aligned, in at most kXxh3StateBytes bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace evl::cache::detail {

inline constexpr size_t kXxh3StateBytes = 640;

void xxh3_reset_avx2(void* state);
void xxh3_update_avx2(void* state, const void* data, size_t n);
uint64_t xxh3_digest_avx2(const void* state);

}  // namespace evl::cache::detail
