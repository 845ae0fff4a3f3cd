// Implements the HDF5 score file (scores.h) on HDF5's C API through the
// shared wrapper (common/h5.h: RAII ids, HDF5's error text, the lock), written
// atomically (common/atomic_file.h). Does not compress or chunk: score files are
// small and read whole.
#include "evaluate/scores.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "common/atomic_file.h"
#include "common/check.h"
#include "common/h5.h"
#include "evl/version.h"

namespace evl {

namespace fs = std::filesystem;

namespace {

// Longest a score file may take to read (the child's alarm): 10 s plus 1 s
// per 8 MiB. A real one reads in well under that (Kinetics-400 val, 20k x 400
// float32, is 32 MiB); a corrupt one can make HDF5 loop forever.
unsigned read_seconds(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return 10 + static_cast<unsigned>(std::min<uintmax_t>(ec ? 0 : size >> 23, 100000));
}

using h5::check;
using h5::checked;
using H5Id = h5::Id;

// Reads every string of a dataset or attribute (vlen or fixed-length).
template <typename ReadFn>
std::vector<std::string> read_strings(hid_t file_type, hid_t space, hssize_t count, ReadFn read,
                                      const std::string& what) {
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(count));
  if (H5Tis_variable_str(file_type) > 0) {
    H5Id mem = checked(H5Tcopy(H5T_C_S1), H5Tclose, what, "copy the string type");
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(file_type));
    std::vector<char*> ptrs(static_cast<size_t>(count), nullptr);
    check(read(mem.get(), ptrs.data()), what, "read strings");
    for (char* p : ptrs) out.emplace_back(p ? p : "");
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space, H5P_DEFAULT, ptrs.data());
#else
    H5Dvlen_reclaim(mem.get(), space, H5P_DEFAULT, ptrs.data());
#endif
  } else {
    const size_t width = H5Tget_size(file_type);
    H5Id mem = checked(H5Tcopy(H5T_C_S1), H5Tclose, what, "copy the string type");
    H5Tset_size(mem.get(), width);
    H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
    std::vector<char> buf(width * static_cast<size_t>(count), '\0');
    check(read(mem.get(), buf.data()), what, "read strings");
    for (hssize_t i = 0; i < count; ++i) {
      const char* p = buf.data() + static_cast<size_t>(i) * width;
      size_t len = strnlen(p, width);
      while (len > 0 && p[len - 1] == ' ') --len;  // H5T_STR_SPACEPAD writers
      out.emplace_back(p, len);
    }
  }
  return out;
}

struct Dataset {
  H5Id id;
  H5T_class_t type_class = H5T_NO_CLASS;
  std::vector<hsize_t> dims;
};

Dataset open_dataset(hid_t file, const std::string& name, const std::string& what) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0)
    EVL_THROW(Error, what, ": missing dataset '", name,
              "' (a score file needs 'scores', 'labels' and 'video_ids'; see evaluate/SCORES.md)");
  const std::string ds_what = str(what, ": dataset '", name, "'");
  Dataset d;
  d.id = checked(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose, ds_what, "open it");
  H5Id type = checked(H5Dget_type(d.id.get()), H5Tclose, ds_what, "read its type");
  d.type_class = H5Tget_class(type.get());
  H5Id space = checked(H5Dget_space(d.id.get()), H5Sclose, ds_what, "read its shape");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) EVL_THROW(Error, ds_what, ": cannot read its shape (", h5::error_text(), ")");
  d.dims.resize(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), d.dims.data(), nullptr);
  return d;
}

