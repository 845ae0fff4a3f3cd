// evl._evl: the feature cache (cache/cache.h) and the score file
// (evaluate/scores.h) for Python, under the package in python/evl/. A record
// decodes straight into numpy arrays this module allocates, in one pass over
// LMDB's memory map that also verifies its checksum (fp16/bf16 conversion and
// int8/fp8 dequantization in C++, with the GIL released); compact caches get
// their Q/K recomputed (qk.h). Not here: the torch Dataset (evl/torch.py).
//
// Letters: M decoder layers, T frames, L tokens per frame (with CLS), C width.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache/checksum.h"
#include "cache/quantize.h"
#include "common/check.h"
#include "evaluate/scores.h"
#include "python/src/qk.h"

namespace py = pybind11;

namespace evl::python {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

// One clip-view as Python sees it: decoder inputs as float32 (M, T, L, C).
struct Record {
  std::string key, video_id, view;
  int64_t label = -1, clip_index = 0;
  int32_t view_index = 0;
  FloatArray x, q, k;
  py::object inputs = py::none();  // (T, 3, H, W) float32 when the cache has them
};

// Converts block `block` (T*L rows of C) of array `a` into `out`, one frame at a
// time, hashing each frame's bytes just before it is read (the loader's order).
void convert_block(const cache::ArrayView& a, int64_t block, int64_t frames, int64_t tokens,
                   int64_t width, float* out, cache::ChecksumPass& pass) {
  const bool quantized = cache::is_quantized(a.dtype);
  const size_t code_bytes = quantized ? 1 : cache::dtype_size(a.dtype);
  const auto* codes = static_cast<const uint8_t*>(a.data);
  for (int64_t t = 0; t < frames; ++t) {
    const int64_t first = (block * frames + t) * tokens;
    const size_t begin = static_cast<size_t>(first * width) * code_bytes;
    pass.hash_to(codes + begin + static_cast<size_t>(tokens * width) * code_bytes);
    float* dst = out + t * tokens * width;
    if (quantized)
      cache::dequantize_rows(a, first, tokens, dst);
    else if (a.dtype == cache::DType::kF16 || a.dtype == cache::DType::kBF16)
      half_to_float32(codes + begin, a.dtype == cache::DType::kBF16, tokens * width, dst);
    else
      cache::to_float32(cache::ArrayView{a.dtype, {tokens, width}, codes + begin}, dst);
  }
}

class Cache {
 public:
  Cache(const std::string& dir, bool verify_checksums, bool no_readahead)
      : dir_(dir), pid_(getpid()) {
    options_.verify_checksums = verify_checksums;
    options_.no_readahead = no_readahead;
    reader_ = std::make_unique<cache::CacheReader>(dir, options_);
    manifest_ = reader_->manifest(), keys_ = reader_->keys(), clips_ = reader_->clips();
    const auto& m = manifest_;
    if (m.storage == cache::StorageMode::kCompact)
      qk_ = std::make_unique<QKRecompute>(cache::load_qk_weights(dir), m.layers, m.backbone.width);
  }
  // A Cache inherited through fork() belongs to the parent's LMDB environment:
  // closing it here would drop the parent's locks, so the child leaks it.
  ~Cache() {
    if (getpid() != pid_) {
      (void)reader_.release();
      (void)qk_.release();
    }
  }
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  const std::string& dir() const { return dir_; }
  // Copies taken at open: valid after close() and in a forked child.
  const cache::Manifest& manifest() const { return manifest_; }
  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  int64_t layers() const { return static_cast<int64_t>(manifest_.layers.size()); }
  const std::vector<std::string>& keys() const { return keys_; }
  int64_t index_of(const std::string& key) const {  // keys are sorted (LMDB's byte order)
    const auto it = std::lower_bound(keys_.begin(), keys_.end(), key);
    return it != keys_.end() && *it == key ? it - keys_.begin() : -1;
  }
  const std::vector<cache::CacheReader::Clip>& clips() const { return clips_; }

  // Closes the LMDB environments now (not when Python collects the object).
  // Call without the GIL (the lock is taken after releasing it, see get()).
  void close() {
    std::unique_lock<std::shared_mutex> lock(mu_);
    if (getpid() == pid_) reader_.reset();
  }

  // cache::verify_cache opens the shards itself, and LMDB must not have an
  // environment open twice in one process (closing either copy drops the
  // other's locks): the reader is closed while it runs, then reopened. Call
  // without the GIL.
  cache::VerifyReport verify() {
    std::unique_lock<std::shared_mutex> lock(mu_);
    (void)reader();
    reader_.reset();
    cache::VerifyReport r;
    try {
      r = cache::verify_cache(dir_);
    } catch (...) {
      reader_ = std::make_unique<cache::CacheReader>(dir_, options_);
      throw;
    }
    reader_ = std::make_unique<cache::CacheReader>(dir_, options_);
    return r;
  }

