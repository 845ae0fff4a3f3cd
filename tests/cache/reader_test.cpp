// CacheReader over several shards: sorted keys, clips, lookups by key and
// index, shuffled epochs that visit every record exactly once, and concurrent
// reads from threads and from processes compared with the known records.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include "cache/cache.h"
#include "cache_test_util.h"
#include "common/check.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

// Three shards holding interleaved clips, like three array-job tasks.
void write_three_shards(const std::string& dir, const Manifest& base, int clips) {
  Manifest m = base;
  m.num_clips = clips;
  for (int s = 0; s < 3; ++s) {
    const std::string name = shard_name(s, 3);
    int64_t n = 0;
    {
      ShardWriter w(dir + "/" + name, 4);
      for (int c = s; c < clips; c += 3)
        for (int v = 0; v < m.views_per_clip(); ++v, ++n) w.put(synth_record(m, c, v));
    }
    m.shards.push_back({name, n});
  }
  m.save(dir);
}

bool same(const Record& a, const Record& b) {
  if (a.key != b.key || a.arrays.size() != b.arrays.size()) return false;
  for (size_t i = 0; i < a.arrays.size(); ++i)
    if (a.arrays[i].second.bytes != b.arrays[i].second.bytes) return false;
  return true;
}

}  // namespace

TEST(CacheReader, KeysClipsAndLookupsSpanAllShards) {
  TempDir dir("reader");
  const Manifest m = tiny_manifest();
  write_three_shards(dir.str(), m, 10);
  const CacheReader reader(dir.str());
  ASSERT_EQ(reader.size(), 20);
  ASSERT_EQ(reader.clips().size(), 10u);
  for (int c = 0; c < 10; ++c) {
    const auto& clip = reader.clips()[c];
    EXPECT_EQ(clip.clip_index, c);
    EXPECT_EQ(clip.video_id, "videos/clip_" + std::to_string(c) + ".mp4");
    EXPECT_EQ(clip.label, c % 7);
    ASSERT_EQ(clip.records, (std::vector<int64_t>{2 * c, 2 * c + 1}));
    EXPECT_EQ(reader.keys()[2 * c + 1], make_key(c, 1));
    EXPECT_EQ(reader.shard_of(2 * c), shard_name(c % 3, 3));
  }
  EXPECT_TRUE(same(reader.get(make_key(7, 1)), synth_record(m, 7, 1)));
  Record reused;
  for (int64_t i : {3, 15, 4}) {
    reader.get_into(i, reused);
    EXPECT_TRUE(same(reused, synth_record(m, i / 2, static_cast<int32_t>(i % 2))));
    EXPECT_EQ(reused.view_index, i % 2);
  }
  EXPECT_EQ(reader.index_of(make_key(7, 1)), 15);
  EXPECT_EQ(reader.index_of(make_key(70, 1)), -1);
  EXPECT_THROW(reader.get(make_key(70, 1)), evl::Error);
  EXPECT_THROW(reader.get(20), evl::Error);
  // A trainer configured for other features refuses the cache, naming the field.
  Manifest wanted = m;
  wanted.layers = {8, 9, 10, 11};
  try {
    check_matches(wanted, reader.manifest(), "cache '" + dir.str() + "'");
    FAIL();
  } catch (const evl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'layers'"), std::string::npos);
  }
}

TEST(CacheReader, EpochsArePermutationsReproducibleFromSeed) {
  TempDir dir("epochs");
  write_three_shards(dir.str(), tiny_manifest(), 50);
  const CacheReader reader(dir.str());
  const int64_t n = reader.size();
  std::set<std::vector<int64_t>> distinct;
  for (int64_t epoch = 0; epoch < 5; ++epoch) {
    const auto order = reader.epoch_order(1234, epoch);
    ASSERT_EQ(static_cast<int64_t>(order.size()), n);
    std::vector<int> visits(n, 0);
    for (int64_t i : order) {
      ASSERT_TRUE(i >= 0 && i < n);
      ++visits[i];
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[i], 1) << "record " << i;
    EXPECT_EQ(order, reader.epoch_order(1234, epoch));  // same seed+epoch, same order
    distinct.insert(order);
    // Shuffled: records of neighbouring positions come from mixed shards.
    int same_shard_runs = 0;
    for (int64_t i = 1; i < n; ++i)
      same_shard_runs += reader.shard_of(order[i]) == reader.shard_of(order[i - 1]);
    EXPECT_LT(same_shard_runs, n / 2);
  }
  EXPECT_EQ(distinct.size(), 5u);
  EXPECT_NE(reader.epoch_order(1, 0), reader.epoch_order(2, 0));
}

TEST(CacheReader, ConcurrentThreadsAndProcessesReadTheSameBytes) {
  TempDir dir("concurrent");
  const Manifest m = tiny_manifest(StorageMode::kCompact, DType::kBF16, true);
  write_three_shards(dir.str(), m, 12);
  std::vector<Record> want;
  for (int c = 0; c < 12; ++c)
    for (int v = 0; v < 2; ++v) want.push_back(synth_record(m, c, v));

  // Processes first: LMDB wants fork() before the parent opens the environment.
  std::vector<pid_t> kids;
  for (int p = 0; p < 3; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 0;
      try {
        const CacheReader r(dir.str());
        for (int64_t i : r.epoch_order(p, 0))
          if (!same(r.get(i), want[i])) code = 1;
      } catch (...) {
        code = 2;
      }
      _exit(code);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }

  CacheReader::Options opt;
  opt.no_readahead = true;
  const CacheReader reader(dir.str(), opt);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep)
        for (int64_t i : reader.epoch_order(t, rep)) {
          if (!same(reader.get(i), want[i])) ++bad;
          reader.with_record(i, [&](const RecordView& r) {
            if (r.key != want[i].key) ++bad;
          });
        }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}
