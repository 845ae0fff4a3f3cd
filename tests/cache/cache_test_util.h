// Shared helpers for the cache tests: a tiny manifest, deterministic synthetic
// records of the manifest's shapes, temporary directories, and a writer that
// builds a whole cache. Values come from a fixed LCG, not from the code under test.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <lmdb.h>
#include <unistd.h>

#include "cache/cache.h"
#include "common/check.h"
#include "tests/support/test_support.h"

namespace evl::cache::testing {

namespace fs = std::filesystem;

using TempDir = evl::test::TempDir;  // tests/support/test_support.h

// M=2 layers (blocks 2,3), T=3 frames, grid 2 (L=5), C=16, input 32x32.
inline Manifest tiny_manifest(StorageMode storage = StorageMode::kQK, DType dtype = DType::kF16,
                              bool has_inputs = false) {
  Manifest m;
  m.tool_version = "test";
  m.created = "2026-01-01T00:00:00Z";
  m.backbone = {"tiny.pt", "0123456789abcdef", "openai-torchscript", 16, 4, 2, 16, 2, 32};
  m.layers = {2, 3};
  m.storage = storage;
  m.dtype = dtype;
  m.frames = 3;
  m.stride = 4;
  m.temporal_views = 2;
  m.spatial_views = 1;
  m.mean = {0.48145466, 0.4578275, 0.40821073};
  m.std = {0.26862954, 0.26130258, 0.27577711};
  m.has_inputs = has_inputs;
  m.list_file = "train.txt";
  return m;
}

// Deterministic pseudo-random floats in [-2, 2) from (seed, i).
inline std::vector<float> synth_values(uint64_t seed, size_t n) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (size_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    v[i] = static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
  }
  return v;
}

// A record with the manifest's arrays; values depend on (clip, view, array).
inline Record synth_record(const Manifest& m, int64_t clip, int32_t view) {
  Record r;
  r.key = make_key(clip, view);
  r.video_id = "videos/clip_" + std::to_string(clip) + ".mp4";
  r.label = clip % 7;
  r.clip_index = clip;
  r.view_index = view;
  r.view = "t" + std::to_string(view) + "/2 s0/1";
  uint64_t salt = 1;
  for (const auto& [name, shape] : expected_arrays(m)) {
    const DType dt = name == "inputs" ? DType::kF32 : m.dtype;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    const auto vals = synth_values(clip * 1000 + view * 10 + salt++, static_cast<size_t>(n));
    r.arrays.emplace_back(name, make_array(dt, shape, vals.data(), vals.size()));
  }
  return r;
}

// Writes clips [first, first+count) with all their views into one shard of
// `dir` and saves a manifest listing `shards` (name, records).
inline void write_cache(const std::string& dir, Manifest m, int64_t first, int64_t count,
                        const std::string& shard = "features-00000-of-00001") {
  int64_t n = 0;
  {
    ShardWriter w(dir + "/" + shard, 5);
    for (int64_t c = first; c < first + count; ++c)
      for (int32_t v = 0; v < m.views_per_clip(); ++v, ++n) w.put(synth_record(m, c, v));
  }
  m.shards.push_back({shard, n});
  if (m.num_clips == 0) m.num_clips = first + count;
  m.save(dir);
}

// Replaces the value of `key` in the shard with `value`, behind the writer's back.
inline void poke(const std::string& shard_dir, const std::string& key,
                 const std::vector<uint8_t>& value) {
  MDB_env* env = nullptr;
  EVL_CHECK(0 == mdb_env_create(&env), "lmdb");
  EVL_CHECK(0 == mdb_env_open(env, shard_dir.c_str(), 0, 0644), "lmdb");
  MDB_txn* txn = nullptr;
  EVL_CHECK(0 == mdb_txn_begin(env, nullptr, 0, &txn), "lmdb");
  MDB_dbi dbi;
  EVL_CHECK(0 == mdb_dbi_open(txn, nullptr, 0, &dbi), "lmdb");
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<uint8_t*>(value.data())};
  EVL_CHECK(0 == mdb_put(txn, dbi, &k, &v, 0), "lmdb");
  EVL_CHECK(0 == mdb_txn_commit(txn), "lmdb");
  mdb_env_close(env);
}

}  // namespace evl::cache::testing
