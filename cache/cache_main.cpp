// evl_cache: inspect, check, join, export and convert feature caches.
//   evl_cache info DIR [--json] | verify DIR | merge OUT IN... | export DIR --h5 OUT.h5 [--limit N]
//             | convert IN OUT --dtype D [--store S] [--force] [--threads N]
// convert exits 3 when some records failed (OUT/failures.tsv), 4 when interrupted.
#include <atomic>
#include <csignal>
#include <iostream>

#include "cache/cache_tools.h"
#include "cache/convert.h"
#include "common/check.h"
#include "common/cli.h"
#include "common/progress.h"

namespace po = boost::program_options;
using namespace evl::cache;

namespace {

struct CacheToolConfig {
  std::vector<std::string> args;  // subcommand then its operands
  bool json = false;
  std::string h5;
  int64_t limit = -1;
  std::string dtype, store;  // convert: target dtype; storage ("": the source's)
  bool force = false;
  int threads = 0;
};

const evl::cli::Tool kTool{
    "evl_cache", "inspect, verify, merge, export and convert evl feature caches",
    "evl_cache info DIR [--json] | verify DIR | merge OUT IN... | export DIR --h5 OUT.h5 "
    "[--limit N] | convert IN OUT --dtype int8|fp8|fp16|bf16|fp32 [--store qk|compact] "
    "[--force] [--threads N]"};

int run_verify(const std::string& dir) {
  evl::Progress progress("verify", -1, "records");
  const VerifyReport report = verify_cache(dir, [&](int64_t) { progress.advance(); });
  progress.finish();
  for (const auto& b : report.bad)
    std::cout << "BAD " << b.shard << " " << b.key << ": " << b.reason << "\n";
  std::cout << report.records << " records checked, " << report.bad.size() << " bad\n";
  return report.ok() ? 0 : 1;
}

constexpr int kExitSomeFailed = 3;  // as evl_extract
constexpr int kExitInterrupted = 4;

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

int run_convert(const CacheToolConfig& cfg, const std::vector<std::string>& rest) {
  EVL_CHECK_USAGE(rest.size() == 2 && !cfg.dtype.empty(),
                  "usage: evl_cache convert IN OUT --dtype D [--store S] [--force] [--threads N]");
  ConvertOptions o{rest[0], rest[1], parse_dtype(cfg.dtype), std::nullopt, cfg.force, cfg.threads};
  if (!cfg.store.empty()) o.storage = parse_storage_mode(cfg.store);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  const ConvertSummary s = convert_cache(o, &g_stop);
  std::cout << "converted " << s.converted << " records, skipped " << s.skipped
            << " already present, " << s.failed << " failed, of " << s.records << " into " << o.out
            << " (" << s.bytes_written / 1048576.0 << " MiB in " << s.seconds << " s)\n";
  if (s.failed > 0) std::cout << "failed records are listed in " << s.failures_file << "\n";
  if (s.interrupted) {
    std::cerr << "interrupted: converted records are committed; rerun the same command to resume\n";
    return kExitInterrupted;
  }
  return s.failed > 0 ? kExitSomeFailed : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return evl::cli::run(kTool, [&] {
    CacheToolConfig cfg;
    po::options_description opts("evl_cache");
    opts.add_options()("args", po::value(&cfg.args)->multitoken(),
                       "subcommand (info, verify, merge, export, convert) and its operands")(
        "json", po::bool_switch(&cfg.json), "info: print JSON")("h5", po::value(&cfg.h5),
                                                                "export: output HDF5 file")(
        "limit", po::value(&cfg.limit)->default_value(cfg.limit),
        "export: at most N records (-1: all)")(
        "dtype", po::value(&cfg.dtype), "convert: output dtype (int8, fp8, fp16, bf16, fp32)")(
        "store", po::value(&cfg.store),
        "convert: output storage qk | compact (default: the input's)")(
        "force", po::bool_switch(&cfg.force), "convert: also to a dtype wider than the input's")(
        "threads", po::value(&cfg.threads)->default_value(cfg.threads),
        "convert: records converted at once (0: all cores)");
    po::positional_options_description pos;
    pos.add("args", -1);
    po::variables_map vm;
    if (!evl::cli::parse(kTool, argc, argv, opts, vm, &pos)) return 0;
    EVL_CHECK_USAGE(!cfg.args.empty(), "no subcommand given (see evl_cache --help)");
    const std::string cmd = cfg.args[0];
    const std::vector<std::string> rest(cfg.args.begin() + 1, cfg.args.end());
    if (cmd == "info") {
      EVL_CHECK_USAGE(rest.size() == 1, "usage: evl_cache info DIR [--json]");
      const CacheInfo info = cache_info(rest[0]);
      std::cout << (cfg.json ? info.to_json() : info.to_text());
      return 0;
    }
    if (cmd == "verify") {
      EVL_CHECK_USAGE(rest.size() == 1, "usage: evl_cache verify DIR");
      return run_verify(rest[0]);
    }
    if (cmd == "merge") {
      EVL_CHECK_USAGE(rest.size() >= 2, "usage: evl_cache merge OUT IN...");
      merge_caches(rest[0], std::vector<std::string>(rest.begin() + 1, rest.end()));
      std::cout << "merged " << rest.size() - 1 << " caches into " << rest[0] << "\n";
      return 0;
    }
    if (cmd == "export") {
      EVL_CHECK_USAGE(rest.size() == 1 && !cfg.h5.empty(),
                      "usage: evl_cache export DIR --h5 OUT.h5 [--limit N]");
      const int64_t n = export_h5(rest[0], cfg.h5, cfg.limit);
      std::cout << "exported " << n << " records to " << cfg.h5 << "\n";
      return 0;
    }
    if (cmd == "convert") return run_convert(cfg, rest);
    EVL_THROW(evl::UsageError, "unknown subcommand '", cmd,
              "' (expected info, verify, merge, export or convert)");
  });
}
