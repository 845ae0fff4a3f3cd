// bench_cache: write and read throughput of the feature cache for ViT-B/16-sized
// records (8 frames, 4 layers, qk fp16: ~27.7 MiB per clip-view), sequential and
// shuffled, 1 and 2 reader threads, checksums verified, side by side with the
// ceiling of the same bytes moved by memcpy and by write()/pread() of a plain
// file in the same order: warm page cache, and once cold (both files evicted).
// Shuffled reads also for the smaller records of qk int8, compact fp16 and
// compact int8. Also prints bytes per clip-view for every storage mode and dtype.
//   bench_cache [--quick] [--records N] [--dir PATH]
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache/checksum.h"
#include "cache/quantize.h"

using namespace evl::cache;
namespace fs = std::filesystem;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Manifest vit_b16(StorageMode storage, DType dtype, bool quick) {
  Manifest m;
  m.backbone = {"ViT-B-16.pt", "bench", "openai-torchscript", 768, 12, 12, 16, 14, 224};
  m.layers = {8, 9, 10, 11};
  m.frames = 8;
  if (quick) {  // tiny records so that --quick runs in a second
    m.backbone.width = 64;
    m.backbone.heads = 4;
    m.backbone.input_size = 64;  // grid x patch
    m.backbone.grid = 4;
    m.frames = 2;
  }
  m.storage = storage;
  m.dtype = dtype;
  m.mean = {0.48145466, 0.4578275, 0.40821073};  // CLIP's (a manifest must name them)
  m.std = {0.26862954, 0.26130258, 0.27577711};
  return m;
}

Record make_record(const Manifest& m, int64_t clip) {
  Record r;
  r.key = make_key(clip, 0);
  r.video_id = "bench/" + std::to_string(clip);
  r.clip_index = clip;
  r.view = "t0 s0";
  uint64_t s = static_cast<uint64_t>(clip) * 0x9e3779b97f4a7c15ULL + 1;
  for (const auto& [name, shape] : expected_arrays(m)) {
    Array a{m.dtype, shape, {}};
    // int8/fp8: the quantized payload (codes, padding, fp16 scales, exponents; quantize.h).
    a.bytes.resize(is_quantized(a.dtype) ? quant_layout(a.dtype, shape).bytes
                                         : static_cast<size_t>(a.numel()) * dtype_size(a.dtype));
    for (size_t i = 0; i + 8 <= a.bytes.size(); i += 8) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      const uint64_t v = (s >> 16) & 0x3bff3bff3bff3bffULL;  // finite fp16/bf16 bit patterns
      std::memcpy(a.bytes.data() + i, &v, 8);
    }
    r.arrays.emplace_back(name, std::move(a));
  }
  return r;
}

struct Rate {
  double mb_s = 0, rec_s = 0;
};

Rate rate(double bytes, double records, double seconds) {
  return {bytes / seconds / 1e6, records / seconds};
}

// Runs fn(i) for every i in `order`, split over `threads` threads; returns seconds.
double timed(const std::vector<int64_t>& order, int threads,
             const std::function<void(int64_t, std::vector<uint8_t>&)>& fn, size_t buf_bytes) {
  const double t0 = now_s();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::vector<uint8_t> buf(buf_bytes);
      for (size_t i = t; i < order.size(); i += threads) fn(order[i], buf);
    });
  for (auto& th : pool) th.join();
  return now_s() - t0;
}

using Kernel = std::function<void(int64_t, std::vector<uint8_t>&)>;
using Kernels = std::map<std::string, Kernel>;

Kernel pread_kernel(int fd, size_t rec_bytes) {
  return [fd, rec_bytes](int64_t i, std::vector<uint8_t>& buf) {
    size_t done = 0;
    while (done < rec_bytes)
      done += ::pread(fd, buf.data() + done, rec_bytes - done, off_t(i * rec_bytes + done));
  };
}

// The kernels every record size is measured with: pread() of the same bytes
// from a plain file (the ceiling), get_into (checksum verified while copying),
// and what get_into did before it did so: with_record (a checksum pass over the
// whole record) and then a copy of each array, a second pass.
Kernels read_kernels(const CacheReader& reader, int raw_fd, size_t rec_bytes) {
  Kernels k;
  k["pread"] = pread_kernel(raw_fd, rec_bytes);
  k["get_into"] = [&reader](int64_t i, std::vector<uint8_t>&) {
    thread_local Record rec;  // one per loader thread, reused
    reader.get_into(i, rec);
  };
  k["get_into_two_pass"] = [&reader](int64_t i, std::vector<uint8_t>&) {
    thread_local std::vector<std::vector<uint8_t>> arrays;
    reader.with_record(i, [&](const RecordView& r) {
      arrays.resize(r.arrays.size());
      for (size_t a = 0; a < r.arrays.size(); ++a) {
        const auto* p = static_cast<const uint8_t*>(r.arrays[a].second.data);
        arrays[a].assign(p, p + r.arrays[a].second.nbytes());
      }
    });
  };
  return k;
}

