// The command-line contract of every evl executable in bin/ (common/cli.h):
// --help and --version print to stdout and exit 0; an unknown
// flag exits 2 with `error: ...` on stderr and nothing on stdout; --print-config
// prints the resolved options and exits 0, and with a config file holding an
// unknown key exits 2 naming the file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "evl/version.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

using Result = evl::test::Exec;

Result run(const std::string& exe, const std::string& args) {
  return evl::test::run("'" + exe + "' " + args + " </dev/null", fs::temp_directory_path());
}

std::vector<fs::path> tools() {
  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(EVL_TOOLS_DIR)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("evl_", 0) == 0 && name.find("_test") == std::string::npos &&
        (e.status().permissions() & fs::perms::owner_exec) != fs::perms::none)
      found.push_back(e.path());
  }
  return found;
}

}  // namespace

TEST(Tools, EveryToolHonoursHelpVersionAndBadFlags) {
  const auto all = tools();
  if (all.empty()) GTEST_SKIP() << "no evl_* tools built in " << EVL_TOOLS_DIR;
  for (const auto& exe : all) {
    SCOPED_TRACE(exe.filename().string());
    const Result help = run(exe.string(), "--help");
    EXPECT_EQ(help.code, 0) << help.err;
    EXPECT_NE(help.out.find("usage:"), std::string::npos) << help.out;
    EXPECT_NE(help.out.find("--config"), std::string::npos) << help.out;

    const Result version = run(exe.string(), "--version");
    EXPECT_EQ(version.code, 0) << version.err;
    EXPECT_NE(version.out.find(EVL_VERSION), std::string::npos) << version.out;

    const Result bad = run(exe.string(), "--definitely-not-a-flag");
    EXPECT_EQ(bad.code, 2) << bad.out << bad.err;
    EXPECT_EQ(bad.err.rfind("error: ", 0), 0u) << bad.err;
    EXPECT_TRUE(bad.out.empty()) << bad.out;

    // A dry run needs none of the tool's inputs: it only resolves the options.
    const Result dry = run(exe.string(), "--print-config");
    EXPECT_EQ(dry.code, 0) << dry.err;
    EXPECT_EQ(dry.out.rfind("# resolved configuration", 0), 0u) << dry.out;
    EXPECT_NE(dry.out.find(" = "), std::string::npos) << dry.out;

    const fs::path bad_ini = fs::temp_directory_path() / "evl_tools_test_bad.ini";
    std::ofstream(bad_ini) << "definitely-not-a-key = 1\n";
    const Result dry_bad = run(exe.string(), "--print-config --config '" + bad_ini.string() + "'");
    EXPECT_EQ(dry_bad.code, 2) << dry_bad.out << dry_bad.err;
    EXPECT_EQ(dry_bad.err.rfind("error: config file '" + bad_ini.string() + "'", 0), 0u)
        << dry_bad.err;
    EXPECT_TRUE(dry_bad.out.empty()) << dry_bad.out;
    fs::remove(bad_ini);
  }
}
