// Whole-cache operations behind the evl_cache tool: info, verify, merge and
// HDF5 export. Library functions (they throw evl::Error naming the cache, the
// shard and the key); the tool in cache_main.cpp only parses flags and prints.
// Thread-safety: each call opens its own environments; do not run two on the
// same output directory at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cache/cache.h"

namespace evl::cache {

struct ShardInfo {
  std::string name;
  int64_t records = 0;
  uint64_t file_bytes = 0;   // data.mdb on disk
  uint64_t value_bytes = 0;  // sum of encoded record sizes
};

struct CacheInfo {
  std::string dir;
  Manifest manifest;
  std::vector<ShardInfo> shards;
  int64_t records = 0;
  uint64_t file_bytes = 0, value_bytes = 0;

  std::string to_json() const;  // {"dir":..,"records":..,"shards":[..],"manifest":{..}}
  std::string to_text() const;  // human summary
};

// Scans every shard's keys and value sizes (no checksum pass).
CacheInfo cache_info(const std::string& dir);

// Bytes of one encoded record for `m` (header + arrays + checksum), computed by
// encoding a record of the manifest's shapes with an 8-byte key/id/view.
uint64_t record_bytes(const Manifest& m);

struct VerifyReport {
  int64_t records = 0;  // records checked
  struct Bad {
    std::string shard, key, reason;
  };
  std::vector<Bad> bad;
  bool ok() const { return bad.empty(); }
};

// Checks every record of every shard: magic, version, sizes, checksum, key,
// shapes and dtype against the manifest; the manifest's per-shard counts;
// duplicate keys across shards; qk_weights.evl in compact mode.
// `progress(done)` is called after each record when given.
VerifyReport verify_cache(const std::string& dir,
                          const std::function<void(int64_t)>& progress = {});

// Joins caches `inputs` (e.g. one per array-job task) into `out_dir` (must not
// exist or be empty): every input's provenance must match the first's (all
// fields of check_matches plus dtype, has_inputs, seed, list_file, num_clips
// and the chain of conversions: caches made by `evl_cache convert` merge when
// their values went through the same re-encodings, and the merged manifest
// carries the first input's `conversions`, directories and dates included),
// no key may appear twice, compact caches must carry identical qk_weights.evl.
// Shards are copied compacted (mdb_env_copy2) and renumbered
// features-<j>-of-<total>; the merged manifest lists them.
void merge_caches(const std::string& out_dir, const std::vector<std::string>& inputs);

// Writes the first `limit` records (all when limit < 0) to HDF5 `h5_path`: one
// group per record at path "/<key>" (so "/0000000003/001": clip then view),
// datasets x, q, k (M, T, L, C) float32 (Q/K recomputed in compact mode), and
// inputs (T, 3, H, W) when present; attributes video_id, label, view,
// clip_index, view_index. The root carries attribute "manifest" (JSON).
// Returns the number of records written.
int64_t export_h5(const std::string& dir, const std::string& h5_path, int64_t limit);

}  // namespace evl::cache
