// `evl_cache export`: records to HDF5 as float32, one group per clip-view, with
// Q/K recomputed from the frozen weights for compact caches. HDF5 C API with a
// move-only RAII id; not a general HDF5 writer.
#include <hdf5.h>

#include <vector>

#include "cache/cache_tools.h"
#include "common/check.h"
#include "common/progress.h"

namespace evl::cache {

namespace {

// Owns one HDF5 id and closes it with the matching H5*close.
class H5Id {
 public:
  H5Id(hid_t id, herr_t (*closer)(hid_t), const std::string& what) : id_(id), closer_(closer) {
    EVL_CHECK(id >= 0, "HDF5: ", what, " failed");
  }
  ~H5Id() {
    if (id_ >= 0) closer_(id_);
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  hid_t get() const { return id_; }

 private:
  hid_t id_;
  herr_t (*closer_)(hid_t);
};

void check_h5(herr_t rc, const std::string& what) { EVL_CHECK(rc >= 0, "HDF5: ", what, " failed"); }

void write_f32(hid_t group, const std::string& name, const std::vector<int64_t>& shape,
               const float* data, const std::string& where) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
             where + ": dataspace for '" + name + "'");
  H5Id ds(H5Dcreate2(group, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                     H5P_DEFAULT),
          H5Dclose, where + ": create dataset '" + name + "'");
  check_h5(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
           where + ": write dataset '" + name + "'");
}

void attr_string(hid_t obj, const char* name, const std::string& value) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose, "string type");
  check_h5(H5Tset_size(type.get(), H5T_VARIABLE), "H5Tset_size");
  check_h5(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset");
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose, "scalar space");
  H5Id attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
            std::string("attribute ") + name);
  const char* p = value.c_str();
  check_h5(H5Awrite(attr.get(), type.get(), &p), std::string("write attribute ") + name);
}

void attr_int(hid_t obj, const char* name, int64_t value) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose, "scalar space");
  H5Id attr(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
            std::string("attribute ") + name);
  check_h5(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), std::string("write attribute ") + name);
}

}  // namespace

int64_t export_h5(const std::string& dir, const std::string& h5_path, int64_t limit) {
  const CacheReader reader(dir);
  const Manifest& m = reader.manifest();
  const int64_t n = limit < 0 ? reader.size() : std::min(limit, reader.size());
  Record weights;
  if (m.storage == StorageMode::kCompact) weights = load_qk_weights(dir);

  H5Id file(H5Fcreate(h5_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
            "create '" + h5_path + "'");
  attr_string(file.get(), "manifest", m.to_json());
  attr_string(file.get(), "format", "evl-cache-export");
  H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose, "link property list");
  check_h5(H5Pset_create_intermediate_group(lcpl.get(), 1), "H5Pset_create_intermediate_group");

  const int64_t M = static_cast<int64_t>(m.layers.size()), T = m.frames;
  const int64_t L = m.backbone.grid * m.backbone.grid + 1, C = m.backbone.width;
  const std::vector<int64_t> shape = {M, T, L, C};
  const size_t per_layer = static_cast<size_t>(T * L * C);
  Progress progress("export", n, "records");
  for (int64_t i = 0; i < n; ++i) {
    reader.with_record(i, [&](const RecordView& r) {
      const std::string where = "export '" + h5_path + "': record '" + r.key + "'";
      H5Id group(
          H5Gcreate2(file.get(), ("/" + r.key).c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
          H5Gclose, where + ": create group");
      std::vector<float> x(static_cast<size_t>(r.array("x").numel()));
      to_float32(r.array("x"), x.data());
      if (m.storage == StorageMode::kQK) {
        write_f32(group.get(), "x", shape, x.data(), where);
        for (const char* name : {"q", "k"}) {
          std::vector<float> a(x.size());
          to_float32(r.array(name), a.data());
          write_f32(group.get(), name, shape, a.data(), where);
        }
      } else {
        // x holds blocks first-1 .. last: X of layer i is x[i+1], its Q/K come from x[i].
        std::vector<float> q(M * per_layer), k(M * per_layer);
        for (int64_t l = 0; l < M; ++l)
          compute_qk(weights, m.layers[l], x.data() + l * per_layer, T * L, C,
                     q.data() + l * per_layer, k.data() + l * per_layer);
        write_f32(group.get(), "x", shape, x.data() + per_layer, where);
        write_f32(group.get(), "q", shape, q.data(), where);
        write_f32(group.get(), "k", shape, k.data(), where);
      }
      if (const ArrayView* in = r.find("inputs")) {
        std::vector<float> a(static_cast<size_t>(in->numel()));
        to_float32(*in, a.data());
        write_f32(group.get(), "inputs", in->shape, a.data(), where);
      }
      attr_string(group.get(), "video_id", r.video_id);
      attr_int(group.get(), "label", r.label);
      attr_string(group.get(), "view", r.view);
      attr_int(group.get(), "clip_index", r.clip_index);
      attr_int(group.get(), "view_index", r.view_index);
    });
    progress.advance();
  }
  return n;
}

}  // namespace evl::cache
