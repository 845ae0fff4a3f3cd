// RAII wrappers for the LMDB handles the cache uses (internal to evl_cache):
// an environment, a transaction, and the error conversion with mdb_strerror.
// Deliberately thin: no cursors-as-iterators, no named sub-databases.
#pragma once

#include <lmdb.h>

#include <memory>
#include <string>

namespace evl::cache::detail {

// Throws evl::Error "<what>: <mdb_strerror(rc)>" (rc from any mdb_* call).
[[noreturn]] void throw_mdb(int rc, const std::string& what);

struct EnvCloser {
  void operator()(MDB_env* env) const { mdb_env_close(env); }
};
using EnvPtr = std::unique_ptr<MDB_env, EnvCloser>;

// Opens (creating when `flags` lacks MDB_RDONLY) the LMDB environment in `dir`.
// map_bytes 0 keeps the size recorded in the environment.
EnvPtr open_env(const std::string& dir, unsigned flags, size_t map_bytes);

// One transaction; aborted on destruction unless committed.
class Txn {
 public:
  Txn(MDB_env* env, unsigned flags, const std::string& where);
  ~Txn() { abort(); }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  MDB_txn* get() const { return txn_; }
  MDB_dbi dbi() const { return dbi_; }
  // Returns mdb_txn_commit's code (0 ok); the txn is gone either way.
  int commit();
  void abort() {
    if (txn_) mdb_txn_abort(txn_);
    txn_ = nullptr;
  }

 private:
  MDB_txn* txn_ = nullptr;
  MDB_dbi dbi_ = 0;
};

// Size of the LMDB data file (data.mdb) in `dir`, 0 if absent.
uint64_t data_file_bytes(const std::string& dir);

}  // namespace evl::cache::detail
