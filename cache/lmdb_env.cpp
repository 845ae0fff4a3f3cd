// LMDB RAII helpers (lmdb_env.h): environment open with the cache's flags,
// transactions that abort unless committed, mdb_strerror-based errors.
#include "cache/lmdb_env.h"

#include <filesystem>

#include "common/check.h"

namespace evl::cache::detail {

void throw_mdb(int rc, const std::string& what) { EVL_THROW(Error, what, ": ", mdb_strerror(rc)); }

// LMDB reads its pages through a memory map: a page past the end of a
// truncated data.mdb is a SIGBUS on first touch, not an error code. The meta
// page (read with pread at open) names the last page in use, so a file shorter
// than (last page + 1) * page size is refused here, before any page is mapped.
void check_not_truncated(MDB_env* env, const std::string& dir) {
  MDB_envinfo info;
  MDB_stat stat;
  int rc = mdb_env_info(env, &info);
  if (rc) throw_mdb(rc, "cache shard '" + dir + "': mdb_env_info");
  rc = mdb_env_stat(env, &stat);
  if (rc) throw_mdb(rc, "cache shard '" + dir + "': mdb_env_stat");
  const uint64_t need = (static_cast<uint64_t>(info.me_last_pgno) + 1) * stat.ms_psize;
  const uint64_t have = data_file_bytes(dir);
  EVL_CHECK(have >= need, "cache shard '", dir, "': data.mdb is truncated: ", have,
            " bytes, its last page ends at byte ", need,
            " (an interrupted copy? copy the shard again, or re-run evl_extract into a new --out)");
}

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
  check_not_truncated(raw, dir);
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
