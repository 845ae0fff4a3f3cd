// bench_cache: write and read throughput of the feature cache for ViT-B/16-sized
// records (8 frames, 4 layers, qk fp16: ~27.7 MiB per clip-view), sequential and
// shuffled, 1 and 2 reader threads, side by side with the ceiling of the same
// bytes moved by memcpy and by write()/pread() of a plain file (warm page cache).
// Also prints bytes per clip-view for every storage mode and dtype.
//   bench_cache [--quick] [--records N] [--dir PATH]
#include <fcntl.h>
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
    m.backbone.grid = 4;
    m.frames = 2;
  }
  m.storage = storage;
  m.dtype = dtype;
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

  const Manifest m = vit_b16(StorageMode::kQK, DType::kF16, quick);
  const fs::path dir = fs::path(base) / ("evl_bench_cache_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::vector<uint8_t>> encoded;  // what the cache stores, for the raw ceilings
  const Record proto = make_record(m, 0);
  const size_t rec_bytes = encode_record(proto).size();
  std::cout << "records: " << n << " x " << rec_bytes << " B (" << rec_bytes / 1048576.0
            << " MiB), " << n * rec_bytes / 1e9 << " GB in " << dir << "\n";

  // --- write: ShardWriter (encode + checksum + LMDB + fsync per batch) vs write()+fsync.
  std::vector<Record> records;
  for (int64_t i = 0; i < std::min<int64_t>(n, 4); ++i) records.push_back(make_record(m, i));
  const double total = double(n) * double(rec_bytes);
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
  const Rate w_cache = rate(total, double(n), now_s() - t0);
  Manifest mm = m;
  mm.shards = {{"features-00000-of-00001", n}};
  mm.num_clips = n;
  mm.save(dir.string());

  std::vector<uint8_t> value = encode_record(records[0]);
  const std::string raw_path = (dir / "raw.bin").string();
  t0 = now_s();
  {
    const int fd = ::open(raw_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int64_t i = 0; i < n; ++i) {
      value[0] ^= 1;
      size_t done = 0;
      while (done < value.size()) done += ::write(fd, value.data() + done, value.size() - done);
      if (i % 4 == 3) ::fdatasync(fd);
    }
    ::fdatasync(fd);
    ::close(fd);
  }
  const Rate w_raw = rate(total, double(n), now_s() - t0);
  std::cout << "write  cache " << w_cache.mb_s << " MB/s (" << w_cache.rec_s
            << " rec/s)  raw write+fdatasync " << w_raw.mb_s << " MB/s  ratio "
            << w_cache.mb_s / w_raw.mb_s << "\n";
  out["write"] = {{"cache_mb_s", w_cache.mb_s},
                  {"cache_rec_s", w_cache.rec_s},
                  {"raw_mb_s", w_raw.mb_s},
                  {"ratio", w_cache.mb_s / w_raw.mb_s}};

  // --- read, warm page cache.
  const CacheReader reader(dir.string());
  CacheReader::Options nover;
  nover.verify_checksums = false;
  const int raw_fd = ::open(raw_path.c_str(), O_RDONLY);
  std::vector<int64_t> seq(n);
  for (int64_t i = 0; i < n; ++i) seq[i] = i;
  const std::vector<int64_t> shuf = reader.epoch_order(7, 0);
  std::vector<uint8_t> src(rec_bytes, 1);
  auto k_memcpy = [&](int64_t, std::vector<uint8_t>& buf) {
    std::memcpy(buf.data(), src.data(), rec_bytes);
  };
  auto k_pread = [&](int64_t i, std::vector<uint8_t>& buf) {
    size_t done = 0;
    while (done < rec_bytes)
      done += ::pread(raw_fd, buf.data() + done, rec_bytes - done, off_t(i * rec_bytes + done));
  };
  auto k_get = [&](int64_t i, std::vector<uint8_t>&) { (void)reader.get(i); };
  auto k_get_into = [&](int64_t i, std::vector<uint8_t>&) {
    thread_local Record rec;  // one per loader thread, reused
    reader.get_into(i, rec);
  };
  auto k_view = [&](int64_t i, std::vector<uint8_t>& buf) {  // zero-copy + checksum
    reader.with_record(
        i, [&](const RecordView& r) { buf[0] = *(const uint8_t*)r.arrays[0].second.data; });
  };
  // Warm-up: every byte of both files into the page cache.
  timed(seq, 1, k_pread, rec_bytes);
  timed(seq, 1, k_get, 0);

  std::map<std::string, std::function<void(int64_t, std::vector<uint8_t>&)>> kernels = {
      {"memcpy", k_memcpy},
      {"pread", k_pread},
      {"get", k_get},
      {"get_into", k_get_into},
      {"with_record", k_view}};
  for (int threads : {1, 2})
    for (const auto* order_name : {"sequential", "shuffled"}) {
      const auto& order = std::string(order_name) == "sequential" ? seq : shuf;
      std::map<std::string, Rate> r;
      for (const auto& [name, fn] : kernels) {
        double best = 1e30;
        for (int rep = 0; rep < (quick ? 1 : 2); ++rep)
          best = std::min(best, timed(order, threads, fn, rec_bytes));
        r[name] = rate(total, double(n), best);
        out["read"][std::to_string(threads) + "t_" + order_name][name + "_mb_s"] = r[name].mb_s;
      }
      const double ratio = r["get_into"].mb_s / r["pread"].mb_s;
      out["read"][std::to_string(threads) + "t_" + order_name]["get_into_over_pread"] = ratio;
      out["read"][std::to_string(threads) + "t_" + order_name]["get_into_rec_s"] =
          r["get_into"].rec_s;
      std::cout << "read " << threads << "t " << order_name << ": get_into " << r["get_into"].mb_s
                << " MB/s (" << r["get_into"].rec_s << " rec/s), get (fresh buffers) "
                << r["get"].mb_s << " MB/s, with_record (zero-copy) " << r["with_record"].mb_s
                << " MB/s | ceilings: pread " << r["pread"].mb_s << " MB/s, memcpy "
                << r["memcpy"].mb_s << " MB/s | get_into/pread " << ratio << "\n";
    }
  {
    const CacheReader fast(dir.string(), nover);
    Record rec;
    auto k = [&](int64_t i, std::vector<uint8_t>&) { fast.get_into(i, rec); };
    timed(shuf, 1, k, 0);  // warm rec's buffers
    const Rate r = rate(total, double(n), timed(shuf, 1, k, 0));
    std::cout << "read 1t shuffled, checksums off: get_into " << r.mb_s << " MB/s\n";
    out["read"]["1t_shuffled"]["get_into_nochecksum_mb_s"] = r.mb_s;
  }
  ::close(raw_fd);
  fs::remove_all(dir);
  out["records"] = n;
  out["record_bytes"] = rec_bytes;
  out["quick"] = quick;
  std::cout << "BENCH_JSON " << out.dump() << std::endl;
  return 0;
}
