// CacheReader: every shard of a cache directory opened read-only (MDB_NOTLS, so
// any thread may run a read txn), one sorted key index over all shards, clips,
// zero-copy record access and reproducible shuffled epochs. Checks the
// manifest's per-shard counts and every record's checksum and shapes on read,
// before the caller sees it or (get_into, with_record_streamed) in the pass
// that uses it.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "cache/cache.h"
#include "cache/checksum.h"
#include "cache/lmdb_env.h"
#include "common/check.h"
#include "common/random.h"

namespace evl::cache {

namespace fs = std::filesystem;

struct CacheReader::Impl {
  std::string dir;
  Options options;
  Manifest manifest;
  struct Shard {
    std::string name, path;
    detail::EnvPtr env;
  };
  std::vector<Shard> shards;
  std::vector<std::string> keys;
  std::vector<int32_t> shard_of;  // per key
  std::vector<Clip> clips;

  std::string where(int32_t shard, const std::string& key) const {
    return "cache shard '" + shards[shard].path + "': record '" + key + "'";
  }

  // Runs fn(value, where) on record `index`'s bytes inside a read txn.
  void get_value(int64_t index,
                 const std::function<void(const MDB_val&, const std::string&)>& fn) const {
    EVL_CHECK(index >= 0 && index < static_cast<int64_t>(keys.size()), "cache '", dir,
              "': record index ", index, " out of range [0, ", keys.size(), ")");
    const int32_t s = shard_of[index];
    const std::string& key = keys[index];
    const std::string w = where(s, key);
    detail::Txn txn(shards[s].env.get(), MDB_RDONLY, "cache shard '" + shards[s].path + "'");
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    const int rc = mdb_get(txn.get(), txn.dbi(), &k, &v);
    if (rc) detail::throw_mdb(rc, w + ": read failed");
    fn(v, w);
  }

  // decode_record plus the checks against the key and the manifest.
  RecordView decode(int64_t index, const MDB_val& v, const std::string& w, bool verify) const {
    RecordView r = decode_record(v.mv_data, v.mv_size, w, verify);
    EVL_CHECK(r.key == keys[index], w, ": header names key '", r.key, "'");
    check_record_shape(manifest, r, w);
    return r;
  }

  // Checksum first (a pass over the record), then fn on the verified view.
  void visit(int64_t index, const std::function<void(const RecordView&)>& fn) const {
    get_value(index, [&](const MDB_val& v, const std::string& w) {
      fn(decode(index, v, w, options.verify_checksums));
    });
  }

  // The checksum in fn's own pass (with_record_streamed). A record that fails
  // a structural check is decoded again the verified way, so that errors come
  // in FORMAT.md's order (a corrupt record says "checksum mismatch" first).
  void visit_streamed(int64_t index,
                      const std::function<void(const RecordView&, ChecksumPass&)>& fn) const {
    get_value(index, [&](const MDB_val& v, const std::string& w) {
      RecordView r;
      try {
        r = decode(index, v, w, false);
      } catch (const Error&) {
        decode(index, v, w, options.verify_checksums);
        throw;
      }
      ChecksumPass pass(v.mv_data, v.mv_size, options.verify_checksums);
      try {
        fn(r, pass);
      } catch (...) {
        if (!pass.finish()) EVL_THROW(Error, w, ": checksum mismatch (corrupt record)");
        throw;
      }
      EVL_CHECK(pass.finish(), w, ": checksum mismatch (corrupt record)");
    });
  }
};

CacheReader::CacheReader(const std::string& cache_dir) : CacheReader(cache_dir, Options{}) {}

CacheReader::CacheReader(const std::string& cache_dir, Options options)
    : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.dir = cache_dir;
  d.options = options;
  d.manifest = Manifest::load(cache_dir);
  EVL_CHECK(!d.manifest.shards.empty(), "cache '", cache_dir, "': manifest lists no shards");
  const unsigned flags = MDB_RDONLY | MDB_NOTLS | (options.no_readahead ? MDB_NORDAHEAD : 0);

