// bench_distributed: what data-parallel head training (train/distributed.h)
// costs and gives on this machine, in one run:
//  - the gradient allreduce of the ViT-B/16 head (C 768, 4 decoder layers, 14x14
//    grid, 8 frames, 400 classes: its parameter count x 4 bytes) between 2 ranks
//    over Gloo on loopback, as the trainer does it (32 MiB flat buckets), per
//    step: the figure a reader scales to N nodes with their network's bandwidth;
//  - head-training samples/s of evl_train_head on the same synthetic
//    ViT-B/16-shaped cache (qk, float32, random features) as 1 process x 2
//    threads and as 2 ranks x 1 thread, at the same global batch and the
//    default precision (bf16 autocast where the CPU has native bf16; the steps
//    after the first, from metrics.jsonl).
//   bench_distributed [--quick] [--steps N (default 4)] [--batch N (default 4)]
//                     [--iters N allreduces (default 10)] [--dir DIR]
// --quick: a tiny head shape (CI smoke only; figures not meaningful).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cache/cache.h"
#include "tests/support/bench_support.h"
#include "train/distributed.h"
#include "train/head.h"

namespace fs = std::filesystem;
using namespace evl;
using evl::bench::Clock;
using evl::bench::seconds_since;

namespace {

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t n = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  close(fd);
  return ntohs(a.sin_port);
}

cache::Array f32(const torch::Tensor& t) {
  cache::Array a;
  a.dtype = cache::DType::kF32;
  a.shape = t.sizes().vec();
  const auto c = t.contiguous();
  a.bytes.assign(static_cast<const uint8_t*>(c.data_ptr()),
                 static_cast<const uint8_t*>(c.data_ptr()) + c.numel() * 4);
  return a;
}

// A qk float32 cache of `clips` one-view records with the head's shapes.
void write_cache(const fs::path& dir, const HeadConfig& h, int64_t clips) {
  fs::create_directories(dir);
  const std::string shard = cache::shard_name(0, 1);
  torch::manual_seed(3);
  {
    cache::ShardWriter w((dir / shard).string(), 64);
    for (int64_t c = 0; c < clips; ++c) {
      cache::Record r;
      r.clip_index = c, r.view_index = 0, r.label = c % h.num_classes;
      r.key = cache::make_key(c, 0);
      r.video_id = "clip" + std::to_string(c);
      const std::vector<int64_t> shape = {h.decoder_layers, h.frames, h.tokens(), h.width};
      r.arrays = {{"x", f32(torch::randn(shape))},
                  {"q", f32(torch::randn(shape))},
                  {"k", f32(torch::randn(shape))}};
      w.put(r);
    }
  }
  cache::Manifest m;
  m.backbone.file = "synthetic", m.backbone.hash = "bench",
  m.backbone.format = "openai-torchscript";
  m.backbone.width = h.width, m.backbone.depth = 12, m.backbone.heads = h.heads;
  m.backbone.patch = 16, m.backbone.grid = h.grid, m.backbone.input_size = 16 * h.grid;
  for (int64_t l = 0; l < h.decoder_layers; ++l) m.layers.push_back(12 - h.decoder_layers + l);
  m.storage = cache::StorageMode::kQK;
  m.dtype = cache::DType::kF32;
  m.frames = h.frames;
  m.train_views = 1;
  m.mean = {0.5, 0.5, 0.5}, m.std = {0.2, 0.2, 0.2};
  m.num_clips = clips;
  m.shards = {{shard, clips}};
  m.save(dir.string());
}

// Mean seconds of one allreduce of `floats` float32 values between 2 ranks.
double allreduce_seconds(int64_t floats, int iters) {
  const int port = free_port();
  std::vector<double> secs(2, 0);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      DistFlags f;
      f.rank = r, f.world_size = 2, f.master_addr = "127.0.0.1", f.master_port = port;
      Distributed d(resolve_dist_env(f, [](const char*) { return nullptr; }), "bench", torch::kCPU);
      // The head's gradient as the trainer hands it over: one tensor per parameter.
      std::vector<torch::Tensor> grads;
      for (int64_t left = floats; left > 0; left -= 768 * 768)
        grads.push_back(torch::ones({std::min<int64_t>(left, 768 * 768)}));
      d.sum(grads, "warm-up");
      const auto t0 = Clock::now();
      for (int i = 0; i < iters; ++i) d.sum(grads, "bench");
      secs[r] = seconds_since(t0) / iters;
      d.finish();
    });
  for (auto& t : ranks) t.join();
  return std::max(secs[0], secs[1]);
}

