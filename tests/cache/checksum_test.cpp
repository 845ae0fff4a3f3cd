// The streamed record checksum (cache/checksum.h) against libxxhash's one-shot
// XXH3_64bits / XXH64 of the same bytes, for splits at every kind of boundary,
// and the readers that verify in their own pass (get_into,
// with_record_streamed): same bytes as the verified path, the same errors for
// a corrupt record, and a corrupt record's "checksum mismatch" winning over
// what the caller's callback threw.
#include "cache/checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <random>

#include "cache/cache.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/test_support.h"

using namespace evl::cache;
using namespace evl::cache::testing;
using evl::test::error_of;

namespace {

// A record of ~0.5 MiB: arrays across many 32 KiB copy chunks, odd sizes.
std::vector<uint8_t> big_record(uint32_t version) {
  Record r;
  r.key = make_key(3, 0);
  r.video_id = "v.mp4";
  r.view = "t0";
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"x", {3, 41, 1031}}, {"q", {1, 7}}, {"k", {2, 50000}}}) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    const auto vals = synth_values(name[0], static_cast<size_t>(n));
    r.arrays.emplace_back(name, make_array(DType::kF16, shape, vals.data(), vals.size()));
  }
  std::vector<uint8_t> bytes = encode_record(r);
  if (version == 1) {  // the same bytes as a version-1 record: XXH64 (FORMAT.md)
    bytes[4] = 1;
    const uint64_t h = XXH64(bytes.data(), bytes.size() - 8, 0);
    std::memcpy(bytes.data() + bytes.size() - 8, &h, 8);
  }
  return bytes;
}

uint64_t reference(const std::vector<uint8_t>& v) {
  return v[4] >= 2 ? XXH3_64bits(v.data(), v.size() - 8) : XXH64(v.data(), v.size() - 8, 0);
}

uint64_t stored(const std::vector<uint8_t>& v) {
  uint64_t h;
  std::memcpy(&h, v.data() + v.size() - 8, 8);
  return h;
}

}  // namespace

TEST(ChecksumPass, OneShotChecksumIsTheStoredOne) {
  for (const uint32_t version : {1u, 2u}) {
    const auto v = big_record(version);
    EXPECT_EQ(record_checksum(version, v.data(), v.size() - 8), reference(v));
    EXPECT_EQ(stored(v), reference(v));
  }
}

TEST(ChecksumPass, AnySplitOfHashToAndCopyVerifiesAndCopiesExactly) {
  std::mt19937 gen(5);
  for (const uint32_t version : {1u, 2u}) {
    SCOPED_TRACE(version);
    const auto v = big_record(version);
    const size_t n = v.size();
    for (int trial = 0; trial < 40; ++trial) {
      // Random cuts, each piece hashed with hash_to or copied (or skipped), in order.
      ChecksumPass pass(v.data(), n);
      std::vector<uint8_t> out(n, 0xee);
      size_t pos = 0;
      while (pos < n) {
        const size_t len = std::uniform_int_distribution<size_t>(1, 100000)(gen);
        const size_t end = std::min(n, pos + len);
        switch (gen() % 3) {
          case 0:
            pass.hash_to(v.data() + end);
            break;
          case 1:
            pass.copy(out.data() + pos, v.data() + pos, end - pos);
            EXPECT_EQ(0, std::memcmp(out.data() + pos, v.data() + pos, end - pos));
            break;
          default:
            break;  // left for finish()
        }
        pos = end;
      }
      EXPECT_TRUE(pass.finish());
    }
  }
}

TEST(ChecksumPass, CopiesOutOfOrderOrOverlappingStillVerify) {
  const auto v = big_record(2);
  ChecksumPass pass(v.data(), v.size());
  std::vector<uint8_t> a(300000), b(200000), c(1000);
  pass.copy(a.data(), v.data() + 100000, a.size());  // the middle first
  pass.copy(b.data(), v.data() + 1000, b.size());    // then before it, overlapping
  pass.copy(c.data(), v.data() + 350000, c.size());  // inside what is hashed
  EXPECT_EQ(0, std::memcmp(a.data(), v.data() + 100000, a.size()));
  EXPECT_EQ(0, std::memcmp(b.data(), v.data() + 1000, b.size()));
  EXPECT_EQ(0, std::memcmp(c.data(), v.data() + 350000, c.size()));
  EXPECT_TRUE(pass.finish());
}

TEST(ChecksumPass, AFlippedByteAnywhereFailsAndDisabledPassesHashNothing) {
  for (const uint32_t version : {1u, 2u}) {
    auto v = big_record(version);
    for (const size_t at : {size_t(0), size_t(57), v.size() / 2, v.size() - 9, v.size() - 1}) {
      SCOPED_TRACE(at);
      v[at] ^= 0x20;
      if (at != 4) {  // (byte 4 is the version: the pass would choose the other hash)
        ChecksumPass pass(v.data(), v.size());
        std::vector<uint8_t> out(v.size() / 3);
        pass.copy(out.data(), v.data() + 100, out.size());
        EXPECT_FALSE(pass.finish());
      }
      ChecksumPass off(v.data(), v.size(), false);
      off.hash_to(v.data() + v.size());
      EXPECT_TRUE(off.finish());
      v[at] ^= 0x20;
    }
  }
}

TEST(ChecksumPass, StreamedReadsMatchTheVerifiedPathAndItsErrors) {
  const Manifest m = tiny_manifest(StorageMode::kQK, DType::kI8, true);
  TempDir dir("streamed");
  write_cache(dir.str(), m, 0, 3);
  const std::string key = make_key(1, 1);
  {
    const CacheReader reader(dir.str());
    const int64_t i = reader.index_of(key);
    Record into;
    reader.get_into(i, into);
    reader.with_record(i, [&](const RecordView& r) {
      const Record want = r.to_record();
      ASSERT_EQ(into.arrays.size(), want.arrays.size());
      for (size_t a = 0; a < want.arrays.size(); ++a) {
        EXPECT_EQ(into.arrays[a].first, want.arrays[a].first);
        EXPECT_EQ(into.arrays[a].second.bytes, want.arrays[a].second.bytes);
        EXPECT_EQ(into.arrays[a].second.shape, want.arrays[a].second.shape);
      }
      EXPECT_EQ(into.key, want.key);
      EXPECT_EQ(into.view, want.view);
      EXPECT_EQ(into.label, want.label);
    });
    // A valid record: the callback's own error comes out unchanged.
    const std::string err = error_of([&] {
      reader.with_record_streamed(
          i, [](const RecordView&, ChecksumPass&) { throw evl::Error("callback failed"); });
    });
    EXPECT_EQ(err, "callback failed");
  }

  // A flipped payload byte: every read path says checksum mismatch, also when
  // the callback throws first.
  std::vector<uint8_t> bad = encode_record(synth_record(m, 1, 1));
  bad[bad.size() / 2] ^= 0x01;
  poke(dir / "features-00000-of-00001", key, bad);
  const CacheReader reader(dir.str());
  const int64_t i = reader.index_of(key);
  Record into;
  const std::string verified = error_of([&] { reader.with_record(i, [](const RecordView&) {}); });
  EXPECT_NE(verified.find("checksum mismatch"), std::string::npos) << verified;
  EXPECT_NE(verified.find(key), std::string::npos) << verified;
  EXPECT_EQ(error_of([&] { reader.get_into(i, into); }), verified);
  EXPECT_EQ(error_of([&] {
              reader.with_record_streamed(
                  i, [](const RecordView&, ChecksumPass&) { throw evl::Error("callback failed"); });
            }),
            verified);
}