// Best of `reps` runs of each kernel over `order`, kernels interleaved.
std::map<std::string, Rate> measure(const Kernels& kernels, const std::vector<int64_t>& order,
                                    int threads, double bytes, double records, size_t buf_bytes,
                                    int reps) {
  std::map<std::string, double> best;
  for (int rep = 0; rep < reps; ++rep)
    for (const auto& [name, fn] : kernels) {
      const double t = timed(order, threads, fn, buf_bytes);
      best[name] = rep == 0 ? t : std::min(best[name], t);
    }
  std::map<std::string, Rate> r;
  for (const auto& [name, t] : best) r[name] = rate(bytes, records, t);
  return r;
}

// A cache of `n` records of `m` (4 distinct ones, repeated under new keys) in
// `dir`, and the same bytes in a plain file beside it, each timed as written.
struct Fixture {
  fs::path dir;
  std::string raw_path;
  size_t rec_bytes = 0;
  Rate w_cache, w_raw;
};

Fixture make_fixture(const fs::path& dir, const Manifest& m, int64_t n) {
  Fixture f;
  f.dir = dir;
  fs::create_directories(dir);
  std::vector<Record> records;
  for (int64_t i = 0; i < std::min<int64_t>(n, 4); ++i) records.push_back(make_record(m, i));
  f.rec_bytes = encode_record(records[0]).size();
  const double total = double(n) * double(f.rec_bytes);
  double t0 = now_s();
  {
    ShardWriter w((dir / "features-00000-of-00001").string(), 4);
    for (int64_t i = 0; i < n; ++i) {
      Record& r = records[i % records.size()];
      r.key = make_key(i, 0);
      r.clip_index = i;
      w.put(r);
    }
  }
  f.w_cache = rate(total, double(n), now_s() - t0);
  Manifest mm = m;
  mm.shards = {{"features-00000-of-00001", n}};
  mm.num_clips = n;
  mm.save(dir.string());

  std::vector<uint8_t> value = encode_record(records[0]);
  f.raw_path = (dir / "raw.bin").string();
  t0 = now_s();
  const int fd = ::open(f.raw_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (int64_t i = 0; i < n; ++i) {
    value[0] ^= 1;
    size_t done = 0;
    while (done < value.size()) done += ::write(fd, value.data() + done, value.size() - done);
    if (i % 4 == 3) ::fdatasync(fd);
  }
  ::fdatasync(fd);
  ::close(fd);
  f.w_raw = rate(total, double(n), now_s() - t0);
  return f;
}

// Drops the fixture's files from the page cache (their pages are clean after
// the fdatasyncs, and no map of them may be open); returns the fraction of
// their pages no longer resident (mincore).
double evict(const Fixture& f) {
  size_t pages = 0, gone = 0;
  for (const std::string& path :
       {(f.dir / "features-00000-of-00001" / "data.mdb").string(), f.raw_path}) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    const size_t size = fs::file_size(path);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    std::vector<unsigned char> resident((size + 4095) / 4096);
    if (p != MAP_FAILED && ::mincore(p, size, resident.data()) == 0)
      for (unsigned char r : resident) gone += !(r & 1);
    pages += resident.size();
    if (p != MAP_FAILED) ::munmap(p, size);
    ::close(fd);
  }
  return pages ? double(gone) / double(pages) : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int64_t n = 40;
  std::string base = fs::temp_directory_path().string();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--records" && i + 1 < argc)
      n = std::stoll(argv[++i]);
    else if (a == "--dir" && i + 1 < argc)
      base = argv[++i];
    else {
      std::cerr << "usage: bench_cache [--quick] [--records N] [--dir PATH]\n";
      return 2;
    }
  }
  if (quick) n = 16;
  nlohmann::json out;

  // Bytes per clip-view, ViT-B/16, 8 frames, 4 layers.
  std::cout << "bytes per clip-view (ViT-B/16, 224, 8 frames, 4 layers):\n";
  for (auto storage : {StorageMode::kQK, StorageMode::kCompact})
    for (auto dtype : {DType::kF16, DType::kBF16, DType::kF32, DType::kI8, DType::kFP8}) {
      const uint64_t b = record_bytes(vit_b16(storage, dtype, false));
      std::cout << "  " << to_string(storage) << " " << to_string(dtype) << ": " << b << " B ("
                << b / 1048576.0 << " MiB)\n";
      out["bytes_per_clip_view"][to_string(storage) + "_" + to_string(dtype)] = b;
    }

  const fs::path dir = fs::path(base) / ("evl_bench_cache_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);

  // --- write: ShardWriter (encode + checksum + LMDB + fsync per batch) vs write()+fsync.
  const Manifest m = vit_b16(StorageMode::kQK, DType::kF16, quick);
  const Fixture f = make_fixture(dir / "qk_fp16", m, n);
  const size_t rec_bytes = f.rec_bytes;
  const double total = double(n) * double(rec_bytes);
  std::cout << "records: " << n << " x " << rec_bytes << " B (" << rec_bytes / 1048576.0
            << " MiB), " << n * rec_bytes / 1e9 << " GB in " << f.dir
            << "; checksums streamed with the " << xxh3_stream_build() << " XXH3\n";
  std::cout << "write  cache " << f.w_cache.mb_s << " MB/s (" << f.w_cache.rec_s
            << " rec/s)  raw write+fdatasync " << f.w_raw.mb_s << " MB/s  ratio "
            << f.w_cache.mb_s / f.w_raw.mb_s << "\n";
  out["write"] = {{"cache_mb_s", f.w_cache.mb_s},
                  {"cache_rec_s", f.w_cache.rec_s},
                  {"raw_mb_s", f.w_raw.mb_s},
                  {"ratio", f.w_cache.mb_s / f.w_raw.mb_s}};

  // --- read, warm page cache.
  std::vector<int64_t> seq(n);
  for (int64_t i = 0; i < n; ++i) seq[i] = i;
  std::vector<int64_t> shuf;
  {
    const CacheReader reader(f.dir.string());
    CacheReader::Options nover;
    nover.verify_checksums = false;
    const int raw_fd = ::open(f.raw_path.c_str(), O_RDONLY);
    shuf = reader.epoch_order(7, 0);
    std::vector<uint8_t> src(rec_bytes, 1);
    auto k_memcpy = [&](int64_t, std::vector<uint8_t>& buf) {
      std::memcpy(buf.data(), src.data(), rec_bytes);
    };
    Kernels kernels = read_kernels(reader, raw_fd, rec_bytes);
    kernels["memcpy"] = k_memcpy;
    kernels["get"] = [&](int64_t i, std::vector<uint8_t>&) { (void)reader.get(i); };
    kernels["with_record"] = [&](int64_t i, std::vector<uint8_t>& buf) {  // zero-copy + checksum
      reader.with_record(
          i, [&](const RecordView& r) { buf[0] = *(const uint8_t*)r.arrays[0].second.data; });
    };
    // Warm-up: every byte of both files into the page cache.
    timed(seq, 1, kernels["pread"], rec_bytes);
    timed(seq, 1, kernels["get"], 0);

    for (int threads : {1, 2})
      for (const auto* order_name : {"sequential", "shuffled"}) {
        const auto& order = std::string(order_name) == "sequential" ? seq : shuf;
        const std::string row = std::to_string(threads) + "t_" + order_name;
        const auto r = measure(kernels, order, threads, total, double(n), rec_bytes, quick ? 1 : 2);
        for (const auto& [name, rate] : r) out["read"][row][name + "_mb_s"] = rate.mb_s;
        const double ratio = r.at("get_into").mb_s / r.at("pread").mb_s;
        out["read"][row]["get_into_over_pread"] = ratio;
        out["read"][row]["get_into_two_pass_over_pread"] =
            r.at("get_into_two_pass").mb_s / r.at("pread").mb_s;
        out["read"][row]["get_into_rec_s"] = r.at("get_into").rec_s;
        std::cout << "read " << threads << "t " << order_name << ": get_into "
                  << r.at("get_into").mb_s << " MB/s (" << r.at("get_into").rec_s
                  << " rec/s), two passes (hash, then copy) " << r.at("get_into_two_pass").mb_s
                  << " MB/s, get (fresh buffers) " << r.at("get").mb_s
                  << " MB/s, with_record (zero-copy) " << r.at("with_record").mb_s
                  << " MB/s | ceilings: pread " << r.at("pread").mb_s << " MB/s, memcpy "
                  << r.at("memcpy").mb_s << " MB/s | get_into/pread " << ratio << "\n";
      }
    {
      const CacheReader fast(f.dir.string(), nover);
      Record rec;
      auto k = [&](int64_t i, std::vector<uint8_t>&) { fast.get_into(i, rec); };
      timed(shuf, 1, k, 0);  // warm rec's buffers
      const Rate r = rate(total, double(n), timed(shuf, 1, k, 0));
      std::cout << "read 1t shuffled, checksums off: get_into " << r.mb_s << " MB/s\n";
      out["read"]["1t_shuffled"]["get_into_nochecksum_mb_s"] = r.mb_s;
    }
    ::close(raw_fd);
  }

  // --- cold: the same shuffled reads with both files evicted from the page
  // cache first (posix_fadvise DONTNEED on clean, unmapped pages: no root, and
  // nothing else on the machine loses its cache).
  {
    const double evicted = evict(f);
    const int raw_fd = ::open(f.raw_path.c_str(), O_RDONLY);
    Rate pread_cold, get_cold;
    pread_cold = rate(total, double(n), timed(shuf, 1, pread_kernel(raw_fd, rec_bytes), rec_bytes));
    evict(f);
    {
      const CacheReader reader(f.dir.string());  // opening reads each value's first page
      Record rec;
      const double t = timed(
          shuf, 1, [&](int64_t i, std::vector<uint8_t>&) { reader.get_into(i, rec); }, 0);
      get_cold = rate(total, double(n), t);
    }
    ::close(raw_fd);
    std::cout << "read 1t shuffled, cold page cache (" << 100 * evicted
              << "% of the bytes evicted): get_into " << get_cold.mb_s << " MB/s, pread "
              << pread_cold.mb_s << " MB/s | get_into/pread " << get_cold.mb_s / pread_cold.mb_s
              << "\n";
    out["read_cold"]["1t_shuffled"] = {{"get_into_mb_s", get_cold.mb_s},
                                       {"pread_mb_s", pread_cold.mb_s},
                                       {"get_into_over_pread", get_cold.mb_s / pread_cold.mb_s},
                                       {"evicted_fraction", evicted}};
  }
  fs::remove_all(f.dir);

  // --- shuffled reads of the other record sizes (int8: half the bytes of fp16).
  for (const auto& [storage, dtype] :
       {std::pair{StorageMode::kQK, DType::kI8}, std::pair{StorageMode::kCompact, DType::kF16},
        std::pair{StorageMode::kCompact, DType::kI8}}) {
    const Manifest mk = vit_b16(storage, dtype, quick);
    const std::string name = to_string(storage) + "_" + to_string(dtype);
    const Fixture fk = make_fixture(dir / name, mk, n);
    const double bytes = double(n) * double(fk.rec_bytes);
    const CacheReader reader(fk.dir.string());
    const int raw_fd = ::open(fk.raw_path.c_str(), O_RDONLY);
    const Kernels kernels = read_kernels(reader, raw_fd, fk.rec_bytes);
    timed(seq, 1, kernels.at("pread"), fk.rec_bytes);  // warm-up
    timed(seq, 1, kernels.at("get_into"), 0);
    out["read_records"][name]["record_bytes"] = fk.rec_bytes;
    for (int threads : {1, 2}) {
      const auto r = measure(kernels, shuf, threads, bytes, double(n), fk.rec_bytes, quick ? 1 : 2);
      const std::string row = std::to_string(threads) + "t_shuffled";
      auto& j = out["read_records"][name][row];
      for (const auto& [kn, rate] : r) j[kn + "_mb_s"] = rate.mb_s;
      j["get_into_over_pread"] = r.at("get_into").mb_s / r.at("pread").mb_s;
      j["get_into_two_pass_over_pread"] = r.at("get_into_two_pass").mb_s / r.at("pread").mb_s;
      std::cout << "read " << threads << "t shuffled, " << name << " (" << fk.rec_bytes / 1048576.0
                << " MiB): get_into " << r.at("get_into").mb_s << " MB/s, two passes "
                << r.at("get_into_two_pass").mb_s << " MB/s | pread " << r.at("pread").mb_s
                << " MB/s | get_into/pread " << r.at("get_into").mb_s / r.at("pread").mb_s << "\n";
    }
    ::close(raw_fd);
    fs::remove_all(fk.dir);
  }
  fs::remove_all(dir);
  out["page_cache"] = "warm (read), evicted with posix_fadvise (read_cold)";
  out["xxh3_stream"] = xxh3_stream_build();
  out["records"] = n;
  out["record_bytes"] = rec_bytes;
  out["quick"] = quick;
  std::cout << "BENCH_JSON " << out.dump() << std::endl;
  return 0;
}
