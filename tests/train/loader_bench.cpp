// bench_loader: the training loader (CachedDataset::load, what evl_train_head
// calls every step) from a cache on disk to the float32 batch, per storage mode
// (qk, compact) and dtype (fp16, int8, fp8; bf16 for qk), with ViT-B/16 shapes
// (C 768, 14x14 grid, 8 frames, 4 layers), 1 and 2 LibTorch threads (load() is
// called from one thread, as the trainer does), shuffled training batches,
// checksums verified. Also the on-disk bytes each sample reads. About a minute
// on 2 cores, most of it compact mode's Q/K GEMMs.
// Baseline, in the same run on the same bytes: pread() of the records' bytes
// from a plain file in the same order (the raw read ceiling). Page cache warm:
// every cache is read once before it is timed. Records hold random features
// (the loader's speed does not depend on the values); compact caches carry
// random Q/K weights, from which the loader recomputes Q and K.
//   bench_loader [--quick] [--records N] [--batch N] [--dir PATH]
// Two helper modes for the Python loader's benchmark (tests/python/dataset_bench.py),
// which compares evl.torch.CacheDataset with this loader on one cache:
//   bench_loader --write-cache DIR --storage qk|compact --dtype D [--records N] [--quick]
//       writes such a cache (ViT-B/16 shapes) and exits;
//   bench_loader --time-cache DIR [--batch N] [--threads T]
//       times CachedDataset::load over every record of DIR in the sampler's
//       shuffled order (page cache warmed first) and prints BENCH_JSON.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "tests/support/bench_support.h"
#include "train/cached_dataset.h"

namespace fs = std::filesystem;
using namespace evl;
using cache::DType;
using cache::StorageMode;