std::string shape_text(const std::vector<hsize_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += str(i ? ", " : "", dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Optional string attribute; nullopt-like: returns false when absent.
bool read_string_attr(hid_t file, const char* name, const std::string& what, std::string& out) {
  if (H5Aexists(file, name) <= 0) return false;
  const std::string a_what = str(what, ": attribute '", name, "'");
  H5Id attr = checked(H5Aopen(file, name, H5P_DEFAULT), H5Aclose, a_what, "open it");
  H5Id type = checked(H5Aget_type(attr.get()), H5Tclose, a_what, "read its type");
  if (H5Tget_class(type.get()) != H5T_STRING) EVL_THROW(Error, a_what, ": expected a string");
  H5Id space = checked(H5Aget_space(attr.get()), H5Sclose, a_what, "read its shape");
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n != 1) EVL_THROW(Error, a_what, ": expected one string, found ", n);
  const hid_t aid = attr.get();
  out = read_strings(
      type.get(), space.get(), 1, [aid](hid_t mem, void* buf) { return H5Aread(aid, mem, buf); },
      a_what)[0];
  return true;
}

bool read_int_attr(hid_t file, const char* name, const std::string& what, int64_t& out) {
  if (H5Aexists(file, name) <= 0) return false;
  const std::string a_what = str(what, ": attribute '", name, "'");
  H5Id attr = checked(H5Aopen(file, name, H5P_DEFAULT), H5Aclose, a_what, "open it");
  H5Id type = checked(H5Aget_type(attr.get()), H5Tclose, a_what, "read its type");
  if (H5Tget_class(type.get()) != H5T_INTEGER) EVL_THROW(Error, a_what, ": expected an integer");
  H5Id space = checked(H5Aget_space(attr.get()), H5Sclose, a_what, "read its shape");
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    EVL_THROW(Error, a_what, ": expected one integer");
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &out), a_what, "read it");
  return true;
}

}  // namespace

const char* to_string(ScoreKind kind) {
  return kind == ScoreKind::kLogits ? "logits" : "probabilities";
}

ScoreKind parse_score_kind(const std::string& text) {
  if (text == "probabilities" || text == "probs") return ScoreKind::kProbabilities;
  if (text == "logits") return ScoreKind::kLogits;
  EVL_THROW(Error, "score kind '", text, "': expected 'probabilities' or 'logits'");
}

int64_t ScoreFile::num_classes() const {
  const int64_t n = num_videos();
  return n > 0 ? static_cast<int64_t>(scores.size()) / n : 0;
}

void validate_scores(const ScoreFile& f, const std::string& what) {
  const int64_t n = f.num_videos();
  EVL_CHECK(n >= 1, what, ": dataset 'video_ids' is empty (no videos)");
  EVL_CHECK(!f.scores.empty() && f.scores.size() % static_cast<size_t>(n) == 0, what,
            ": dataset 'scores' holds ", f.scores.size(), " values, not N*K for N=", n);
  const int64_t k = f.num_classes();
  EVL_CHECK(static_cast<int64_t>(f.labels.size()) == n, what, ": dataset 'labels' has ",
            f.labels.size(), " entries but 'video_ids' has ", n);
  const bool probs = f.kind == ScoreKind::kProbabilities;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = f.scores.data() + i * k;
    for (int64_t j = 0; j < k; ++j) {
      const float v = row[j];
      if (!std::isfinite(v))
        EVL_THROW(Error, what, ": dataset 'scores' row ", i, " (video '", f.video_ids[i],
                  "') class ", j, " is ", v, "; scores must be finite");
      if (probs && (v < -1e-6f || v > 1.0f + 1e-4f))
        EVL_THROW(Error, what, ": dataset 'scores' row ", i, " (video '", f.video_ids[i],
                  "') class ", j, " is ", v,
                  " but kind is 'probabilities' (values in [0, 1]); set kind='logits' if these "
                  "are logits");
    }
    EVL_CHECK(f.labels[i] >= -1 && f.labels[i] < k, what, ": dataset 'labels' row ", i, " (video '",
              f.video_ids[i], "') is ", f.labels[i], ", outside [-1, ", k, ")");
  }
  std::unordered_map<std::string, int64_t> seen;
  seen.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    EVL_CHECK(!f.video_ids[i].empty(), what, ": dataset 'video_ids' row ", i, " is empty");
    auto [it, fresh] = seen.emplace(f.video_ids[i], i);
    EVL_CHECK(fresh, what, ": dataset 'video_ids' has duplicate id '", f.video_ids[i], "' (rows ",
              it->second, " and ", i, ")");
  }
  EVL_CHECK(f.num_views >= 1, what, ": attribute 'num_views' is ", f.num_views, ", must be >= 1");
}