  struct Entry {
    std::string key;
    int32_t shard;
    int64_t clip, label;
    std::string video_id;
  };
  std::vector<Entry> entries;
  for (const auto& ms : d.manifest.shards) {
    const int32_t s = static_cast<int32_t>(d.shards.size());
    const std::string path = (fs::path(cache_dir) / ms.name).string();
    d.shards.push_back({ms.name, path, detail::open_env(path, flags, 0)});
    detail::Txn txn(d.shards.back().env.get(), MDB_RDONLY, "cache shard '" + path + "'");
    MDB_cursor* cur = nullptr;
    int rc = mdb_cursor_open(txn.get(), txn.dbi(), &cur);
    if (rc) detail::throw_mdb(rc, "cache shard '" + path + "': mdb_cursor_open");
    std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cur, mdb_cursor_close);
    MDB_val k, v;
    int64_t count = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), ++count) {
      std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
      // Header only (no checksum pass): touches the first page of each value.
      const RecordView r = decode_record(v.mv_data, v.mv_size, d.where(s, key), false);
      EVL_CHECK(r.key == key, d.where(s, key), ": header names key '", r.key, "'");
      entries.push_back({std::move(key), s, r.clip_index, r.label, r.video_id});
    }
    if (rc != MDB_NOTFOUND) detail::throw_mdb(rc, "cache shard '" + path + "': scan failed");
    EVL_CHECK(count == ms.records, "cache shard '", path, "': holds ", count,
              " records, the manifest says ", ms.records,
              " (an unfinished extraction? rerun it to resume, or evl_cache verify)");
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.key < b.key; });
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (i > 0 && entries[i - 1].key == e.key)
      EVL_THROW(Error, "cache '", cache_dir, "': record '", e.key, "' is in shard '",
                d.shards[entries[i - 1].shard].name, "' and in shard '", d.shards[e.shard].name,
                "'");
    if (d.clips.empty() || d.clips.back().clip_index != e.clip)
      d.clips.push_back({e.clip, e.video_id, e.label, {}});
    d.clips.back().records.push_back(static_cast<int64_t>(i));
    d.keys.push_back(e.key);
    d.shard_of.push_back(e.shard);
  }
}

CacheReader::~CacheReader() = default;

const Manifest& CacheReader::manifest() const { return impl_->manifest; }
int64_t CacheReader::size() const { return static_cast<int64_t>(impl_->keys.size()); }
const std::vector<std::string>& CacheReader::keys() const { return impl_->keys; }
const std::vector<CacheReader::Clip>& CacheReader::clips() const { return impl_->clips; }

int64_t CacheReader::index_of(const std::string& key) const {
  const auto& keys = impl_->keys;
  const auto it = std::lower_bound(keys.begin(), keys.end(), key);
  return it != keys.end() && *it == key ? it - keys.begin() : -1;
}

const std::string& CacheReader::shard_of(int64_t index) const {
  EVL_CHECK(index >= 0 && index < size(), "cache '", impl_->dir, "': record index ", index,
            " out of range");
  return impl_->shards[impl_->shard_of[index]].name;
}

Record CacheReader::get(int64_t index) const {
  Record out;
  get_into(index, out);
  return out;
}

Record CacheReader::get(const std::string& key) const {
  const int64_t i = index_of(key);
  EVL_CHECK(i >= 0, "cache '", impl_->dir, "': no record '", key, "'");
  return get(i);
}

void CacheReader::get_into(int64_t index, Record& out) const {
  impl_->visit_streamed(index, [&](const RecordView& r, ChecksumPass& pass) {
    out.key = r.key;
    out.video_id = r.video_id;
    out.label = r.label;
    out.clip_index = r.clip_index;
    out.view_index = r.view_index;
    out.view = r.view;
    out.arrays.resize(r.arrays.size());
    for (size_t i = 0; i < r.arrays.size(); ++i) {
      const auto& [name, v] = r.arrays[i];
      auto& [out_name, a] = out.arrays[i];
      out_name = name;
      a.dtype = v.dtype;
      a.shape = v.shape;
      a.bytes.resize(v.nbytes());  // keeps the capacity
      pass.copy(a.bytes.data(), v.data, a.bytes.size());
    }
  });
}

void CacheReader::with_record(int64_t index,
                              const std::function<void(const RecordView&)>& fn) const {
  impl_->visit(index, fn);
}

void CacheReader::with_record(const std::string& key,
                              const std::function<void(const RecordView&)>& fn) const {
  const int64_t i = index_of(key);
  EVL_CHECK(i >= 0, "cache '", impl_->dir, "': no record '", key, "'");
  impl_->visit(i, fn);
}

void CacheReader::with_record_streamed(
    int64_t index, const std::function<void(const RecordView&, ChecksumPass&)>& fn) const {
  impl_->visit_streamed(index, fn);
}

std::vector<int64_t> CacheReader::epoch_order(uint64_t seed, int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(size()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  uint64_t state = rng::read_order_state(seed, epoch);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng::below(state, i)]);
  return order;
}

}  // namespace evl::cache
