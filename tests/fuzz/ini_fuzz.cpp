// Fuzz target: INI config files (`--config FILE`, common/cli.cpp parse with
// Boost.Program_options) against evl_extract's view and feature flags plus
// options of every value type the tools bind (dotted names are INI sections),
// then the view settings' validation, as a tool runs them; then the resolved
// config written back as INI (to_ini) must parse again.
#include "common/cli.h"
#include "extract/view_settings.h"
#include "tests/fuzz/fuzz_util.h"

namespace po = boost::program_options;

namespace {

const evl::cli::Tool kTool{"evl_fuzz", "fuzz target", "evl_fuzz --config FILE"};

struct Extra {
  double lr = 4e-4;
  float weight_decay = 0.05f;
  int64_t steps = 1000;
  int threads = 2;
  unsigned seed = 7;
  bool verbose = false;
  std::string list;
  std::vector<int> blocks{8, 9, 10, 11};
  std::vector<std::string> inputs;
};

void add_options(po::options_description& opts, evl::ViewSettings& s, Extra& x) {
  evl::add_view_flags(opts, opts, s, evl::ViewTool::kExtract);
  opts.add_options()("train.lr", po::value(&x.lr)->default_value(x.lr), "")(
      "train.weight-decay", po::value(&x.weight_decay)->default_value(x.weight_decay), "")(
      "train.steps", po::value(&x.steps)->default_value(x.steps), "")(
      "threads", po::value(&x.threads)->default_value(x.threads), "")(
      "seed", po::value(&x.seed)->default_value(x.seed), "")("verbose", po::bool_switch(&x.verbose),
                                                             "")("list", po::value(&x.list), "")(
      "train.blocks", po::value(&x.blocks)->multitoken(), "")("input", po::value(&x.inputs), "");
}

std::string parse(const std::string& path) {
  evl::ViewSettings s;
  Extra x;
  po::options_description opts("options");
  add_options(opts, s, x);
  po::variables_map vm;
  const char* argv[] = {"evl_fuzz", "--config", path.c_str()};
  if (!evl::cli::parse(kTool, 3, argv, opts, vm)) std::abort();  // only --help etc. return false
  EVL_FUZZ_EXPECT_ERRORS(
      evl::validate_view_settings(s, evl::ViewUse::kExtract, evl::ViewTool::kExtract));
  return evl::cli::to_ini(vm);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = evl::fuzz::write_scratch("config.ini", data, size);
  std::string resolved;
  EVL_FUZZ_EXPECT_ERRORS(resolved = parse(path));
  if (!resolved.empty()) {
    // What a run records must read back (the rerun-from-its-directory promise).
    const std::string again = evl::fuzz::write_scratch(
        "resolved.ini", reinterpret_cast<const uint8_t*>(resolved.data()), resolved.size());
    (void)parse(again);
  }
  return 0;
}
