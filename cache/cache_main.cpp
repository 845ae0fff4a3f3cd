// evl_cache: inspect, check, join, export, convert and compare feature caches.
//   evl_cache info DIR [--json] | verify DIR | merge OUT IN... | export DIR --h5 OUT.h5 [--limit N]
//           | convert IN OUT --dtype D [--store S] [--force] [--threads N]
//           | compare A B [--checkpoint FILE] [--limit N] [--fuse prob|logits] [--json[=FILE]]
// convert exits 3 when some records failed (OUT/failures.tsv), 4 when interrupted.
// (compare lives in evaluate/cache_compare.h: it needs LibTorch for Q/K and the head.)
#include <atomic>
#include <csignal>
#include <iostream>

#include "cache/cache_tools.h"
#include "cache/convert.h"
#include "common/atomic_file.h"
#include "common/check.h"
#include "common/cli.h"
#include "common/progress.h"
#include "evaluate/cache_compare.h"

namespace po = boost::program_options;
using namespace evl::cache;

namespace {

struct CacheToolConfig {
  std::vector<std::string> args;  // subcommand then its operands
  std::string json;  // "-": print JSON on stdout; a path: write it there (info, compare)
  std::string h5;
  int64_t limit = -1;
  evl::CompareConfig compare;  // compare's options (its limit is `limit`)
  std::string dtype, store;    // convert: target dtype; storage ("": the source's)
  bool force = false;
  int threads = 0;
};

const evl::cli::Tool kTool{
    "evl_cache", "inspect, verify, merge, export, convert and compare evl feature caches",
    "evl_cache info DIR [--json] | verify DIR | merge OUT IN... | export DIR --h5 OUT.h5 "
    "[--limit N] | convert IN OUT --dtype int8|fp8|fp16|bf16|fp32 [--store qk|compact] "
    "[--force] [--threads N] | compare A B [--checkpoint FILE] [--limit N] [--fuse prob|logits] "
    "[--max-rel-rms X] [--min-top1-agreement Y] [--json[=FILE]]"};

// --json: to stdout ("-"), into a file, or nowhere ("").
void write_json(const std::string& target, const std::string& text) {
  if (target == "-")
    std::cout << text;
  else if (!target.empty())
    evl::write_file_atomic(target, text);
}

// The table on stdout unless the JSON goes there; exit 1 when a check failed.
int run_compare(CacheToolConfig cfg, const std::vector<std::string>& rest) {
  EVL_CHECK_USAGE(rest.size() == 2, "usage: evl_cache compare A B [--checkpoint FILE] [options]",
                  cfg.json.empty() || cfg.json == "-"
                      ? ""
                      : " (--json took '" + cfg.json + "' as its FILE: write --json=FILE)");
  cfg.compare.reference = rest[0];
  cfg.compare.candidate = rest[1];
  cfg.compare.limit = cfg.limit;
  const evl::CompareReport report = evl::compare_caches(cfg.compare);
  const bool json_on_stdout = cfg.json == "-";
  if (!json_on_stdout) std::cout << report.to_text();
  write_json(cfg.json, report.to_json());
  if (json_on_stdout)  // the table, which lists them, was not printed
    for (const auto& f : report.failures) std::cerr << "check failed: " << f << "\n";
  return report.failures.empty() ? 0 : 1;
}

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
    opts.add_options()(
        "args", po::value(&cfg.args)->multitoken(),
        "subcommand (info, verify, merge, export, convert, compare) and its operands")(
        "json", po::value(&cfg.json)->implicit_value("-"),
        "info, compare: JSON on stdout, or with --json=FILE into FILE")("h5", po::value(&cfg.h5),
                                                                        "export: output HDF5 file")(
        "limit", po::value(&cfg.limit)->default_value(cfg.limit),
        "export: at most N records; compare: the first N common clips (-1: all)")(
        "checkpoint", po::value(&cfg.compare.checkpoint),
        "compare: also run this EVL head on both caches")(
        "fuse", po::value(&cfg.compare.fuse)->default_value(cfg.compare.fuse),
        "compare: view fusion, prob | logits (as evl_eval)")(
        "batch-size", po::value(&cfg.compare.batch_size)->default_value(cfg.compare.batch_size),
        "compare: clip-views per batch")(
        "max-rel-rms", po::value(&cfg.compare.max_rel_rms),
        "compare: exit 1 when any array of any layer has a larger relative RMS error")(
        "min-top1-agreement", po::value(&cfg.compare.min_top1_agreement),
        "compare: exit 1 when the head's top-1 agreement is lower (a fraction)")(
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
      EVL_CHECK_USAGE(rest.size() == 1, "usage: evl_cache info DIR [--json[=FILE]]");
      const CacheInfo info = cache_info(rest[0]);
      if (cfg.json != "-") std::cout << info.to_text();
      write_json(cfg.json, info.to_json());
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
    if (cmd == "compare") return run_compare(cfg, rest);
    EVL_THROW(evl::UsageError, "unknown subcommand '", cmd,
              "' (expected info, verify, merge, export, convert or compare)");
  });
}
