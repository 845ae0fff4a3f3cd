// The one wrapper of HDF5's C API that evl's writers and readers share
// (evaluate/scores.cpp, cache/export_h5.cpp): a move-only RAII identifier,
// HDF5's own error text in every exception, and the process-wide lock.
// Library evl_h5 (links HDF5; no LibTorch).
//
// Thread rule: Debian's HDF5 is the serial build, which is not thread-safe.
// Every HDF5 call in evl runs under h5::lock(); hold it for the whole use of a
// file (open to close). Locking also turns off HDF5's printing of its error
// stack to stderr: errors travel as evl::Error with the stack's innermost text.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace evl::h5 {

// Owns one identifier and closes it with the matching H5?close.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer close) : id_(id), close_(close) {}
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& o) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();    // closes, ignoring the status (destructors, error paths)
  herr_t close();  // closes now and returns the closer's status (check it on writes)

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// The process-wide HDF5 lock (see the thread rule above).
[[nodiscard]] std::unique_lock<std::mutex> lock();

// The innermost message on HDF5's error stack ("H5Fopen: unable to open file"),
// then clears the stack. "unknown HDF5 error" when the stack is empty.
std::string error_text();

// `id` wrapped with `close`; throws evl::Error "<what>: cannot <action> (<HDF5 text>)"
// when id < 0.
Id checked(hid_t id, Id::Closer close, const std::string& what, const std::string& action);
// Throws the same when rc < 0.
void check(herr_t rc, const std::string& what, const std::string& action);

// A variable-length UTF-8 string type.
Id utf8_string_type();

// Writers, each naming `what` (e.g. "score file 'a.h5'") in its errors.
void write_dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
                   const std::vector<hsize_t>& dims, const void* data, const std::string& what);
void write_string_attr(hid_t obj, const std::string& name, const std::string& value,
                       const std::string& what);
void write_int_attr(hid_t obj, const std::string& name, int64_t value, const std::string& what);

}  // namespace evl::h5
