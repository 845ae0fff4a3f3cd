// common/atomic_file.h: contents, replacement, and that failures leave the old
// file and no temporary files behind.
#include "common/atomic_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "common/time.h"

namespace fs = std::filesystem;

namespace evl {
namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/evl_atomic_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    ::chmod(path.c_str(), 0755);
    fs::remove_all(path);
  }
};

size_t entries(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(AtomicFile, WritesAndReplacesWithNothingLeftOver) {
  TempDir t;
  const std::string p = (t.path / "a.json").string();
  write_file_atomic(p, "first");
  EXPECT_EQ(read_file(p), "first");
  write_file_atomic(p, std::string("sec\0nd", 6));  // binary-safe
  EXPECT_EQ(read_file(p), std::string("sec\0nd", 6));
  write_file_atomic(p, "");
  EXPECT_EQ(read_file(p), "");
  EXPECT_EQ(entries(t.path), 1u);
}

TEST(AtomicFile, FailureNamesThePathAndKeepsTheOldFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  TempDir t;
  const std::string p = (t.path / "keep.txt").string();
  write_file_atomic(p, "old");
  ::chmod(t.path.c_str(), 0555);
  try {
    write_file_atomic(p, "new");
    FAIL() << "wrote into a read-only folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  ::chmod(t.path.c_str(), 0755);
  EXPECT_EQ(read_file(p), "old");
  EXPECT_EQ(entries(t.path), 1u);
}

TEST(AtomicFile, MissingFolderIsAnError) {
  EXPECT_THROW(write_file_atomic("/nonexistent-evl-dir/x.txt", "x"), Error);
}

TEST(AtomicFile, UncommittedWriterLeavesNothingAndCommitReplaces) {
  TempDir t;
  const std::string p = (t.path / "s.h5").string();
  write_file_atomic(p, "old");
  {
    AtomicFile f(p);
    std::ofstream(f.temp_path()) << "half-written";
    EXPECT_EQ(read_file(p), "old");  // not visible before commit
  }
  EXPECT_EQ(read_file(p), "old");
  EXPECT_EQ(entries(t.path), 1u);
  {
    AtomicFile f(p);
    std::ofstream(f.temp_path()) << "new";
    f.commit();
  }
  EXPECT_EQ(read_file(p), "new");
  EXPECT_EQ(entries(t.path), 1u);
  AtomicFile never_written((t.path / "n").string());
  EXPECT_THROW(never_written.commit(), Error);
}

TEST(AtomicFile, ReadFileRefusesWhatIsNotAFile) {
  TempDir t;
  EXPECT_THROW(read_file((t.path / "missing").string()), Error);
  EXPECT_THROW(read_file(t.path.string()), Error);  // a directory
  const std::string fifo = (t.path / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  EXPECT_THROW(read_file(fifo), Error);  // would block forever if opened
}

TEST(Time, Iso8601Utc) {
  const std::string t = utc_now_iso8601();
  ASSERT_EQ(t.size(), 20u) << t;
  EXPECT_EQ(t[4], '-');
  EXPECT_EQ(t[10], 'T');
  EXPECT_EQ(t.back(), 'Z');
}

}  // namespace
}  // namespace evl
