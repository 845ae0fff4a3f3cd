// The corruption catalogue (docs/ARCHITECTURE.md §8): bad magic, future version, wrong shape,
// truncated value, flipped payload byte, duplicate key and mismatched
// provenance on merge; for int8/fp8 records also a flipped code byte, a flipped
// scale byte, a flipped column scale or center, a quantized dtype in a version-1
// record, outlier channels in a version-2 record, centers in a version-3 one
// and an unknown group size.
// Each must be an evl::Error naming the shard and key, from the reader, from
// verify_cache, and from `evl_cache verify` (exit 1).
#include <gtest/gtest.h>
#include <lmdb.h>

#include <sys/wait.h>
#include <cstring>
#include <fstream>
#include <functional>

#include <xxhash.h>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache/checksum.h"
#include "cache/quantize.h"
#include "cache_test_util.h"
#include "common/check.h"
#include "tests/support/test_support.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

const char* kShard = "features-00000-of-00001";

using evl::test::error_of;

struct Corruption {
  const char* name;
  const char* message;  // expected in the error
  std::function<std::vector<uint8_t>(const Manifest&, const std::string& key)> value;
};

std::vector<uint8_t> valid(const Manifest& m, const std::string&) {
  return encode_record(synth_record(m, 2, 1));
}

// Runs every case against a 4-clip cache of `m` whose record `key` is replaced.
void expect_caught(const Manifest& m, const std::vector<Corruption>& cases) {
  const std::string key = make_key(2, 1);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir dir("corrupt");
    write_cache(dir.str(), m, 0, 4);
    poke(dir / kShard, key, c.value(m, key));

    // The reader opens (the header scan does not hash) but refuses the record.
    // Some corruptions are caught at open already; both must name shard and key.
    const std::string err = error_of([&] {
      const CacheReader reader(dir.str());
      reader.get(key);
    });
    EXPECT_NE(err.find(kShard), std::string::npos) << err;
    EXPECT_NE(err.find(key), std::string::npos) << err;
    EXPECT_NE(err.find(c.message), std::string::npos) << err;
    // The same error from the path that verifies before the callback and from
    // the one that verifies in the callback's pass (get above is the latter).
    auto read = [&](bool streamed) {
      return error_of([&] {
        const CacheReader reader(dir.str());
        if (streamed)
          reader.with_record_streamed(reader.index_of(key),
                                      [](const RecordView&, ChecksumPass&) {});
        else
          reader.with_record(key, [](const RecordView&) {});
      });
    };
    EXPECT_EQ(read(false), err);
    EXPECT_EQ(read(true), err);

    const VerifyReport report = verify_cache(dir.str());
    ASSERT_EQ(report.bad.size(), 1u) << (report.bad.empty() ? "" : report.bad.back().reason);
    EXPECT_EQ(report.bad[0].key, key);
    EXPECT_EQ(report.bad[0].shard, kShard);
    EXPECT_NE(report.bad[0].reason.find(c.message), std::string::npos) << report.bad[0].reason;
    EXPECT_EQ(report.records, 8);

    // The tool lists the bad key and exits 1.
    const std::string out = dir / "verify.out";
    const std::string cmd = std::string(EVL_TOOLS_DIR) + "/evl_cache verify '" + dir.str() +
                            "' >'" + out + "' 2>/dev/null";
    const int status = std::system(cmd.c_str());
    EXPECT_EQ(WEXITSTATUS(status), 1);
    std::ifstream in(out);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("BAD " + std::string(kShard) + " " + key), std::string::npos) << text;
  }
}

// Where array "x"'s payload starts in an encoded record, and its layout.
std::pair<size_t, QuantLayout> x_payload(const std::vector<uint8_t>& v) {
  const RecordView r = decode_record(v.data(), v.size(), "test");
  const ArrayView& x = r.array("x");
  return {static_cast<size_t>(static_cast<const uint8_t*>(x.data) - v.data()),
          quant_layout(x.dtype, x.shape)};
}

