// bench_train: head-training throughput with ViT-B/16 shapes (C 768, 14x14
// grid, 8 frames, 4 layers, fp16 qk cache): steps fed from a cache on disk vs
// the same batch held in memory, in one run. Prints bytes read per sample and
// peak RSS. --quick: tiny batch and 2 steps (for CI). The online (decode +
// backbone) comparison of issue 7 needs evl_extract and is not measured here.
#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "cache/cache.h"
#include "train/cached_dataset.h"
#include "train/head.h"

namespace fs = std::filesystem;
using namespace evl;

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int64_t clips = quick ? 4 : 16, batch = quick ? 2 : 8, steps = quick ? 2 : 4;
  const int64_t c = 768, grid = 14, l = 1 + grid * grid, t = 8, m = 4;
  const auto dir = fs::temp_directory_path() / ("evl_bench_train_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    cache::ShardWriter w((dir / cache::shard_name(0, 1)).string(), 4);
    for (int64_t i = 0; i < clips; ++i) {
      cache::Record r;
      r.clip_index = i, r.label = i % 400, r.key = cache::make_key(i, 0),
      r.video_id = std::to_string(i);
      for (const char* name : {"x", "q", "k"}) {
        auto h = torch::randn({m, t, l, c}).to(torch::kHalf);
        cache::Array a{cache::DType::kF16, h.sizes().vec(), std::vector<uint8_t>(h.numel() * 2)};
        std::memcpy(a.bytes.data(), h.data_ptr(), a.bytes.size());
        r.arrays.emplace_back(name, std::move(a));
      }
      w.put(r);
    }
  }
  cache::Manifest man;
  man.backbone = {"ViT-B-16.pt", "bench", "openai-torchscript", c, 12, 12, 16, grid, 224};
  man.layers = {8, 9, 10, 11};
  man.frames = t, man.num_clips = clips, man.mean = {0, 0, 0}, man.std = {1, 1, 1};
  man.shards = {{cache::shard_name(0, 1), clips}};
  man.save(dir.string());

  CachedDataset data(dir.string(), 0);
  HeadConfig cfg;
  EvlHead head(cfg);
  torch::optim::AdamW opt(head->parameters(), torch::optim::AdamWOptions(4e-4).weight_decay(0.05));
  auto train_step = [&](const FeatureBatch& b) {
    opt.zero_grad();
    torch::cross_entropy_loss(head->forward(b.x, b.q, b.k), b.labels).backward();
    opt.step();
  };
  uint64_t before = 0;
  auto time_it = [&](bool from_cache) {
    const auto fixed = data.load(data.train_batch(0, 0, batch));
    train_step(fixed);  // warm-up
    before = data.bytes_read();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps; ++s)
      train_step(from_cache ? data.load(data.train_batch(0, s, batch)) : fixed);
    return static_cast<double>(steps * batch) /
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const double mem = time_it(false);
  const double disk = time_it(true);
  const double bytes_per_sample =
      static_cast<double>(data.bytes_read() - before) / static_cast<double>(steps * batch);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  fs::remove_all(dir);
  std::cout << "ViT-B/16 shapes, 8 frames, 4 layers, fp16 qk cache, batch " << batch
            << ", fp32 CPU, " << torch::get_num_threads() << " threads\n"
            << "train samples/s from cache: " << disk << "\n"
            << "train samples/s from memory: " << mem << "  (cache/memory ratio " << disk / mem
            << ")\n"
            << "bytes read per sample: " << bytes_per_sample << "\n"
            << "peak RSS MiB: " << ru.ru_maxrss / 1024.0 << "\n";
  std::cout << "BENCH_JSON {\"samples_per_s_cache\": " << disk
            << ", \"samples_per_s_memory\": " << mem
            << ", \"bytes_per_sample\": " << bytes_per_sample
            << ", \"peak_rss_mib\": " << ru.ru_maxrss / 1024.0 << ", \"batch\": " << batch
            << ", \"quick\": " << (quick ? "true" : "false") << "}\n";
  return 0;
}
