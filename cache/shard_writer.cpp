// ShardWriter: one LMDB shard, batched write transactions, automatic map growth
// and durable (fsync'd) commits. LMDB's copy-on-write B-tree means a process
// killed at any instant leaves the last committed state; nothing else is needed
// for crash safety. Records of a batch are kept encoded so that a batch that
// hits MDB_MAP_FULL can be replayed into a grown map.
#include <algorithm>

#include "cache/cache.h"
#include "cache/lmdb_env.h"
#include "common/check.h"
#include "common/log.h"

namespace evl::cache {

struct ShardWriter::Impl {
  std::string dir;
  Options options;
  detail::EnvPtr env;
  std::unique_ptr<detail::Txn> txn;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> pending;  // this batch, encoded
  // Buffers of committed batches, reused: fresh multi-MiB allocations page-fault.
  std::vector<std::vector<uint8_t>> spare;
  size_t pending_bytes = 0;
  uint64_t bytes_written = 0;
  bool failed = false;

  std::string where(const std::string& key) const {
    return "cache shard '" + dir + "': record '" + key + "'";
  }
  size_t map_size() const {
    MDB_envinfo info;
    mdb_env_info(env.get(), &info);
    return info.me_mapsize;
  }

  // Puts one value into the open txn; false on MDB_MAP_FULL.
  bool put_one(const std::string& key, const std::vector<uint8_t>& value) {
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<uint8_t*>(value.data())};
    const int rc = mdb_put(txn->get(), txn->dbi(), &k, &v, 0);
    if (rc == MDB_MAP_FULL) return false;
    if (rc) {
      fail();
      detail::throw_mdb(rc, where(key) + ": write failed");
    }
    return true;
  }

  // Aborts the batch's txn, grows the map, and replays the batch until it fits.
  void grow_and_replay() {
    for (;;) {
      txn.reset();
      const size_t old_size = map_size();
      const size_t new_size = std::max(old_size * 2, old_size + 2 * pending_bytes);
      const int rc = mdb_env_set_mapsize(env.get(), new_size);
      if (rc) {
        fail();
        detail::throw_mdb(rc, "cache shard '" + dir + "': cannot grow the map to " +
                                  std::to_string(new_size) + " bytes");
      }
      log::debug("cache shard '", dir, "': map grown to ", new_size >> 20, " MiB");
      txn = std::make_unique<detail::Txn>(env.get(), 0u, "cache shard '" + dir + "'");
      bool ok = true;
      for (const auto& [key, value] : pending)
        if (!(ok = put_one(key, value))) break;
      if (ok) return;
    }
  }

  void fail() {
    failed = true;
    txn.reset();
    pending.clear();
    pending_bytes = 0;
  }

  void check_usable() const {
    EVL_CHECK(!failed, "cache shard '", dir,
              "': this writer failed earlier (see the first error); reopen it to resume");
  }
};

ShardWriter::ShardWriter(const std::string& shard_dir, size_t batch_records)
    : ShardWriter(shard_dir, Options{batch_records}) {}

ShardWriter::ShardWriter(const std::string& shard_dir, Options options)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = shard_dir;
  impl_->options = options;
  impl_->options.batch_records = std::max<size_t>(1, options.batch_records);
  // MDB_NOTLS: contains_valid's read txn may coexist with the batch's write txn.
  impl_->env = detail::open_env(shard_dir, MDB_NOTLS, options.initial_map_bytes);
}

ShardWriter::~ShardWriter() {
  try {
    if (impl_ && !impl_->failed) commit();
  } catch (const std::exception& e) {
    log::warn(e.what());
  }
}

bool ShardWriter::contains_valid(const std::string& key) {
  detail::Txn txn(impl_->env.get(), MDB_RDONLY, "cache shard '" + impl_->dir + "'");
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
  const int rc = mdb_get(txn.get(), txn.dbi(), &k, &v);
  if (rc == MDB_NOTFOUND) return false;
  if (rc) detail::throw_mdb(rc, impl_->where(key) + ": read failed");
  try {
    const RecordView r = decode_record(v.mv_data, v.mv_size, impl_->where(key));
    return r.key == key;
  } catch (const Error& e) {
    log::warn(e.what(), " (it will be rewritten)");
    return false;
  }
}

void ShardWriter::put(const Record& record) {
  impl_->check_usable();
  EVL_CHECK(!record.key.empty() && record.key.size() <= 511, "cache shard '", impl_->dir,
            "': record key '", record.key, "' is empty or longer than LMDB's 511 bytes");
  std::vector<uint8_t> value;
  if (!impl_->spare.empty()) {
    value = std::move(impl_->spare.back());
    impl_->spare.pop_back();
  }
  encode_record_into(record, value);
  if (!impl_->txn)
    impl_->txn =
        std::make_unique<detail::Txn>(impl_->env.get(), 0u, "cache shard '" + impl_->dir + "'");
  impl_->pending_bytes += value.size();
  impl_->pending.emplace_back(record.key, std::move(value));
  if (!impl_->put_one(record.key, impl_->pending.back().second)) impl_->grow_and_replay();
  if (impl_->pending.size() >= impl_->options.batch_records ||
      impl_->pending_bytes >= impl_->options.max_batch_bytes)
    commit();
}

void ShardWriter::commit() {
  impl_->check_usable();
  if (!impl_->txn) return;
  const int rc = impl_->txn->commit();  // fsyncs data then meta (no MDB_NOSYNC)
  impl_->txn.reset();
  if (rc) {
    const size_t n = impl_->pending.size();
    impl_->fail();
    detail::throw_mdb(rc, "cache shard '" + impl_->dir + "': committing a batch of " +
                              std::to_string(n) +
                              " records failed (records committed before are intact; free "
                              "disk space and rerun to resume)");
  }
  impl_->bytes_written += impl_->pending_bytes;
  for (auto& entry : impl_->pending) impl_->spare.push_back(std::move(entry.second));
  impl_->pending.clear();
  impl_->pending_bytes = 0;
}

int64_t ShardWriter::committed_records() {
  detail::Txn txn(impl_->env.get(), MDB_RDONLY, "cache shard '" + impl_->dir + "'");
  MDB_stat st;
  const int rc = mdb_stat(txn.get(), txn.dbi(), &st);
  if (rc) detail::throw_mdb(rc, "cache shard '" + impl_->dir + "': mdb_stat");
  return static_cast<int64_t>(st.ms_entries);
}

uint64_t ShardWriter::bytes_written() const { return impl_->bytes_written; }

}  // namespace evl::cache
