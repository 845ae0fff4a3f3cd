// `evl_cache export`: records to HDF5 as float32, one group per clip-view, with
// Q/K recomputed from the frozen weights for compact caches. HDF5 through the
// shared wrapper (common/h5.h), written atomically; not a general HDF5 writer.
#include <hdf5.h>

#include <vector>

#include "cache/cache_tools.h"
#include "common/atomic_file.h"
#include "common/check.h"
#include "common/h5.h"
#include "common/progress.h"

namespace evl::cache {

namespace {

using H5Id = h5::Id;

void write_f32(hid_t group, const std::string& name, const std::vector<int64_t>& shape,
               const float* data, const std::string& where) {
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  h5::write_dataset(group, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims, data, where);
}

}  // namespace

int64_t export_h5(const std::string& dir, const std::string& h5_path, int64_t limit) {
  const CacheReader reader(dir);
  const Manifest& m = reader.manifest();
  const int64_t n = limit < 0 ? reader.size() : std::min(limit, reader.size());
  Record weights;
  if (m.storage == StorageMode::kCompact) weights = load_qk_weights(dir);

  const std::string what = "export '" + h5_path + "'";
  AtomicFile out(h5_path);
  const auto hdf5 = h5::lock();
  H5Id file =
      h5::checked(H5Fcreate(out.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                  H5Fclose, what, "create '" + out.temp_path() + "'");
  h5::write_string_attr(file.get(), "manifest", m.to_json(), what);
  h5::write_string_attr(file.get(), "format", "evl-cache-export", what);
  H5Id lcpl = h5::checked(H5Pcreate(H5P_LINK_CREATE), H5Pclose, what, "make a property list");
  h5::check(H5Pset_create_intermediate_group(lcpl.get(), 1), what, "allow intermediate groups");

  const int64_t M = static_cast<int64_t>(m.layers.size()), T = m.frames;
  const int64_t L = m.backbone.grid * m.backbone.grid + 1, C = m.backbone.width;
  const std::vector<int64_t> shape = {M, T, L, C};
  const size_t per_layer = static_cast<size_t>(T * L * C);
  Progress progress("export", n, "records");
  for (int64_t i = 0; i < n; ++i) {
    reader.with_record(i, [&](const RecordView& r) {
      const std::string where = "export '" + h5_path + "': record '" + r.key + "'";
      H5Id group = h5::checked(
          H5Gcreate2(file.get(), ("/" + r.key).c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
          H5Gclose, where, "create its group");
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
      h5::write_string_attr(group.get(), "video_id", r.video_id, where);
      h5::write_int_attr(group.get(), "label", r.label, where);
      h5::write_string_attr(group.get(), "view", r.view, where);
      h5::write_int_attr(group.get(), "clip_index", r.clip_index, where);
      h5::write_int_attr(group.get(), "view_index", r.view_index, where);
    });
    progress.advance();
  }
  lcpl.reset();
  h5::check(file.close(), what, "close it");
  out.commit();  // a failed or interrupted export leaves no partial file
  return n;
}

}  // namespace evl::cache