  int64_t checked_index(int64_t i) const {
    const int64_t n = size();
    if (i < 0) i += n;
    if (i < 0 || i >= n)
      throw py::index_error(str("cache '", dir_, "': record index out of range (", n, " records)"));
    return i;
  }

  // Record `index` with the decoder inputs of the last `last` cache layers (all when 0).
  std::unique_ptr<Record> get(int64_t index, int64_t last) const {
    const cache::Manifest& m = manifest();
    const int64_t M = layers(), n = last > 0 ? last : M;
    EVL_CHECK(n <= M, "cache '", dir_, "' holds ", M, " decoder layers, ", n, " were asked for");
    const int64_t off = M - n, T = m.frames, L = 1 + m.backbone.grid * m.backbone.grid,
                  C = m.backbone.width;
    const bool compact = m.storage == cache::StorageMode::kCompact;
    auto rec = std::make_unique<Record>();
    rec->x = FloatArray({n, T, L, C});
    rec->q = FloatArray({n, T, L, C});
    rec->k = FloatArray({n, T, L, C});
    float* inputs = nullptr;
    if (m.has_inputs) {
      FloatArray a({T, int64_t{3}, m.backbone.input_size, m.backbone.input_size});
      inputs = a.mutable_data();
      rec->inputs = a;
    }
    float *x = rec->x.mutable_data(), *q = rec->q.mutable_data(), *k = rec->k.mutable_data();
    const int64_t block = T * L * C;
    std::vector<float> x_in(compact ? static_cast<size_t>(block) : 0);
    {
      py::gil_scoped_release release;
      std::shared_lock<std::shared_mutex> lock(mu_);  // against close() / verify() meanwhile
      reader().with_record_streamed(
          index, [&](const cache::RecordView& v, cache::ChecksumPass& pass) {
            cache::check_record_shape(m, v, "cache '" + dir_ + "': record '" + v.key + "'");
            rec->key = v.key, rec->video_id = v.video_id, rec->view = v.view;
            rec->label = v.label, rec->clip_index = v.clip_index, rec->view_index = v.view_index;
            std::vector<const std::pair<std::string, cache::ArrayView>*> arrays;
            for (const auto& a : v.arrays) arrays.push_back(&a);
            std::sort(arrays.begin(), arrays.end(),
                      [](auto* a, auto* b) { return a->second.data < b->second.data; });
            for (const auto* named : arrays) {
              const auto& [name, a] = *named;
              if (name == "inputs") {
                pass.hash_to(static_cast<const uint8_t*>(a.data) + a.nbytes());
                cache::to_float32(a, inputs);
                continue;
              }
              float* out = name == "x" ? x : name == "q" ? q : k;
              for (int64_t b = 0; b < a.shape[0]; ++b) {
                if (compact && b == off)
                  convert_block(a, b, T, L, C, x_in.data(), pass);
                else if (b >= off + (compact ? 1 : 0))
                  convert_block(a, b, T, L, C, out + (b - off - (compact ? 1 : 0)) * block, pass);
              }
            }
          });
      if (compact)  // after the checksum passed: Q/K of layer i from the block before it
        for (int64_t i = 0; i < n; ++i)
          qk_->compute(off + i, i == 0 ? x_in.data() : x + (i - 1) * block, T, L, q + i * block,
                       k + i * block);
    }
    return rec;
  }

 private:
  const cache::CacheReader& reader() const {
    EVL_CHECK(reader_, "cache '", dir_, "' is closed");
    EVL_CHECK(getpid() == pid_, "cache '", dir_, "' was opened in process ", pid_,
              " and used in process ", getpid(),
              " after fork(): an LMDB environment does not survive fork; open the cache in the "
              "worker (evl.torch.CacheDataset does)");
    return *reader_;
  }

