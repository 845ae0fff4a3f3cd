// The HDF5 wrapper of h5.h.
#include "common/h5.h"

#include "common/check.h"

namespace evl::h5 {

Id& Id::operator=(Id&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

herr_t Id::close() {
  const herr_t rc = id_ >= 0 && close_ ? close_(id_) : 0;
  id_ = H5I_INVALID_HID;
  return rc;
}

void Id::reset() {
  if (id_ >= 0 && close_) close_(id_);
  id_ = H5I_INVALID_HID;
}

std::unique_lock<std::mutex> lock() {
  static std::mutex mu;
  std::unique_lock<std::mutex> guard(mu);
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
  return guard;
}

namespace {
herr_t keep_innermost(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && e && e->desc) *out = str(e->func_name ? e->func_name : "?", ": ", e->desc);
  return 0;
}
}  // namespace

std::string error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? "unknown HDF5 error" : text;
}

Id checked(hid_t id, Id::Closer close, const std::string& what, const std::string& action) {
  if (id < 0) EVL_THROW(Error, what, ": cannot ", action, " (", error_text(), ")");
  return Id(id, close);
}

void check(herr_t rc, const std::string& what, const std::string& action) {
  if (rc < 0) EVL_THROW(Error, what, ": cannot ", action, " (", error_text(), ")");
}

Id utf8_string_type() {
  Id t = checked(H5Tcopy(H5T_C_S1), H5Tclose, "HDF5", "copy the string type");
  check(H5Tset_size(t.get(), H5T_VARIABLE), "HDF5", "make a variable-length string type");
  check(H5Tset_cset(t.get(), H5T_CSET_UTF8), "HDF5", "set the UTF-8 character set");
  return t;
}

void write_dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
                   const std::vector<hsize_t>& dims, const void* data, const std::string& what) {
  Id space = checked(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                     H5Sclose, what, str("make the dataspace of '", name, "'"));
  Id ds = checked(
      H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
      H5Dclose, what, str("create dataset '", name, "'"));
  check(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), what,
        str("write dataset '", name, "'"));
}

void write_string_attr(hid_t obj, const std::string& name, const std::string& value,
                       const std::string& what) {
  Id type = utf8_string_type();
  Id space = checked(H5Screate(H5S_SCALAR), H5Sclose, what, "make a scalar dataspace");
  Id attr =
      checked(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, what, str("create attribute '", name, "'"));
  const char* p = value.c_str();
  check(H5Awrite(attr.get(), type.get(), &p), what, str("write attribute '", name, "'"));
}

void write_int_attr(hid_t obj, const std::string& name, int64_t value, const std::string& what) {
  Id space = checked(H5Screate(H5S_SCALAR), H5Sclose, what, "make a scalar dataspace");
  Id attr =
      checked(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, what, str("create attribute '", name, "'"));
  check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), what, str("write attribute '", name, "'"));
}

}  // namespace evl::h5
