// The command-line pattern every evl tool follows (specified in this header):
// a typed config struct per stage holds the defaults; Boost.Program_options binds
// its fields; `--config FILE.ini` supplies values (command-line flags win);
// `--help` and `--version` print to stdout and exit 0; `--print-config` is a dry
// run: it parses the flags and the config file exactly like a real run, prints
// the resolved configuration (to_ini) and exits 0 without running; usage errors
// exit 2 and runtime errors exit 1, each printed as `error: <what>` on stderr.
//
// Typical main:
//   evl::ExtractConfig cfg;                     // in-class defaults
//   po::options_description opts("options");
//   opts.add_options()("frames", po::value(&cfg.frames)->default_value(cfg.frames), "...");
//   return evl::cli::run(kTool, [&] {
//     po::variables_map vm;
//     if (!evl::cli::parse(kTool, argc, argv, opts, vm)) return 0;
//     ...; return 0;
//   });
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <set>
#include <string>

namespace evl::cli {

namespace po = boost::program_options;

// Exit codes shared by all tools.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitUsage = 2;

struct Tool {
  std::string name;      // executable name, e.g. "evl_extract"
  std::string synopsis;  // one line saying what the tool does
  std::string usage;     // e.g. "evl_extract --list FILE --backbone FILE --out DIR [options]"
};

// Parses argv against `options` plus the standard --help, --version,
// --print-config and --config FILE (an INI file with the same option names;
// dotted names map to sections, `[train] lr = 4e-4` == `--train.lr 4e-4`).
// Command-line values win over the file's. Calls po::notify, so bound config
// fields are filled. Returns false when the tool should exit 0 right away
// (help, version or the resolved configuration printed on stdout).
// Throws evl::UsageError for unknown or malformed options and unreadable configs.
bool parse(const Tool& tool, int argc, const char* const argv[],
           const po::options_description& options, po::variables_map& vm,
           const po::positional_options_description* positional = nullptr);

// Runs `body`, turning exceptions into exit codes with `error: <what>` on stderr:
// evl::UsageError and Program_options errors -> 2, anything else -> 1.
int run(const Tool& tool, const std::function<int()>& body);

// Boost.Program_options prints a double default with 17 digits
// ("(=0.00040000000000000002)") and a float one with 9 ("(=0.0500000007)").
// Returns `help` with each such default in its shortest round-trip form
// ("(=0.0004)", "(=0.05)"), padded so the description column stays aligned.
// `float_options` names the options (long names) whose values are floats: a
// text alone cannot tell a float's 9 digits from a double's. parse() applies
// it to --help.
std::string shorten_defaults(const std::string& help,
                             const std::set<std::string>& float_options = {});

// Shortest text that reads back as exactly `x`: a plain decimal for
// exponents -5 to 16 (float: 8) ("0.0004", "0.3333333333333333"), else
// scientific without padding ("1e-300").
std::string shortest(double x);
std::string shortest(float x);

// Every option in `vm` that holds a value, as INI text that `--config` reads
// back (dotted names become sections). Used to record a run's resolved config.
std::string to_ini(const po::variables_map& vm);

}  // namespace evl::cli