// Offset of the first array descriptor ("x", written first) in an encoded record.
size_t first_descriptor(const std::vector<uint8_t>& v) {
  uint32_t lens[3];
  std::memcpy(lens, v.data() + 40, 12);
  return 56 + lens[0] + lens[1] + lens[2];
}

// Stores a new checksum, as a writer with that bug (or a forger) would: the
// checksum of the record's version (FORMAT.md: XXH64 in 1, XXH3-64 from 2).
void rehash(std::vector<uint8_t>& v) {
  uint32_t version;
  std::memcpy(&version, v.data() + 4, 4);
  const uint64_t h =
      version >= 2 ? XXH3_64bits(v.data(), v.size() - 8) : XXH64(v.data(), v.size() - 8, 0);
  std::memcpy(v.data() + v.size() - 8, &h, 8);
}

}  // namespace

TEST(Corruption, QuantizedRecordsAreCoveredByTheChecksum) {
  const std::vector<Corruption> cases = {
      {"flipped code byte", "checksum mismatch",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[x_payload(v).first + 5] ^= 0x10;  // codes come first
         return v;
       }},
      {"flipped scale byte", "checksum mismatch",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         const auto [offset, layout] = x_payload(v);
         v[offset + layout.scales_offset + 3] ^= 0x01;  // the second scale's high byte
         return v;
       }},
      {"last scale byte", "checksum mismatch",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         const auto [offset, layout] = x_payload(v);
         v[offset + layout.columns_offset - 1] ^= 0x40;
         return v;
       }},
      {"flipped column scale", "checksum mismatch",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         const auto [offset, layout] = x_payload(v);
         v[offset + layout.centers_offset - 1] ^= 0x01;  // the last slice's last channel
         return v;
       }},
      {"flipped column center", "checksum mismatch",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         const auto [offset, layout] = x_payload(v);
         v[offset + layout.bytes - 1] ^= 0x01;  // the last slice's last channel
         return v;
       }},
      {"centers in a version-3 record", "format version 3 does not have",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[4] = 3;
         rehash(v);
         return v;
       }},
      {"outlier channels in a version-2 record", "format version 2 does not have",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[4] = 2;
         rehash(v);
         return v;
       }},
      {"quantized dtype in a version-1 record", "format version 1 does not have",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[4] = 1;
         rehash(v);
         return v;
       }},
      {"unknown group size", "groups of 32 channels",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         const size_t d = first_descriptor(v) + 4 + 1;  // name length, "x", then dtype
         EXPECT_EQ(v[d], static_cast<uint8_t>(m.dtype));
         v[d + 2] = 32;  // u16 group, little-endian
         rehash(v);
         return v;
       }},
  };
  // (qk storage: the test caches carry no qk_weights.evl, which verify would
  // also report for compact ones; the record layout is the same in both modes.)
  for (const DType dtype : {DType::kI8, DType::kFP8}) {
    SCOPED_TRACE(to_string(dtype));
    expect_caught(tiny_manifest(StorageMode::kQK, dtype), cases);
  }
}

TEST(Corruption, EveryCaseNamesShardAndKey) {
  const std::vector<Corruption> cases = {
      {"bad magic", "bad magic",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[0] = 'X';
         return v;
       }},
      {"future version", "format version 5",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[4] = 5;
         return v;
       }},
      {"wrong shape", "has shape",
       [](const Manifest& m, const std::string&) {
         Manifest other = m;
         other.frames = 4;  // a record of another extraction, checksum valid
         return encode_record(synth_record(other, 2, 1));
       }},
      {"truncated value", "truncated",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v.resize(v.size() - 100);
         return v;
       }},
      {"flipped payload byte", "checksum mismatch",
       [](const Manifest& m, const std::string& k) {
         auto v = valid(m, k);
         v[v.size() / 2] ^= 0x10;
         return v;
       }},
      {"key/header mismatch", "header names key",
       [](const Manifest& m, const std::string&) { return encode_record(synth_record(m, 3, 0)); }},
  };
  expect_caught(tiny_manifest(), cases);
}