  std::string dir_;
  pid_t pid_;
  cache::CacheReader::Options options_;
  cache::Manifest manifest_;
  std::vector<std::string> keys_;
  std::vector<cache::CacheReader::Clip> clips_;
  mutable std::shared_mutex mu_;  // shared: reads; unique: close, verify
  std::unique_ptr<cache::CacheReader> reader_;
  std::unique_ptr<QKRecompute> qk_;
};

py::dict read_scores(const std::string& path) {
  ScoreFile f;
  {
    py::gil_scoped_release release;
    f = evl::read_scores(path);
  }
  const int64_t N = f.num_videos(), K = f.num_classes();
  FloatArray scores({N, K});
  std::copy(f.scores.begin(), f.scores.end(), scores.mutable_data());
  py::array_t<int64_t> labels(N);
  std::copy(f.labels.begin(), f.labels.end(), labels.mutable_data());
  py::dict d;
  d["scores"] = scores;
  d["labels"] = labels;
  d["video_ids"] = f.video_ids;
  d["kind"] = to_string(f.kind);
  d["num_views"] = f.num_views;
  d["model"] = f.model;
  d["evl_version"] = f.evl_version;
  return d;
}

void write_scores(const std::string& path,
                  const py::array_t<float, py::array::c_style | py::array::forcecast>& scores,
                  const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& labels,
                  const std::vector<std::string>& video_ids, const std::string& kind,
                  int64_t num_views, const std::string& model) {
  EVL_CHECK(scores.ndim() == 2, "score file '", path, "': scores must be (N, K), got ",
            scores.ndim(), " dimensions");
  EVL_CHECK(labels.ndim() == 1, "score file '", path, "': labels must be (N,)");
  ScoreFile f;
  f.scores.assign(scores.data(), scores.data() + scores.size());
  f.labels.assign(labels.data(), labels.data() + labels.size());
  f.video_ids = video_ids;
  f.kind = parse_score_kind(kind);
  f.num_views = num_views;
  f.model = model;
  EVL_CHECK(static_cast<int64_t>(video_ids.size()) == scores.shape(0), "score file '", path,
            "': ", video_ids.size(), " video_ids for ", scores.shape(0), " rows of scores");
  py::gil_scoped_release release;
  evl::write_scores(path, f);
}

}  // namespace
}  // namespace evl::python

PYBIND11_MODULE(_evl, m) {
  using namespace evl::python;
  m.doc() = "evl feature cache and score files (C++ core of the evl package)";
  static py::exception<evl::Error> error(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const evl::Error& e) {
      error(e.what());
    }
  });

  py::class_<Record>(m, "Record", "One clip-view: decoder inputs as float32 numpy arrays.")
      .def_readonly("key", &Record::key)
      .def_readonly("video_id", &Record::video_id)
      .def_readonly("view", &Record::view)
      .def_readonly("label", &Record::label)
      .def_readonly("clip_index", &Record::clip_index)
      .def_readonly("view_index", &Record::view_index)
      .def_readonly("x", &Record::x, "(M, T, L, C) block outputs X")
      .def_readonly("q", &Record::q, "(M, T, L, C) attention queries (recomputed when compact)")
      .def_readonly("k", &Record::k, "(M, T, L, C) attention keys (recomputed when compact)")
      .def_readonly("inputs", &Record::inputs, "(T, 3, H, W) preprocessed frames, or None")
      .def("__repr__", [](const Record& r) {
        return evl::str("<evl.Record '", r.key, "' video_id='", r.video_id, "' label=", r.label,
                        " view='", r.view, "'>");
      });

  py::class_<Cache>(m, "Cache")
      .def(py::init<const std::string&, bool, bool>(), py::arg("path"),
           py::arg("verify_checksums") = true, py::arg("no_readahead") = false)
      .def_property_readonly("path", &Cache::dir)
      .def_property_readonly("layers", &Cache::layers)
      .def("__len__", &Cache::size)
      .def("keys", &Cache::keys)
      .def("manifest_json", [](const Cache& c) { return c.manifest().to_json(); })
      .def("index_of", &Cache::index_of)
      .def(
          "get_index",
          [](const Cache& c, int64_t i, int64_t last) { return c.get(c.checked_index(i), last); },
          py::arg("index"), py::arg("layers") = 0)
      .def(
          "get_key",
          [](const Cache& c, const std::string& key, int64_t last) {
            const int64_t i = c.index_of(key);
            if (i < 0)
              throw py::key_error(evl::str("cache '", c.dir(), "': no record '", key, "'"));
            return c.get(i, last);
          },
          py::arg("key"), py::arg("layers") = 0)
      .def("clips",
           [](const Cache& c) {
             py::list out;
             for (const auto& clip : c.clips()) {
               py::dict d;
               d["clip_index"] = clip.clip_index;
               d["video_id"] = clip.video_id;
               d["label"] = clip.label;
               d["records"] = clip.records;
               out.append(d);
             }
             return out;
           })
      .def("verify",
           [](Cache& c) {
             evl::cache::VerifyReport r;
             {
               py::gil_scoped_release release;
               r = c.verify();
             }
             py::list bad;
             for (const auto& b : r.bad) bad.append(py::make_tuple(b.shard, b.key, b.reason));
             return py::make_tuple(r.records, bad);
           })
      .def("close", &Cache::close, py::call_guard<py::gil_scoped_release>());

  m.def("read_scores", &read_scores, py::arg("path"));
  m.def("write_scores", &write_scores, py::arg("path"), py::arg("scores"), py::arg("labels"),
        py::arg("video_ids"), py::arg("kind"), py::arg("num_views"), py::arg("model"));
}
