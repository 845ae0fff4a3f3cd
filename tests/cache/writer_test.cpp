// ShardWriter durability: map growth past MDB_MAP_FULL, resume via
// contains_valid, a writer child killed with SIGKILL mid-write, and a write
// failure at commit (file-size limit standing in for a full disk) that leaves
// the committed records intact and is reported clearly.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache_test_util.h"
#include "common/check.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

// A larger manifest (C=64, grid 6 -> L=37, T=4): ~114 KiB per qk fp16 record.
Manifest medium_manifest() {
  Manifest m = tiny_manifest();
  m.backbone.width = 64;
  m.backbone.grid = 6;
  m.backbone.input_size = 96;
  m.frames = 4;
  m.temporal_views = 1;
  return m;
}

// Resumes a shard to clips [0, n): writes what is missing or invalid, then
// saves the manifest with the shard's real count. Returns the records written.
int resume(const std::string& dir, Manifest m, int n) {
  const std::string shard = "features-00000-of-00001";
  int written = 0;
  int64_t count = 0;
  {
    ShardWriter w(dir + "/" + shard, 4);
    for (int c = 0; c < n; ++c)
      if (!w.contains_valid(make_key(c, 0))) {
        w.put(synth_record(m, c, 0));
        ++written;
      }
    w.commit();
    count = w.committed_records();
  }
  m.shards = {{shard, count}};
  m.num_clips = n;
  m.save(dir);
  return written;
}

void expect_exactly(const std::string& dir, const Manifest& m, int n) {
  const CacheReader reader(dir);
  ASSERT_EQ(reader.size(), n);
  for (int c = 0; c < n; ++c) {
    ASSERT_EQ(reader.keys()[c], make_key(c, 0));
    EXPECT_EQ(reader.get(c).array("x").bytes, synth_record(m, c, 0).array("x").bytes) << c;
  }
  const VerifyReport report = verify_cache(dir);
  EXPECT_TRUE(report.ok()) << (report.bad.empty() ? "" : report.bad[0].reason);
}

}  // namespace

TEST(ShardWriter, GrowsTheMapInsteadOfFailing) {
  TempDir dir("growth");
  const Manifest m = medium_manifest();
  ShardWriter::Options opt;
  opt.batch_records = 16;
  opt.initial_map_bytes = 256 * 1024;  // two records fill it
  {
    ShardWriter w(dir / "features-00000-of-00001", opt);
    for (int c = 0; c < 40; ++c) w.put(synth_record(m, c, 0));
    w.commit();
    EXPECT_EQ(w.committed_records(), 40);
    EXPECT_GT(w.bytes_written(), 40u * 100000u);
  }
  Manifest done = m;
  done.shards = {{"features-00000-of-00001", 40}};
  done.save(dir.str());
  expect_exactly(dir.str(), m, 40);
}

TEST(ShardWriter, ResumeSkipsValidRecordsAndReplacesBadOnes) {
  TempDir dir("resume");
  const Manifest m = medium_manifest();
  EXPECT_EQ(resume(dir.str(), m, 10), 10);
  EXPECT_EQ(resume(dir.str(), m, 10), 0);  // nothing to do
  EXPECT_EQ(resume(dir.str(), m, 15), 5);
  // A damaged record (flipped byte) is not valid: resume rewrites just that one.
  auto bad = encode_record(synth_record(m, 4, 0));
  bad[bad.size() / 2] ^= 1;
  poke(dir / "features-00000-of-00001", make_key(4, 0), bad);
  EXPECT_EQ(resume(dir.str(), m, 15), 1);
  expect_exactly(dir.str(), m, 15);
}

TEST(ShardWriter, SurvivesSigkillMidWrite) {
  const Manifest m = medium_manifest();
  for (int delay_ms : {30, 120, 400}) {
    SCOPED_TRACE(delay_ms);
    TempDir dir("kill9");
    const std::string shard = dir / "features-00000-of-00001";
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: writes forever in small batches; never returns normally.
      try {
        ShardWriter w(shard, 3);
        for (int c = 0; c < 100000; ++c) w.put(synth_record(m, c % 60, 0));
      } catch (...) {
      }
      _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer finished before it was killed";
    resume(dir.str(), m, 60);
    expect_exactly(dir.str(), m, 60);
  }
}

TEST(ShardWriter, WriteFailureAtCommitKeepsCommittedRecords) {
  TempDir dir("diskfull");
  const Manifest m = medium_manifest();
  const std::string shard = dir / "features-00000-of-00001";
  const std::string msg_file = dir / "message.txt";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: data.mdb may not grow past 2 MiB, like a disk that fills up.
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{2 << 20, 2 << 20};
    setrlimit(RLIMIT_FSIZE, &lim);
    int code = 2;
    std::string message = "no error";
    try {
      ShardWriter w(shard, 4);
      for (int c = 0; c < 60; ++c) w.put(synth_record(m, c, 0));
      w.commit();
    } catch (const evl::Error& e) {
      message = e.what();
      code = 3;
    }
    std::ofstream(msg_file) << message;
    _exit(code);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 3) << "the write limit was never hit";
  std::ifstream in(msg_file);
  const std::string message((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(message.find(shard), std::string::npos) << message;
  EXPECT_NE(message.find("committing a batch"), std::string::npos) << message;
  EXPECT_NE(message.find("intact"), std::string::npos) << message;

  // What was committed before the failure is all there and valid; resume finishes.
  int64_t committed = 0;
  {
    ShardWriter w(shard, 4);
    committed = w.committed_records();
  }
  EXPECT_GT(committed, 0);
  EXPECT_LT(committed, 60);
  EXPECT_EQ(committed % 4, 0);  // whole batches only
  EXPECT_EQ(resume(dir.str(), m, 60), 60 - committed);
  expect_exactly(dir.str(), m, 60);
}