TEST(Corruption, CleanCacheVerifies) {
  TempDir dir("clean");
  write_cache(dir.str(), tiny_manifest(), 0, 3);
  const VerifyReport report = verify_cache(dir.str());
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.records, 6);
  const int status = std::system(
      (std::string(EVL_TOOLS_DIR) + "/evl_cache verify '" + dir.str() + "' >/dev/null 2>&1")
          .c_str());
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Corruption, ManifestCountMismatchIsRefused) {
  TempDir dir("count");
  Manifest m = tiny_manifest();
  write_cache(dir.str(), m, 0, 3);
  m = Manifest::load(dir.str());
  m.shards[0].records = 7;
  m.save(dir.str());
  const std::string err = error_of([&] { CacheReader reader(dir.str()); });
  EXPECT_NE(err.find(kShard), std::string::npos) << err;
  EXPECT_NE(err.find("manifest says 7"), std::string::npos) << err;
  EXPECT_FALSE(verify_cache(dir.str()).ok());
}

TEST(Corruption, MergeRefusesDuplicateKeys) {
  TempDir a("merge_dup_a"), b("merge_dup_b"), out("merge_dup_out");
  Manifest m = tiny_manifest();
  m.num_clips = 10;
  write_cache(a.str(), m, 0, 3);
  write_cache(b.str(), m, 2, 3);  // clip 2 in both
  fs::remove_all(out.path());
  const std::string err = error_of([&] { merge_caches(out.str(), {a.str(), b.str()}); });
  EXPECT_NE(err.find(make_key(2, 0)), std::string::npos) << err;
  EXPECT_NE(err.find(a.str() + "/" + kShard), std::string::npos) << err;
  EXPECT_NE(err.find(b.str() + "/" + kShard), std::string::npos) << err;
  EXPECT_NE(err.find("duplicate"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out / "manifest.json"));
}

TEST(Corruption, MergeRefusesMismatchedProvenance) {
  TempDir a("merge_prov_a"), b("merge_prov_b"), out("merge_prov_out");
  Manifest m = tiny_manifest();
  m.num_clips = 10;
  write_cache(a.str(), m, 0, 3);
  Manifest other = m;
  other.stride = 8;
  write_cache(b.str(), other, 3, 3);
  fs::remove_all(out.path());
  const std::string err = error_of([&] { merge_caches(out.str(), {a.str(), b.str()}); });
  EXPECT_NE(err.find(b.str()), std::string::npos) << err;
  EXPECT_NE(err.find("'stride'"), std::string::npos) << err;
  // The tool: exit 1 with `error: ...` naming the field.
  const std::string cmd = std::string(EVL_TOOLS_DIR) + "/evl_cache merge '" + out.str() + "' '" +
                          a.str() + "' '" + b.str() + "' >/dev/null 2>'" + (a / "err") + "'";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 1);
  std::ifstream in(a / "err");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("error: ", 0), 0u) << text;
  EXPECT_NE(text.find("'stride'"), std::string::npos) << text;
}

TEST(Merge, JoinsShardsAndReadsBack) {
  TempDir a("merge_ok_a"), b("merge_ok_b"), out("merge_ok_out");
  Manifest m = tiny_manifest();
  m.num_clips = 6;
  write_cache(a.str(), m, 0, 3, "features-00000-of-00002");
  write_cache(b.str(), m, 3, 3, "features-00001-of-00002");
  fs::remove_all(out.path());
  const std::string cmd = std::string(EVL_TOOLS_DIR) + "/evl_cache merge '" + out.str() + "' '" +
                          a.str() + "' '" + b.str() + "' >/dev/null";
  ASSERT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 0);
  const CacheReader reader(out.str());
  EXPECT_EQ(reader.size(), 12);
  EXPECT_EQ(reader.manifest().shards.size(), 2u);
  for (int64_t i = 0; i < reader.size(); ++i) {
    const Record want = synth_record(m, i / 2, static_cast<int32_t>(i % 2));
    EXPECT_EQ(reader.get(i).array("q").bytes, want.array("q").bytes);
  }
  EXPECT_TRUE(verify_cache(out.str()).ok());
}
