// bench_backbone: evl's CLIP ViT forward (fp32 and bf16) against python3-torch running the
// same architecture from the same archive on the same threads, side by side in one run,
// plus the single-GEMM ceiling (the MLP fc1 shape), bf16 accuracy, and peak RSS.
// Default: ViT-B/16 random weights (scripts/make_clip_backbone.py), batch 8, 2 threads.
// --quick: 2 blocks of B/16 width, batch 2, one iteration (for CTest, label bench).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "extract/clip_vit.h"
#include "tests/support/bench_support.h"

namespace {
using evl::bench::Clock;
using evl::bench::peak_rss_mib;
using evl::bench::seconds_since;

struct Args {
  bool quick = false;
  std::string model;
  int64_t batch = 8, threads = 2, iters = 3, warmup = 1;
  bool python = true;
};

template <typename F>
double median_seconds(int64_t warmup, int64_t iters, F&& f) {
  std::vector<double> t;
  for (int64_t i = 0; i < warmup + iters; ++i) {
    auto t0 = Clock::now();
    f();
    if (i >= warmup) t.push_back(seconds_since(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::string run(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) return "";
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p.get())) out.append(buf, n);
  return out;
}

// Multiply-accumulates per image (the "17.6 GFLOP" of ViT-B/16 is this count).
double macs_per_image(const evl::VitArch& a) {
  const double C = a.width, L = a.tokens(), G2 = a.grid * a.grid, P2 = a.patch * a.patch;
  const double block = L * C * 3 * C + L * C * C + 2 * L * C * 4 * C + 2 * L * L * C;
  return G2 * 3 * P2 * C + a.depth * block;
}

// fp32 or bf16 GEMM (M x K) @ (K x N) with bias, as the ViT's MLP fc1: FLOP/s = 2MNK / t.
double gemm_gflops(torch::ScalarType dt, int64_t M, int64_t K, int64_t N, int64_t iters) {
  torch::InferenceMode guard;
  auto a = torch::randn({M, K}).to(dt), w = torch::randn({N, K}).to(dt),
       b = torch::randn({N}).to(dt);
  double t = median_seconds(2, iters, [&] { torch::addmm(b, a, w.t()); });
  return 2.0 * M * N * K / t / 1e9;
}

// The GEMMs of one full forward alone, at the model's shapes and in its dtype, on
// workspace-style preallocated outputs (what ClipVisionImpl::run_block calls: 4 mm/addmm
// per block plus the two attention bmm's, and the patch-embedding mm): the time the
// forward would take if every elementwise pass, softmax, LayerNorm and copy were free.
double gemm_seconds_per_forward(torch::ScalarType dt, const evl::VitArch& a, int64_t batch,
                                int64_t iters) {
  torch::InferenceMode guard;
  const int64_t C = a.width, L = a.tokens(), NL = batch * L, H = a.heads, D = C / H,
                G2 = a.grid * a.grid, P2 = a.patch * a.patch;
  auto r = [&](std::vector<int64_t> shape) { return torch::randn(shape).to(dt); };
  auto h = r({NL, C}), wqkv = r({3 * C, C}), bqkv = r({3 * C}), qkv = r({NL, 3 * C}),
       wo = r({C, C}), y = r({NL, C}), wfc = r({4 * C, C}), m = r({NL, 4 * C}), wp = r({C, 4 * C}),
       q = r({batch * H, L, D}), att = r({batch * H, L, L}), mix = r({batch * H, L, D}),
       patches = r({batch * G2, 3 * P2}), wpe = r({C, 3 * P2}), tok = r({batch * G2, C});
  auto block = [&] {
    torch::addmm_out(qkv, bqkv, h, wqkv.t());
    torch::baddbmm_out(att, att, q, q.transpose(1, 2), 0, 0.125);
    torch::bmm_out(mix, att, q);
    torch::mm_out(y, h, wo.t());
    torch::mm_out(m, h, wfc.t());
    torch::mm_out(y, m, wp.t());
  };
  const double tb = median_seconds(1, iters, block);
  const double tp = median_seconds(1, iters, [&] { torch::mm_out(tok, patches, wpe.t()); });
  return a.depth * tb + tp;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + s);
      return argv[++i];
    };
    if (s == "--quick")
      args.quick = true;
    else if (s == "--model")
      args.model = next();
    else if (s == "--batch")
      args.batch = std::stoll(next());
    else if (s == "--threads")
      args.threads = std::stoll(next());
    else if (s == "--iters")
      args.iters = std::stoll(next());
    else if (s == "--no-python")
      args.python = false;
    else {
      std::cerr << "usage: bench_backbone [--quick] [--model ViT.pt] [--batch 8] [--threads 2] "
                   "[--iters 3] [--no-python]\n";
      return s == "--help" ? 0 : 2;
    }
  }
  if (args.quick) args.batch = 2, args.iters = 1;
  const std::string src = EVL_SOURCE_DIR, py = EVL_PYTHON;
  if (args.model.empty()) {
    args.model = (std::filesystem::temp_directory_path() /
                  (args.quick ? "evl_bench_vit_b16_2blocks.pt" : "evl_bench_vit_b16.pt"))
                     .string();
    if (!std::filesystem::exists(args.model)) {
      const std::string cmd = py + " " + src + "/scripts/make_clip_backbone.py --preset b16 " +
                              (args.quick ? "--layers 2 " : "") + "-o " + args.model;
      std::cout << "making " << args.model << ": " << run(cmd);
    }
  }
  torch::set_num_threads(static_cast<int>(args.threads));
  std::cout << "bench_backbone: " << args.model << ", batch " << args.batch << ", threads "
            << torch::get_num_threads() << ", OMP_WAIT_POLICY="
            << (getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)") << "\n";

  evl::BackboneOptions fp32_opt, bf16_opt;
  bf16_opt.precision = evl::Precision::kBf16;
  auto fp32 = evl::load_backbone(args.model, fp32_opt);
  auto bf16 = evl::load_backbone(args.model, bf16_opt);
  const auto& arch = fp32.arch;
  const double gmac = macs_per_image(arch) / 1e9;
  const auto taps = evl::resolve_blocks(arch.depth >= 4 ? "last4" : "all", arch.depth);
  auto images = torch::randn({args.batch, 3, arch.image_size, arch.image_size},
                             torch::TensorOptions().dtype(torch::kFloat));

  // evl: full forward (all blocks, embedding; what the python baseline does) and the
  // extraction call (X/Q/K of the last 4 blocks), two rounds around the python run.
  std::map<std::string, double> evl_t;
  // Without AVX-512 LibTorch's bf16 GEMMs take a scalar fallback (~100x slower):
  // time the bf16 path once there, without warm-up, so the run stays short.
  const bool slow_bf16 = evl::cpu_bf16_support() == evl::CpuBf16::kSlow;
  if (slow_bf16)
    std::cout << "bf16: this CPU has no AVX-512 (" << evl::cpu_precision_flags()
              << "): bf16 is timed with 1 iteration, no warm-up\n";
  auto time_evl = [&] {
    for (auto* bb : {&fp32, &bf16}) {
      const std::string name = evl::to_string(bb->model->options().precision);
      const bool once = slow_bf16 && name == "bf16";
      const int64_t warmup = once ? 0 : args.warmup, iters = once ? 1 : args.iters;
      double t = median_seconds(warmup, iters,
                                [&] { bb->model->forward(images, {}, /*with_embedding=*/true); });
      double tt = median_seconds(warmup, iters, [&] { bb->model->forward(images, taps); });
      evl_t[name] = evl_t.count(name) ? std::min(evl_t[name], t) : t;
      const auto k = name + "-taps";
      evl_t[k] = evl_t.count(k) ? std::min(evl_t[k], tt) : tt;
    }
  };
  time_evl();
  const double evl_rss = peak_rss_mib();
  nlohmann::json pyj;
  if (args.python) {
    const std::string cmd =
        "OMP_WAIT_POLICY=PASSIVE " + py + " " + src + "/tests/extract/backbone_bench.py --model " +
        args.model + " --batch " + std::to_string(args.batch) + " --threads " +
        std::to_string(args.threads) + " --iters " + std::to_string(args.iters) + " --warmup " +
        std::to_string(args.warmup) + " 2>&1";
    const std::string out = run(cmd);
    const auto pos = out.find("PY_JSON ");
    if (pos == std::string::npos) {
      std::cerr << "python baseline failed:\n" << out << "\n";
      return 1;
    }
    pyj = nlohmann::json::parse(out.substr(pos + 8, out.find('\n', pos) - pos - 8));
  }
  if (!args.quick) time_evl();

  // bf16 accuracy against fp32 on the extraction taps.
  double max_rel = 0;
  {
    auto a = fp32.model->forward(images, taps), b = bf16.model->forward(images, taps);
    for (size_t i = 0; i < a.layers.size(); ++i)
      for (auto [x, y] : {std::pair{a.layers[i].x, b.layers[i].x},
                          {a.layers[i].q, b.layers[i].q},
                          {a.layers[i].k, b.layers[i].k}})
        max_rel = std::max(max_rel, ((y - x).abs().max() / x.abs().max()).item<double>());
  }
  const int64_t M = args.batch * arch.tokens();
  const double g32 = gemm_gflops(torch::kFloat, M, arch.width, 4 * arch.width, args.quick ? 2 : 10);
  const double g16 =
      gemm_gflops(torch::kBFloat16, M, arch.width, 4 * arch.width, args.quick ? 2 : 10);
  const int64_t gi = args.quick ? 1 : 5;
  std::map<std::string, double> gemm_s = {
      {"fp32", gemm_seconds_per_forward(torch::kFloat, arch, args.batch, gi)},
      {"bf16", gemm_seconds_per_forward(torch::kBFloat16, arch, args.batch, gi)}};

  auto line = [&](const std::string& who, const std::string& mode, double t) {
    const double ips = args.batch / t;
    std::printf("%-6s %-14s %7.3f s/batch %6.2f img/s %7.1f GMAC/s (%.1f GMAC/img) %7.1f GFLOP/s\n",
                who.c_str(), mode.c_str(), t, ips, ips * gmac, gmac, 2 * ips * gmac);
  };
  for (const auto& [k, t] : evl_t) line("evl", k, t);
  // evl's best path and the GEMM ceiling of that path's precision: on a CPU
  // without native bf16 the fp32 path wins, and comparing it with the (much
  // lower) bf16 ceiling would read as thousands of percent.
  const bool bf16_best = evl_t["bf16"] < evl_t["fp32"];
  const std::string best_mode = bf16_best ? "bf16" : "fp32";
  const double evl_best = evl_t[best_mode], ceiling = bf16_best ? g16 : g32;
  double py_best = 0;
  std::string py_best_mode;
  for (const char* m : {"fp32", "autocast-bf16", "bf16"})
    if (pyj.contains(m)) {
      line("python", m, pyj[m].get<double>());
      if (py_best == 0 || pyj[m].get<double>() < py_best) py_best = pyj[m], py_best_mode = m;
    }
  const double best_flops = 2 * args.batch / evl_best * gmac;
  std::printf("GEMM ceiling (%lldx%lldx%lld addmm): fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n",
              static_cast<long long>(M), static_cast<long long>(arch.width),
              static_cast<long long>(4 * arch.width), g32, g16);
  std::printf("evl best (%s) %.1f GFLOP/s = %.0f%% of the %s GEMM ceiling\n", best_mode.c_str(),
              best_flops, 100 * best_flops / ceiling, best_mode.c_str());
  if (py_best > 0)
    std::printf("evl fp32 / python fp32 = %.2fx; evl best / python best (%s) = %.2fx\n",
                pyj["fp32"].get<double>() / evl_t["fp32"], py_best_mode.c_str(),
                py_best / evl_best);
  for (const auto& [mode, tg] : gemm_s)
    std::printf(
        "evl %s: its GEMMs alone take %.3f s of the %.3f s forward (%.0f%%) at %.1f GFLOP/s; "
        "the rest (LayerNorm, softmax, activation, bias/residual adds, layout copies) %.3f s\n",
        mode.c_str(), tg, evl_t[mode], 100 * tg / evl_t[mode], 2 * args.batch * gmac / tg,
        evl_t[mode] - tg);
  std::printf("bf16 vs fp32 features (last-4 X/Q/K): max|diff|/max|fp32| = %.2e\n", max_rel);
  std::printf("peak RSS: evl %.0f MiB (both models loaded), python %.0f MiB\n", evl_rss,
              pyj.is_object() ? pyj.value("peak_rss_mib", 0.0) : 0.0);
  nlohmann::json j = {{"batch", args.batch},
                      {"threads", args.threads},
                      {"gmac_per_image", gmac},
                      {"evl_s_per_batch", evl_t},
                      {"python_s_per_batch", pyj},
                      {"gemm_gflops_fp32", g32},
                      {"gemm_gflops_bf16", g16},
                      {"gemm_s_per_batch", gemm_s},
                      {"evl_best_gflops", best_flops},
                      {"evl_best_mode", best_mode},
                      {"evl_best_fraction_of_gemm_ceiling", best_flops / ceiling},
                      {"cpu_flags", evl::cpu_precision_flags()},
                      {"cpu_bf16", evl::to_string(evl::cpu_bf16_support())},
                      {"speedup_best_vs_python_best", py_best > 0 ? py_best / evl_best : 0},
                      {"bf16_max_rel_err", max_rel},
                      {"evl_peak_rss_mib", evl_rss}};
  std::cout << "BENCH_JSON " << j.dump() << std::endl;
  return 0;
}