namespace {

using evl::bench::Clock;
using evl::bench::seconds_since;

cache::Manifest vit_b16(StorageMode storage, DType dtype, bool quick) {
  cache::Manifest m;
  m.tool_version = "bench";
  m.created = "2026-01-01T00:00:00Z";
  m.backbone = {"ViT-B-16.pt", "bench", "openai-torchscript", 768, 12, 12, 16, 14, 224};
  m.layers = {8, 9, 10, 11};
  m.frames = 8;
  if (quick) {  // tiny records so that --quick runs in a second
    m.backbone.width = 128;
    m.backbone.heads = 2;  // a width/heads that splits evenly (the Python loader checks)
    m.backbone.grid = 4;
    m.backbone.input_size = 64;  // grid x patch (the manifest check)
    m.frames = 2;
  }
  m.storage = storage;
  m.dtype = dtype;
  m.mean = {0.5, 0.5, 0.5};
  m.std = {0.25, 0.25, 0.25};
  return m;
}

std::vector<float> normal(std::mt19937& gen, size_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Writes `n` records (a few distinct ones, repeated under new keys) and, for
// compact, random Q/K weights. Returns the encoded size of one record.
size_t write_cache(const std::string& dir, const cache::Manifest& m, int64_t n) {
  std::mt19937 gen(1);
  std::vector<cache::Record> protos;
  for (int p = 0; p < 2; ++p) {
    cache::Record r;
    r.video_id = "bench.mp4";
    r.label = p;
    r.view = "train 0";
    for (const auto& [name, shape] : cache::expected_arrays(m)) {
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      const auto v = normal(gen, static_cast<size_t>(numel), 1.0f);
      r.arrays.emplace_back(name, cache::make_array(m.dtype, shape, v.data(), v.size()));
    }
    protos.push_back(std::move(r));
  }
  fs::create_directories(dir);
  {
    cache::ShardWriter w((fs::path(dir) / "features-00000-of-00001").string(), 4);
    for (int64_t i = 0; i < n; ++i) {
      cache::Record& r = protos[static_cast<size_t>(i) % protos.size()];
      r.key = cache::make_key(i, 0);
      r.clip_index = i;
      w.put(r);
    }
  }
  cache::Manifest mm = m;
  mm.shards = {{"features-00000-of-00001", n}};
  mm.num_clips = n;
  mm.save(dir);
  if (m.storage == StorageMode::kCompact) {
    const int64_t c = m.backbone.width;
    cache::Record w;
    w.key = "qk_weights";
    for (const int64_t b : m.layers) {
      const std::string s = "." + std::to_string(b);
      auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float mean) {
        auto v = normal(gen, static_cast<size_t>(shape.size() == 2 ? c * c : c), scale);
        for (auto& x : v) x += mean;
        w.arrays.emplace_back(name + s, cache::make_array(DType::kF32, shape, v.data(), v.size()));
      };
      add("ln_1.weight", {c}, 0.1f, 1.0f);
      add("ln_1.bias", {c}, 0.1f, 0.0f);
      add("q_proj.weight", {c, c}, 0.03f, 0.0f);
      add("q_proj.bias", {c}, 0.1f, 0.0f);
      add("k_proj.weight", {c, c}, 0.03f, 0.0f);
      add("k_proj.bias", {c}, 0.1f, 0.0f);
    }
    cache::save_qk_weights(dir, w);
  }
  return cache::encode_record(protos[0]).size();
}

// --time-cache: the loader over an existing cache, one pass in shuffled batches.
int time_cache(const std::string& dir, int64_t batch, int threads) {
  const CachedDataset data(dir, 0);
  torch::set_num_threads(threads);
  const int64_t steps = std::max<int64_t>(1, data.size() / batch);
  for (int64_t i = 0; i < data.size(); ++i)
    data.reader().with_record(i, [](const cache::RecordView&) {});
  (void)data.load(data.train_batch(0, 0, batch));  // warm: the map, LibTorch's pools
  const uint64_t before = data.bytes_read();
  const auto t0 = Clock::now();
  for (int64_t s = 0; s < steps; ++s) (void)data.load(data.train_batch(0, s, batch));
  const double secs = seconds_since(t0);
  const double samples = static_cast<double>(steps * batch);
  const auto bytes = static_cast<double>(data.bytes_read() - before);
  const nlohmann::json j = {{"bench", "loader_cache"},
                            {"cache", dir},
                            {"threads", threads},
                            {"batch", batch},
                            {"samples", samples},
                            {"seconds", secs},
                            {"samples_per_s", samples / secs},
                            {"array_bytes_per_sample", bytes / samples},
                            {"gb_s", bytes / secs / 1e9}};
  std::cout << "BENCH_JSON " << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  bool quick = false;
  int64_t records = 8, batch = 2;
  std::string base = fs::temp_directory_path().string();
  std::string write_dir, time_dir, storage_name = "qk", dtype_name = "fp16";
  int time_threads = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + s);
      return argv[++i];
    };
    if (s == "--quick")
      quick = true;
    else if (s == "--records")
      records = std::stoll(next());
    else if (s == "--batch")
      batch = std::stoll(next());
    else if (s == "--dir")
      base = next();
    else if (s == "--write-cache")
      write_dir = next();
    else if (s == "--time-cache")
      time_dir = next();
    else if (s == "--storage")
      storage_name = next();
    else if (s == "--dtype")
      dtype_name = next();
    else if (s == "--threads")
      time_threads = std::stoi(next());
    else {
      std::cerr << "usage: bench_loader [--quick] [--records N] [--batch N] [--dir PATH]\n"
                   "       bench_loader --write-cache DIR --storage S --dtype D [--records N]\n"
                   "       bench_loader --time-cache DIR [--batch N] [--threads T]\n";
      return 2;
    }
  }
  if (!time_dir.empty()) return time_cache(time_dir, batch, time_threads);
  if (!write_dir.empty()) {
    const auto m =
        vit_b16(cache::parse_storage_mode(storage_name), cache::parse_dtype(dtype_name), quick);
    write_cache(write_dir, m, records);
    return 0;
  }
  if (quick) records = 4;
  const fs::path work = fs::path(base) / ("evl_bench_loader_" + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  const evl::bench::RemoveOnExit cleanup{work};

  nlohmann::json rows = nlohmann::json::array();
  std::printf("bench_loader: %lld records per cache, batch %lld%s\n",
              static_cast<long long>(records), static_cast<long long>(batch),
              quick ? " (quick: tiny shapes)" : "");
  for (const auto storage : {StorageMode::kQK, StorageMode::kCompact})
    for (const auto dtype : {DType::kF16, DType::kBF16, DType::kI8, DType::kFP8}) {
      const bool compact = storage == StorageMode::kCompact;
      if (compact && dtype == DType::kBF16) continue;  // as fp16, at the price of the GEMMs
      // Compact spends ~0.5 s per ViT-B/16 sample in the Q/K GEMMs: half the steps, once.
      const int64_t steps =
          compact && !quick ? std::max<int64_t>(1, records / batch / 2) : records / batch;
      const int reps = compact || quick ? 1 : 2;
      const cache::Manifest m = vit_b16(storage, dtype, quick);
      const std::string name = cache::to_string(storage) + "_" + cache::to_string(dtype);
      const std::string dir = (work / name).string();
      const size_t rec_bytes = write_cache(dir, m, records);
      const CachedDataset data(dir, 0);
      // The raw ceiling: the same bytes in a plain file, read in the same order.
      const std::string raw = (work / (name + ".raw")).string();
      {
        const int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        std::vector<uint8_t> buf(rec_bytes, 1);
        for (int64_t i = 0; i < records; ++i)
          if (::write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
            throw std::runtime_error("cannot write " + raw);
        ::close(fd);
      }
      const int raw_fd = ::open(raw.c_str(), O_RDONLY);
      std::vector<uint8_t> buf(rec_bytes);
      auto pass = [&](bool from_cache) {
        const auto t0 = Clock::now();
        for (int64_t s = 0; s < steps; ++s) {
          const auto items = data.train_batch(0, s, batch);
          if (from_cache) {
            (void)data.load(items);
            continue;
          }
          for (const int64_t i : items) {
            size_t done = 0;
            while (done < rec_bytes)
              done += static_cast<size_t>(::pread(raw_fd, buf.data() + done, rec_bytes - done,
                                                  static_cast<off_t>(i * rec_bytes + done)));
          }
        }
        return seconds_since(t0);
      };
      // Warm: every record into the page cache and the map, LibTorch's pools.
      for (int64_t i = 0; i < records; ++i)
        data.reader().with_record(i, [](const cache::RecordView&) {});
      (void)data.load(data.train_batch(0, 0, batch));
      pass(false);
      for (const int threads : {1, 2}) {
        torch::set_num_threads(threads);
        const uint64_t before = data.bytes_read();
        double best = 1e30, best_raw = 1e30;
        for (int rep = 0; rep < reps; ++rep) {
          best = std::min(best, pass(true));
          best_raw = std::min(best_raw, pass(false));
        }
        const double samples = static_cast<double>(steps * batch);
        const double per_sample =
            static_cast<double>(data.bytes_read() - before) / (samples * static_cast<double>(reps));
        const double gb_s = samples * static_cast<double>(rec_bytes) / best / 1e9;
        const double raw_gb_s = samples * static_cast<double>(rec_bytes) / best_raw / 1e9;
        std::printf(
            "%-13s %dt: %8.2f samples/s  %6.2f GB/s of records (%.2f MiB each)  | pread %6.2f "
            "GB/s  loader/pread %5.1f%%\n",
            name.c_str(), threads, samples / best, gb_s, static_cast<double>(rec_bytes) / 1048576,
            raw_gb_s, 100 * gb_s / raw_gb_s);
        std::fflush(stdout);
        rows.push_back({{"storage", cache::to_string(storage)},
                        {"dtype", cache::to_string(dtype)},
                        {"threads", threads},
                        {"samples", samples},
                        {"samples_per_s", samples / best},
                        {"gb_s", gb_s},
                        {"pread_gb_s", raw_gb_s},
                        {"over_pread", gb_s / raw_gb_s},
                        {"record_bytes", rec_bytes},
                        {"array_bytes_per_sample", per_sample},
                        {"qk_recomputed", compact}});
      }
      ::close(raw_fd);
      fs::remove_all(dir);
      fs::remove(raw);
    }
  const cache::Manifest m = vit_b16(StorageMode::kQK, DType::kF16, quick);
  const nlohmann::json j = {{"bench", "loader"},         {"quick", quick},
                            {"width", m.backbone.width}, {"grid", m.backbone.grid},
                            {"frames", m.frames},        {"layers", m.layers.size()},
                            {"records", records},        {"batch", batch},
                            {"page_cache", "warm"},      {"rows", rows}};
  std::cout << "BENCH_JSON " << j.dump() << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
