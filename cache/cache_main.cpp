// evl_cache: inspect, check, join and export feature caches.
//   evl_cache info DIR [--json] | verify DIR | merge OUT IN... | export DIR --h5 OUT.h5 [--limit N]
#include <iostream>

#include "cache/cache_tools.h"
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
};

const evl::cli::Tool kTool{
    "evl_cache", "inspect, verify, merge and export evl feature caches",
    "evl_cache info DIR [--json] | verify DIR | merge OUT IN... | export DIR --h5 OUT.h5 "
    "[--limit N]"};

int run_verify(const std::string& dir) {
  evl::Progress progress("verify", -1, "records");
  const VerifyReport report = verify_cache(dir, [&](int64_t) { progress.advance(); });
  progress.finish();
  for (const auto& b : report.bad)
    std::cout << "BAD " << b.shard << " " << b.key << ": " << b.reason << "\n";
  std::cout << report.records << " records checked, " << report.bad.size() << " bad\n";
  return report.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return evl::cli::run(kTool, [&] {
    CacheToolConfig cfg;
    po::options_description opts("evl_cache");
    opts.add_options()("args", po::value(&cfg.args)->multitoken(),
                       "subcommand (info, verify, merge, export) and its operands")(
        "json", po::bool_switch(&cfg.json), "info: print JSON")("h5", po::value(&cfg.h5),
                                                                "export: output HDF5 file")(
        "limit", po::value(&cfg.limit)->default_value(cfg.limit),
        "export: at most N records (-1: all)");
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
    EVL_THROW(evl::UsageError, "unknown subcommand '", cmd,
              "' (expected info, verify, merge or export)");
  });
}
