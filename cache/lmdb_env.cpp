// LMDB RAII helpers (lmdb_env.h): environment open with the cache's flags,
// transactions that abort unless committed, mdb_strerror-based errors.
#include "cache/lmdb_env.h"

#include <filesystem>

#include "common/check.h"

namespace evl::cache::detail {

void throw_mdb(int rc, const std::string& what) { EVL_THROW(Error, what, ": ", mdb_strerror(rc)); }

EnvPtr open_env(const std::string& dir, unsigned flags, size_t map_bytes) {
  MDB_env* raw = nullptr;
  int rc = mdb_env_create(&raw);
  if (rc) throw_mdb(rc, "cache shard '" + dir + "': mdb_env_create");
  EnvPtr env(raw);
  if (map_bytes) {
    rc = mdb_env_set_mapsize(raw, map_bytes);
    if (rc) throw_mdb(rc, "cache shard '" + dir + "': mdb_env_set_mapsize");
  }
  if (!(flags & MDB_RDONLY)) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    EVL_CHECK(!ec, "cache shard '", dir, "': cannot create directory: ", ec.message());
  } else {
    EVL_CHECK(std::filesystem::exists(std::filesystem::path(dir) / "data.mdb"), "cache shard '",
              dir, "': no LMDB data file (data.mdb) there");
  }
  rc = mdb_env_open(raw, dir.c_str(), flags, 0644);
  if (rc) throw_mdb(rc, "cache shard '" + dir + "': cannot open LMDB environment");
  return env;
}

Txn::Txn(MDB_env* env, unsigned flags, const std::string& where) {
  int rc = mdb_txn_begin(env, nullptr, flags, &txn_);
  if (rc) {
    txn_ = nullptr;
    throw_mdb(rc, where + ": cannot begin LMDB transaction");
  }
  rc = mdb_dbi_open(txn_, nullptr, 0, &dbi_);
  if (rc) {
    abort();
    throw_mdb(rc, where + ": cannot open LMDB database");
  }
}

int Txn::commit() {
  MDB_txn* t = txn_;
  txn_ = nullptr;
  return t ? mdb_txn_commit(t) : 0;
}

uint64_t data_file_bytes(const std::string& dir) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(std::filesystem::path(dir) / "data.mdb", ec);
  return ec ? 0 : n;
}

}  // namespace evl::cache::detail
