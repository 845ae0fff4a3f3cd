// Tests the shared CLI pattern: config-file values, flag precedence, help,
// version and --print-config, usage errors and their exit codes, and the resolved-config dump.
#include "common/cli.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/check.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

struct DemoConfig {
  int frames = 8;
  double lr = 4e-4;
  std::string name = "run";
  bool flag = false;
};

const evl::cli::Tool kTool{"demo_tool", "tests the CLI", "demo_tool [options]"};

po::options_description demo_options(DemoConfig& cfg) {
  po::options_description opts("demo");
  opts.add_options()("frames", po::value(&cfg.frames)->default_value(cfg.frames), "frames")(
      "train.lr", po::value(&cfg.lr)->default_value(cfg.lr), "learning rate")(
      "name", po::value(&cfg.name)->default_value(cfg.name), "name")(
      "flag", po::bool_switch(&cfg.flag), "a switch");
  return opts;
}

bool parse(std::vector<const char*> args, DemoConfig& cfg, po::variables_map& vm) {
  args.insert(args.begin(), "demo_tool");
  auto opts = demo_options(cfg);
  return evl::cli::parse(kTool, static_cast<int>(args.size()), args.data(), opts, vm);
}

// The message of the usage error that parsing `--config path` raises ("" and a
// test failure when it raises none).
std::string config_usage_error(const fs::path& path) {
  const std::string p = path.string();
  DemoConfig cfg;
  po::variables_map vm;
  try {
    parse({"--config", p.c_str()}, cfg, vm);
  } catch (const evl::UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a usage error for " << p;
  return "";
}

fs::path write_temp(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST(Cli, DefaultsComeFromTheStruct) {
  DemoConfig cfg;
  po::variables_map vm;
  ASSERT_TRUE(parse({}, cfg, vm));
  EXPECT_EQ(cfg.frames, 8);
  EXPECT_DOUBLE_EQ(cfg.lr, 4e-4);
  EXPECT_FALSE(cfg.flag);
}

TEST(Cli, ConfigFileSectionsMapToDottedNamesAndFlagsWin) {
  const auto ini =
      write_temp("evl_cli_test.ini", "frames = 16\nname = fromfile\n[train]\nlr = 0.001\n");
  const std::string cfg_path = ini.string();
  DemoConfig cfg;
  po::variables_map vm;
  ASSERT_TRUE(parse({"--config", cfg_path.c_str(), "--frames", "32", "--flag"}, cfg, vm));
  EXPECT_EQ(cfg.frames, 32);        // flag beats file
  EXPECT_DOUBLE_EQ(cfg.lr, 0.001);  // file beats default
  EXPECT_EQ(cfg.name, "fromfile");
  EXPECT_TRUE(cfg.flag);
  fs::remove(ini);
}

TEST(Cli, ResolvedConfigRoundTripsThroughIni) {
  DemoConfig cfg;
  po::variables_map vm;
  ASSERT_TRUE(parse({"--frames", "24", "--train.lr", "0.5", "--name", "x"}, cfg, vm));
  const auto ini = write_temp("evl_cli_roundtrip.ini", evl::cli::to_ini(vm));
  const std::string cfg_path = ini.string();
  DemoConfig again;
  po::variables_map vm2;
  ASSERT_TRUE(parse({"--config", cfg_path.c_str()}, again, vm2));
  EXPECT_EQ(again.frames, 24);
  EXPECT_DOUBLE_EQ(again.lr, 0.5);
  EXPECT_EQ(again.name, "x");
  fs::remove(ini);
}

TEST(Cli, UnknownFlagIsAUsageError) {
  DemoConfig cfg;
  po::variables_map vm;
  EXPECT_THROW(parse({"--no-such-flag"}, cfg, vm), evl::UsageError);
  EXPECT_THROW(parse({"--frames", "eight"}, cfg, vm), evl::UsageError);
}

TEST(Cli, UnknownKeyInConfigNamesTheFile) {
  const auto ini = write_temp("evl_cli_bad.ini", "framez = 3\n");
  const std::string e = config_usage_error(ini);
  EXPECT_NE(e.find("evl_cli_bad.ini"), std::string::npos) << e;
  fs::remove(ini);
}

TEST(Cli, MissingConfigFileIsAUsageError) {
  DemoConfig cfg;
  po::variables_map vm;
  EXPECT_THROW(parse({"--config", "/nonexistent/x.ini"}, cfg, vm), evl::UsageError);
}

TEST(Cli, RunMapsExceptionsToExitCodes) {
  EXPECT_EQ(evl::cli::run(kTool, [] { return 0; }), 0);
  EXPECT_EQ(evl::cli::run(kTool, []() -> int { throw evl::UsageError("bad"); }), 2);
  EXPECT_EQ(evl::cli::run(kTool, []() -> int { throw evl::Error("broken"); }), 1);
  EXPECT_EQ(evl::cli::run(kTool, []() -> int { throw std::runtime_error("x"); }), 1);
}

TEST(Cli, PrintConfigPrintsTheResolvedOptionsAndStops) {
  const auto ini = write_temp("evl_cli_print.ini", "frames = 16\n[train]\nlr = 0.001\n");
  const std::string cfg_path = ini.string();
  DemoConfig cfg;
  po::variables_map vm;
  testing::internal::CaptureStdout();
  const bool go_on =
      parse({"--config", cfg_path.c_str(), "--name", "cli", "--print-config"}, cfg, vm);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_FALSE(go_on);  // the tool exits 0 without running
  // File values, flag values and defaults, as INI; the dry-run flag itself is not an option.
  EXPECT_NE(out.find("frames = 16\n"), std::string::npos) << out;
  EXPECT_NE(out.find("name = cli\n"), std::string::npos) << out;
  EXPECT_NE(out.find("flag = false\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[train]\nlr = 0.001\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("print-config"), std::string::npos) << out;
  EXPECT_EQ(out.find("config ="), std::string::npos) << out;
  fs::remove(ini);
}

TEST(Cli, PrintConfigWithABadKeyExitsTwoNamingTheFile) {
  // A dry run checks the file like a real run: an unknown key is a usage error
  // (exit 2, `error: config file '<path>': ...` on stderr) and nothing is printed.
  const auto ini = write_temp("evl_cli_print_bad.ini", "frames = 16\nframez = 3\n");
  const std::string cfg_path = ini.string();
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int code = evl::cli::run(kTool, [&] {
    DemoConfig cfg;
    po::variables_map vm;
    if (!parse({"--print-config", "--config", cfg_path.c_str()}, cfg, vm)) return 0;
    return 42;  // would be the real run
  });
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, evl::cli::kExitUsage);
  EXPECT_EQ(err.rfind("error: config file '" + cfg_path + "'", 0), 0u) << err;
  EXPECT_NE(err.find("framez"), std::string::npos) << err;
  EXPECT_TRUE(out.empty()) << out;

  // A malformed value is a usage error too.
  const auto ini2 = write_temp("evl_cli_print_badvalue.ini", "frames = eight\n");
  const std::string cfg_path2 = ini2.string();
  testing::internal::CaptureStderr();
  const int code2 = evl::cli::run(kTool, [&] {
    DemoConfig cfg;
    po::variables_map vm;
    return parse({"--print-config", "--config", cfg_path2.c_str()}, cfg, vm) ? 42 : 0;
  });
  const std::string err2 = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code2, evl::cli::kExitUsage);
  EXPECT_NE(err2.find("evl_cli_print_badvalue.ini"), std::string::npos) << err2;
  fs::remove(ini);
  fs::remove(ini2);
}

TEST(Check, MessagesConcatenatePieces) {
  try {
    EVL_CHECK(1 + 1 == 3, "shard '", "features-00001-of-00002", "': record ", 42, " bad");
    FAIL();
  } catch (const evl::Error& e) {
    EXPECT_STREQ(e.what(), "shard 'features-00001-of-00002': record 42 bad");
  }
}

TEST(Cli, HelpPrintsDefaultsAsTheirShortestRoundTripText) {
  // Boost's own text for these defaults is 0.00040000000000000002 (double)
  // and 0.0500000007 (float); the descriptions stay in one column.
  double lr = 4e-4, tiny = 1e-300, third = 1.0 / 3;
  float wd = 0.05f;
  int frames = 8;
  po::options_description opts("demo");
  opts.add_options()("lr", po::value(&lr)->default_value(lr), "learning rate")(
      "weight-decay", po::value(&wd)->default_value(wd), "weight decay")(
      "tiny", po::value(&tiny)->default_value(tiny), "a tiny value")(
      "third", po::value(&third)->default_value(third), "a third")(
      "frames", po::value(&frames)->default_value(frames), "frame count");
  std::ostringstream boost_text;
  boost_text << opts;
  ASSERT_NE(boost_text.str().find("0.00040000000000000002"), std::string::npos)
      << "Boost no longer prints 17 digits; this test's premise changed:\n"
      << boost_text.str();
  const std::string help = evl::cli::shorten_defaults(boost_text.str(), {"weight-decay"});
  EXPECT_NE(help.find("--lr arg (=0.0004)"), std::string::npos) << help;
  EXPECT_NE(help.find("(=0.05)"), std::string::npos) << help;
  EXPECT_NE(help.find("(=1e-300)"), std::string::npos) << help;
  EXPECT_NE(help.find("(=0.3333333333333333)"), std::string::npos) << help;  // needs 16 digits
  EXPECT_NE(help.find("(=8)"), std::string::npos) << help;
  // Same description column on every line as Boost's.
  auto column = [](const std::string& text, const std::string& desc) {
    const auto at = text.find(desc);
    return at - text.rfind('\n', at);
  };
  for (const char* desc :
       {"learning rate", "weight decay", "a tiny value", "a third", "frame count"})
    EXPECT_EQ(column(help, desc), column(boost_text.str(), desc)) << desc << "\n" << help;
  // The shortest text reads back as the same value.
  EXPECT_EQ(std::stod(evl::cli::shortest(third)), third);
  EXPECT_EQ(evl::cli::shortest(4e-4), "0.0004");
  EXPECT_EQ(evl::cli::shortest(1e20), "1e20");
  EXPECT_EQ(evl::cli::shortest(0.05f), "0.05");
  // A double that happens to print with 9 digits is not taken for a float.
  double exact = 1.00390625;
  po::options_description d("d");
  d.add_options()("exact", po::value(&exact)->default_value(exact), "x");
  std::ostringstream dt;
  dt << d;
  EXPECT_NE(evl::cli::shorten_defaults(dt.str()).find("(=1.00390625)"), std::string::npos);
}

TEST(Cli, ResolvedConfigKeepsDoublesExactAndVectorsAsRepeatedKeys) {
  double lr = 0.1 + 0.2;  // 0.30000000000000004: 9 digits would round it to 0.3
  std::vector<std::string> inputs;
  std::vector<int> blocks;
  po::options_description opts("demo");
  opts.add_options()("lr", po::value(&lr)->default_value(lr), "")(
      "input", po::value(&inputs)->multitoken(), "")("train.blocks",
                                                     po::value(&blocks)->multitoken(), "");
  po::variables_map vm;
  const char* argv[] = {"demo_tool", "--input", "a b.h5", "c.h5", "--train.blocks", "8", "9"};
  ASSERT_TRUE(evl::cli::parse(kTool, 7, argv, opts, vm));
  const std::string ini = evl::cli::to_ini(vm);
  EXPECT_NE(ini.find("input = a b.h5\ninput = c.h5\n"), std::string::npos) << ini;
  EXPECT_NE(ini.find("[train]\nblocks = 8\nblocks = 9\n"), std::string::npos) << ini;
  const auto path = write_temp("evl_cli_vectors.ini", ini);
  const std::string cfg_path = path.string();
  double lr2 = 0;
  std::vector<std::string> inputs2;
  std::vector<int> blocks2;
  po::options_description again("demo");
  again.add_options()("lr", po::value(&lr2)->default_value(lr2), "")(
      "input", po::value(&inputs2)->multitoken(), "")("train.blocks",
                                                      po::value(&blocks2)->multitoken(), "");
  po::variables_map vm2;
  const char* argv2[] = {"demo_tool", "--config", cfg_path.c_str()};
  ASSERT_TRUE(evl::cli::parse(kTool, 3, argv2, again, vm2));
  EXPECT_EQ(lr2, lr);  // bit-exact
  EXPECT_EQ(inputs2, inputs);
  EXPECT_EQ(blocks2, blocks);
  fs::remove(path);
}

TEST(Cli, PlaceholderInAnOptionOrValueIsAUsageErrorNotAHang) {
  // Boost 1.74 would loop forever formatting the error for these.
  const auto ini = write_temp("evl_cli_percent.ini", "[t%canonical_option%x]\nlr = 1\n");
  const std::string e1 = config_usage_error(ini);
  EXPECT_NE(e1.find("evl_cli_percent.ini' line 1"), std::string::npos) << e1;
  DemoConfig cfg;
  po::variables_map vm2;
  EXPECT_THROW(parse({"--x%canonical_option%", "1"}, cfg, vm2), evl::UsageError);
  const auto ini2 = write_temp("evl_cli_percent_value.ini", "# 50%\nframes = x%value%'\n");
  const std::string e2 = config_usage_error(ini2);
  EXPECT_NE(e2.find("evl_cli_percent_value.ini' line 2"), std::string::npos) << e2;
  po::variables_map vm4;
  EXPECT_TRUE(parse({"--name", "50% done"}, cfg, vm4));  // a lone '%' is fine
  fs::remove(ini);
  fs::remove(ini2);
}