void write_scores(const std::string& path, const ScoreFile& file) {
  const std::string what = str("score file '", path, "'");
  validate_scores(file, what);
  AtomicFile out(path);
  {
    const auto hdf5 = h5::lock();
    H5Id f = checked(H5Fcreate(out.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                     H5Fclose, what, str("create '", out.temp_path(), "'"));
    const auto n = static_cast<hsize_t>(file.num_videos());
    const auto k = static_cast<hsize_t>(file.num_classes());
    h5::write_dataset(f.get(), "scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {n, k},
                      file.scores.data(), what);
    h5::write_dataset(f.get(), "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {n}, file.labels.data(),
                      what);
    std::vector<const char*> ids;
    ids.reserve(n);
    for (const auto& s : file.video_ids) ids.push_back(s.c_str());
    H5Id str_type = h5::utf8_string_type();
    h5::write_dataset(f.get(), "video_ids", str_type.get(), str_type.get(), {n}, ids.data(), what);
    h5::write_string_attr(f.get(), "kind", to_string(file.kind), what);
    h5::write_int_attr(f.get(), "num_views", file.num_views, what);
    h5::write_string_attr(f.get(), "model", file.model, what);
    h5::write_string_attr(f.get(), "evl_version",
                          file.evl_version.empty() ? EVL_VERSION : file.evl_version, what);
    h5::write_int_attr(f.get(), "format_version", kScoresFormatVersion, what);
    check(H5Fflush(f.get(), H5F_SCOPE_GLOBAL), what, "flush it");
    check(f.close(), what, "close it");
  }
  out.commit();
}

namespace {

// The reading itself, under the HDF5 lock, in the process that calls it.
ScoreFile read_scores_here(const std::string& path, const std::string& what) {
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    EVL_THROW(Error, what, ": not an HDF5 file (score files are HDF5; see evaluate/SCORES.md)");
  }
  H5Id f = checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, what, "open it");
  ScoreFile out;

  Dataset scores = open_dataset(f.get(), "scores", what);
  EVL_CHECK(scores.type_class == H5T_FLOAT && scores.dims.size() == 2, what,
            ": dataset 'scores' must be a 2-D float array (N, K), found ",
            scores.type_class == H5T_FLOAT ? "float " : "non-float ", shape_text(scores.dims));
  const hsize_t n = scores.dims[0], k = scores.dims[1];
  EVL_CHECK(n >= 1 && k >= 1, what, ": dataset 'scores' has shape ", shape_text(scores.dims),
            "; need at least one video and one class");
  // Sizes from the file bound an allocation: a damaged shape must not be one.
  EVL_CHECK(n <= (hsize_t(1) << 31) && k <= (hsize_t(1) << 24) && n * k <= (hsize_t(1) << 32), what,
            ": dataset 'scores' has an absurd shape ", shape_text(scores.dims));
  out.scores.resize(n * k);
  check(
      H5Dread(scores.id.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.scores.data()),
      what, "read dataset 'scores'");

  Dataset labels = open_dataset(f.get(), "labels", what);
  EVL_CHECK(labels.type_class == H5T_INTEGER && labels.dims.size() == 1 && labels.dims[0] == n,
            what, ": dataset 'labels' must be a 1-D integer array of length N=", n, ", found ",
            labels.type_class == H5T_INTEGER ? "integer " : "non-integer ",
            shape_text(labels.dims));
  out.labels.resize(n);
  check(
      H5Dread(labels.id.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.labels.data()),
      what, "read dataset 'labels'");

  Dataset ids = open_dataset(f.get(), "video_ids", what);
  EVL_CHECK(ids.type_class == H5T_STRING && ids.dims.size() == 1 && ids.dims[0] == n, what,
            ": dataset 'video_ids' must be a 1-D string array of length N=", n, ", found ",
            ids.type_class == H5T_STRING ? "string " : "non-string ", shape_text(ids.dims));
  {
    H5Id type = checked(H5Dget_type(ids.id.get()), H5Tclose, what, "read type of 'video_ids'");
    H5Id space = checked(H5Dget_space(ids.id.get()), H5Sclose, what, "read 'video_ids'");
    const hid_t did = ids.id.get();
    out.video_ids = read_strings(
        type.get(), space.get(), static_cast<hssize_t>(n),
        [did](hid_t mem, void* buf) {
          return H5Dread(did, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        },
        str(what, ": dataset 'video_ids'"));
  }

  std::string kind;
  EVL_CHECK(read_string_attr(f.get(), "kind", what, kind), what,
            ": missing attribute 'kind' (set it to 'probabilities' or 'logits', e.g. "
            "f.attrs['kind'] = 'logits' in h5py)");
  try {
    out.kind = parse_score_kind(kind);
  } catch (const Error& e) {
    EVL_THROW(Error, what, ": attribute 'kind': ", e.what());
  }
  int64_t version = kScoresFormatVersion;
  if (read_int_attr(f.get(), "format_version", what, version))
    EVL_CHECK(version >= 1 && version <= kScoresFormatVersion, what, ": format_version ", version,
              " is not supported (this evl reads up to ", kScoresFormatVersion,
              "); upgrade evl or rewrite the file");
  if (!read_int_attr(f.get(), "num_views", what, out.num_views)) out.num_views = 1;
  if (!read_string_attr(f.get(), "model", what, out.model) || out.model.empty())
    out.model = fs::path(path).stem().string();
  read_string_attr(f.get(), "evl_version", what, out.evl_version);
  return out;
}

// A byte stream for handing a ScoreFile (or an error) from the child back.
struct Wire {
  std::string bytes;
  size_t at = 0;
  template <typename T>
  void put(const T& v) {
    bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put_string(const std::string& v) {
    put<uint64_t>(v.size());
    bytes += v;
  }
  template <typename T>
  T get() {
    EVL_CHECK(at + sizeof(T) <= bytes.size(), "score reader: short reply");
    T v;
    std::memcpy(&v, bytes.data() + at, sizeof v);
    at += sizeof v;
    return v;
  }
  std::string get_string() {
    const auto n = get<uint64_t>();
    EVL_CHECK(n <= bytes.size() - at, "score reader: short reply");
    at += n;
    return bytes.substr(at - n, n);
  }
  // A count read from the reply, checked against what is left of it before
  // anything is allocated for it (each item takes at least `item_bytes`).
  size_t count(size_t item_bytes) {
    const auto n = get<uint64_t>();
    EVL_CHECK(n <= (bytes.size() - at) / item_bytes, "score reader: short reply");
    return static_cast<size_t>(n);
  }
};

std::string encode(const ScoreFile& f) {
  Wire w;
  w.put<uint8_t>(1);
  w.put<uint64_t>(f.scores.size());
  w.bytes.append(reinterpret_cast<const char*>(f.scores.data()), f.scores.size() * sizeof(float));
  w.put<uint64_t>(f.labels.size());
  w.bytes.append(reinterpret_cast<const char*>(f.labels.data()), f.labels.size() * sizeof(int64_t));
  w.put<uint64_t>(f.video_ids.size());
  for (const auto& id : f.video_ids) w.put_string(id);
  w.put<uint8_t>(f.kind == ScoreKind::kLogits ? 1 : 0);
  w.put<int64_t>(f.num_views);
  w.put_string(f.model);
  w.put_string(f.evl_version);
  return w.bytes;
}

ScoreFile decode(Wire& w) {
  ScoreFile f;
  f.scores.resize(w.count(sizeof(float)));
  for (auto& v : f.scores) v = w.get<float>();
  f.labels.resize(w.count(sizeof(int64_t)));
  for (auto& v : f.labels) v = w.get<int64_t>();
  f.video_ids.resize(w.count(sizeof(uint64_t)));
  for (auto& id : f.video_ids) id = w.get_string();
  f.kind = w.get<uint8_t>() ? ScoreKind::kLogits : ScoreKind::kProbabilities;
  f.num_views = w.get<int64_t>();
  f.model = w.get_string();
  f.evl_version = w.get_string();
  return f;
}

void write_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace

// HDF5 does not survive every damaged file: a flipped byte in a global-heap
// reference of a variable-length string (video_ids, string attributes) makes
// it read out of bounds (SIGSEGV) or loop forever, inside the library. So the
// file is read in a forked child (under the HDF5 lock, so no other thread
// holds HDF5 or is inside it when we fork), which sends the result back
// through a pipe; a child killed by a signal or by its time limit is reported
// as a corrupt file, naming it, instead of taking the tool down.
ScoreFile read_scores(const std::string& path) {
  const std::string what = str("score file '", path, "'");
  std::error_code ec;
  EVL_CHECK(fs::exists(path, ec), what, ": no such file");
  EVL_CHECK(fs::is_regular_file(path, ec), what, ": not a regular file");
  const unsigned limit = read_seconds(path);
  const auto hdf5 = h5::lock();
  int fds[2];
  EVL_CHECK(::pipe(fds) == 0, what, ": cannot create a pipe: ", std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    EVL_THROW(Error, what, ": cannot fork the reader: ", std::strerror(errno));
  }
  if (pid == 0) {  // the child: read, reply, _exit (no destructors, no atexit)
    ::close(fds[0]);
#if defined(__SANITIZE_ADDRESS__)
    // Under AddressSanitizer (make sanitize), libhdf5's own faults on a damaged
    // file are what this child exists to contain: its reports go to stderr, not
    // to the report files that fail the sanitizer stage. The parent still sees
    // the child die and names the file as corrupt.
    __sanitizer_set_report_path("stderr");
#endif
    ::alarm(limit);
    std::string reply;
    try {
      reply = encode(read_scores_here(path, what));
    } catch (const std::exception& e) {
      Wire w;
      w.put<uint8_t>(0);
      w.put_string(dynamic_cast<const std::bad_alloc*>(&e)
                       ? what + ": out of memory while reading it (a damaged size?)"
                       : std::string(e.what()));
      reply = w.bytes;
    }
    write_all(fds[1], reply);
    ::_exit(0);
  }
  ::close(fds[1]);
  Wire w;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    w.bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status))
    EVL_THROW(Error, what, ": corrupt HDF5 file: the HDF5 library ",
              WTERMSIG(status) == SIGALRM
                  ? str("did not finish reading it in ", limit, " s")
                  : str("crashed reading it (", strsignal(WTERMSIG(status)), ")"),
              "; rewrite the file");
  EVL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && !w.bytes.empty(), what,
            ": the reader process failed (exit status ", status, ")");
  if (w.get<uint8_t>() == 0) throw Error(w.get_string());
  ScoreFile out = decode(w);
  validate_scores(out, what);
  return out;
}

std::vector<float> to_probabilities(const ScoreFile& file) {
  if (file.kind == ScoreKind::kProbabilities) return file.scores;
  const int64_t n = file.num_videos(), k = file.num_classes();
  std::vector<float> out(file.scores.size());
  for (int64_t i = 0; i < n; ++i) {
    const float* row = file.scores.data() + i * k;
    float* dst = out.data() + i * k;
    const float mx = *std::max_element(row, row + k);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
    for (int64_t j = 0; j < k; ++j)
      dst[j] = static_cast<float>(std::exp(static_cast<double>(row[j]) - mx) / sum);
  }
  return out;
}

}  // namespace evl