// Runs evl_train_head as `world` ranks of `threads` threads; samples/s of the
// steps after the first.
double train_samples_per_s(const fs::path& cache, const fs::path& out, int world, int threads,
                           int64_t steps, int64_t batch, int64_t heads) {
  const std::string tool =
      (fs::read_symlink("/proc/self/exe").parent_path() / "evl_train_head").string();
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> args = {tool,
                                     "--cache",
                                     cache.string(),
                                     "--out",
                                     out.string(),
                                     "--steps",
                                     std::to_string(steps),
                                     "--batch-size",
                                     std::to_string(batch),
                                     "--heads",
                                     std::to_string(heads),
                                     "--threads",
                                     std::to_string(threads),
                                     "--log-every",
                                     "1",
                                     "--save-every",
                                     "0"};
    if (world > 1)
      for (const std::string& a :
           {std::string("--rank"), std::to_string(r), std::string("--world-size"),
            std::to_string(world), std::string("--master-port"), std::to_string(port)})
        args.push_back(a);
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (!std::freopen("/dev/null", "w", stdout)) _exit(127);
      execv(argv[0], argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  for (const pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::cerr << "bench_distributed: evl_train_head failed (world " << world << ")\n";
      return -1;
    }
  }
  std::vector<nlohmann::json> lines;
  std::ifstream m(out / "metrics.jsonl");
  for (std::string l; std::getline(m, l);)
    if (!l.empty()) lines.push_back(nlohmann::json::parse(l));
  // metrics' samples_per_s is cumulative from the first step's start.
  const double t1 = batch / lines.front()["samples_per_s"].get<double>();
  const double tn =
      static_cast<double>(batch * steps) / lines.back()["samples_per_s"].get<double>();
  return static_cast<double>(batch * (steps - 1)) / (tn - t1);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int64_t steps = 4, batch = 4;
  int iters = 10;
  fs::path dir = fs::temp_directory_path() / ("bench_distributed_" + std::to_string(getpid()));
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--quick")
      quick = true;
    else if (a == "--steps")
      steps = std::stoll(next());
    else if (a == "--batch")
      batch = std::stoll(next());
    else if (a == "--iters")
      iters = std::stoi(next());
    else if (a == "--dir")
      dir = fs::path(next()) / "bench_distributed";
    else {
      std::cerr
          << "usage: bench_distributed [--quick] [--steps N] [--batch N] [--iters N] [--dir DIR]\n";
      return 2;
    }
  }
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  HeadConfig h;  // the defaults: ViT-B/16, K400
  if (quick) h.width = 32, h.heads = 2, h.grid = 2, h.frames = 4, h.num_classes = 4, iters = 2;
  torch::manual_seed(0);
  EvlHead head(h);
  int64_t params = 0;
  for (const auto& p : head->parameters()) params += p.numel();
  const double mb = static_cast<double>(params) * 4 / 1e6;
  std::cout << "head: " << params << " parameters, gradient " << mb << " MB (float32)\n";
  const double ar = allreduce_seconds(params, iters);
  std::cout << "allreduce of the gradient, 2 ranks, Gloo over loopback: " << ar * 1e3
            << " ms per step (" << 2 * mb / 1e3 / ar << " GB/s of gradient moved per rank)\n";

  const bench::RemoveOnExit cleanup{dir};
  write_cache(dir / "cache", h, std::max<int64_t>(2 * batch, 4));
  const double one = train_samples_per_s(dir / "cache", dir / "run1", 1, 2, steps, batch, h.heads);
  const double two = train_samples_per_s(dir / "cache", dir / "run2", 2, 1, steps, batch, h.heads);
  std::cout << "evl_train_head, global batch " << batch << ": 1 rank x 2 threads " << one
            << " samples/s, 2 ranks x 1 thread " << two << " samples/s (ratio " << two / one
            << ")\n";
  nlohmann::json j = {{"quick", quick},
                      {"head_parameters", params},
                      {"gradient_mb", mb},
                      {"allreduce_ranks", 2},
                      {"allreduce_s_per_step", ar},
                      {"batch", batch},
                      {"steps", steps},
                      {"samples_per_s_1rank_2threads", one},
                      {"samples_per_s_2ranks_1thread", two},
                      {"ratio_2ranks_vs_1rank", two / one}};
  std::cout << "BENCH_JSON " << j.dump() << std::endl;
  return 0;
}
