// End-to-end tests of evl_extract (the executable, run as a child process) on a
// generated motion dataset, the real videos in shared/, and broken files, with
// the tiny CLIP-shaped backbone fixture. References are independent of the
// pipeline: a direct backbone forward on the stored preprocessed inputs, the
// same job run serially / unsharded, an fp32 extraction for int8/fp8 ones, and
// LMDB's own view after kill -9.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "cache/cache.h"
#include "extract/clip_vit.h"
#include "extract/weights.h"
#include "tests/support/quant_reference.h"
#include "tests/support/rounding_budget.h"
#include "tests/support/test_support.h"
#include "tests/support/torch_support.h"

namespace fs = std::filesystem;

namespace {

const std::string kBackbone = evl::test::tiny_backbone();
const std::string kExtract = evl::test::tool("evl_extract");
const std::string kCacheTool = evl::test::tool("evl_cache");

using evl::test::f32_tensor;
using evl::test::rel_max_error;
using evl::test::sh;
using evl::test::slurp;

// A shared motion dataset for the whole suite (generated once).
class ExtractTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("evl_extract_test_" + std::to_string(getpid()));
    fs::create_directories(root_);
    const std::string cmd = std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                            "/scripts/make_motion_dataset.py --out " + (root_ / "data").string() +
                            " --classes 4 --per-class 3 --frames 20 --size 48x40 --seed 7 "
                            "--split-ratio 1.0 >/dev/null";
    ASSERT_EQ(sh(cmd), 0) << cmd;
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // Runs evl_extract on the motion list with extra flags; returns the exit code.
  static int extract(const fs::path& out, const std::string& flags, const std::string& list = "") {
    const std::string l = list.empty() ? (root_ / "data" / "train.txt").string() : list;
    const std::string cmd = kExtract + " --list " + l + " --root " + (root_ / "data").string() +
                            " --backbone " + kBackbone + " --out " + out.string() +
                            " --frames 4 --stride 3 --layers last2 " + flags + " >" +
                            (out.string() + ".log") + " 2>&1";
    return sh(cmd);
  }

  // Every record's arrays, by key, as raw bytes (the cache's own encoding).
  static std::map<std::string, std::string> all_records(const fs::path& dir) {
    evl::cache::CacheReader reader(dir.string());
    std::map<std::string, std::string> out;
    for (int64_t i = 0; i < reader.size(); ++i) {
      const evl::cache::Record r = reader.get(i);
      std::string blob = r.video_id + "|" + std::to_string(r.label) + "|" + r.view;
      for (const auto& [name, a] : r.arrays)
        blob += name + std::string(a.bytes.begin(), a.bytes.end());
      out[r.key] = blob;
    }
    return out;
  }

  static fs::path root_;
};

fs::path ExtractTest::root_;

}  // namespace

TEST_F(ExtractTest, RecordsMatchADirectBackboneForwardOnTheStoredInputs) {
  const fs::path out = root_ / "direct";
  ASSERT_EQ(extract(out, "--dtype fp32 --save-inputs --temporal-views 2 --spatial-views 3"), 0)
      << slurp(out.string() + ".log");
  evl::cache::CacheReader reader(out.string());
  EXPECT_EQ(reader.manifest().views_per_clip(), 6);
  EXPECT_EQ(reader.size(), 12 * 6);
  EXPECT_EQ(reader.clips().size(), 12u);

  evl::LoadedBackbone bb = evl::load_backbone(kBackbone);
  const auto blocks = evl::resolve_blocks("last2", bb.arch.depth);
  // Both sides are float32 forwards of the same backbone on the same inputs (in
  // other batches): each within the forward rounding budget of the exact features.
  const auto& a = bb.arch;
  const double tol = 2 * evl::test::vit_rounding_budget(a.depth, a.width, a.patch, a.tokens()) *
                     evl::test::unit_roundoff(torch::kFloat);
  for (int64_t i = 0; i < reader.size(); i += 5) {
    const evl::cache::Record r = reader.get(i);
    const torch::Tensor inputs = f32_tensor(r.array("inputs"));  // (T, 3, S, S)
    ASSERT_EQ(inputs.size(0), 4);
    const evl::BackboneOutput ref = bb.model->forward(inputs, blocks);
    const torch::Tensor x = f32_tensor(r.array("x")), q = f32_tensor(r.array("q")),
                        k = f32_tensor(r.array("k"));  // (M, T, L, C)
    for (size_t m = 0; m < blocks.size(); ++m) {
      EXPECT_LE(rel_max_error(x[m], ref.layers[m].x), tol) << r.key;
      EXPECT_LE(rel_max_error(q[m], ref.layers[m].q), tol) << r.key;
      EXPECT_LE(rel_max_error(k[m], ref.layers[m].k), tol) << r.key;
    }
  }
}

TEST_F(ExtractTest, OneAndTwoThreadsWriteIdenticalRecords) {
  const fs::path a = root_ / "t1", b = root_ / "t2";
  ASSERT_EQ(extract(a, "--threads 1 --train-views 2 --seed 5 --batch-size 3"), 0);
  ASSERT_EQ(extract(b, "--threads 2 --train-views 2 --seed 5 --batch-size 3"), 0);
  const auto ra = all_records(a), rb = all_records(b);
  EXPECT_EQ(ra.size(), 24u);
  EXPECT_TRUE(ra == rb);
}

TEST_F(ExtractTest, FourShardsJoinIntoTheUnshardedCache) {
  const fs::path whole = root_ / "whole", sharded = root_ / "sharded";
  ASSERT_EQ(extract(whole, "--temporal-views 2"), 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(fs::exists(sharded / "manifest.json")) << "manifest before the last shard";
    ASSERT_EQ(extract(sharded,
                      "--temporal-views 2 --shard-index " + std::to_string(i) + " --num-shards 4"),
              0);
  }
  ASSERT_TRUE(fs::exists(sharded / "manifest.json"));
  evl::cache::CacheReader r(sharded.string());
  EXPECT_EQ(r.manifest().shards.size(), 4u);
  EXPECT_TRUE(all_records(whole) == all_records(sharded));
  // And the Slurm environment picks the shard when no flag is given.
  const fs::path env = root_ / "env";
  for (int i = 0; i < 4; ++i)
    ASSERT_EQ(sh("SLURM_ARRAY_TASK_ID=" + std::to_string(i) +
                 " SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_MIN=0 " + kExtract + " --list " +
                 (root_ / "data" / "train.txt").string() + " --root " + (root_ / "data").string() +
                 " --backbone " + kBackbone + " --out " + env.string() +
                 " --frames 4 --stride 3 --layers last2 --temporal-views 2 >/dev/null 2>&1"),
              0);
  EXPECT_TRUE(all_records(whole) == all_records(env));
}

TEST_F(ExtractTest, CompactModeQKMatchesStoredQK) {
  const fs::path qk = root_ / "qk", compact = root_ / "compact";
  ASSERT_EQ(extract(qk, "--dtype fp32"), 0);
  ASSERT_EQ(extract(compact, "--dtype fp32 --store compact"), 0)
      << slurp(compact.string() + ".log");
  evl::cache::CacheReader a(qk.string()), b(compact.string());
  const evl::cache::Record w = evl::cache::load_qk_weights(compact.string());
  ASSERT_EQ(a.size(), b.size());
  const auto layers = b.manifest().layers;
  for (int64_t i = 0; i < a.size(); i += 3) {
    const auto ra = a.get(i), rb = b.get(i);
    const torch::Tensor xc = f32_tensor(rb.array("x"));  // (M+1, T, L, C)
    ASSERT_EQ(xc.size(0), static_cast<int64_t>(layers.size()) + 1);
    for (size_t m = 0; m < layers.size(); ++m) {
      const std::string s = "." + std::to_string(layers[m]);
      const auto ln =
          torch::layer_norm(xc[m], {xc.size(-1)}, f32_tensor(w.array("ln_1.weight" + s)),
                            f32_tensor(w.array("ln_1.bias" + s)), 1e-5);
      const auto q = torch::linear(ln, f32_tensor(w.array("q_proj.weight" + s)),
                                   f32_tensor(w.array("q_proj.bias" + s)));
      const auto k = torch::linear(ln, f32_tensor(w.array("k_proj.weight" + s)),
                                   f32_tensor(w.array("k_proj.bias" + s)));
      // Both float32 from the same block input: a LayerNorm and a projection
      // each (2 stages of inner products of length C, sqrt(C) u each), twice.
      const double tol = 2 * 2 * std::sqrt(static_cast<double>(xc.size(-1))) * std::ldexp(1.0, -24);
      EXPECT_LE(rel_max_error(q, f32_tensor(ra.array("q"))[m]), tol) << ra.key;
      EXPECT_LE(rel_max_error(k, f32_tensor(ra.array("k"))[m]), tol) << ra.key;
      EXPECT_TRUE(torch::equal(xc[m + 1], f32_tensor(ra.array("x"))[m])) << ra.key;
    }
  }
}

// --dtype int8 / fp8 through the executable, both storage modes: the same
// list and batches as an fp32 extraction compute the same float32 features, so
// every stored value must be within the scheme's bound (from its group's scale,
// tests/support/quant_reference.h) of the fp32 cache's; the tools read them.
TEST_F(ExtractTest, QuantizedCachesHoldTheFp32FeaturesWithinTheirBound) {
  const fs::path ref = root_ / "q_ref", ref_compact = root_ / "q_ref_compact";
  ASSERT_EQ(extract(ref, "--dtype fp32 --threads 1"), 0) << slurp(ref.string() + ".log");
  ASSERT_EQ(extract(ref_compact, "--dtype fp32 --threads 1 --store compact"), 0);
  for (const std::string dtype : {"int8", "fp8"})
    for (const std::string store : {"qk", "compact"}) {
      SCOPED_TRACE(dtype + " " + store);
      const fs::path out = root_ / ("q_" + dtype + "_" + store);
      ASSERT_EQ(extract(out, "--dtype " + dtype + " --threads 1 --store " + store), 0)
          << slurp(out.string() + ".log");
      EXPECT_EQ(sh(kCacheTool + " verify " + out.string() + " >/dev/null 2>&1"), 0);
      const std::string info = out.string() + ".info";
      EXPECT_EQ(sh(kCacheTool + " info " + out.string() + " >" + info), 0);
      EXPECT_NE(slurp(info).find(dtype + " (absmax-symmetric"), std::string::npos) << slurp(info);
      EXPECT_EQ(sh(kCacheTool + " export " + out.string() + " --h5 " + out.string() +
                   ".h5 --limit 3 >/dev/null 2>&1"),
                0);
      evl::cache::CacheReader q(out.string()), f((store == "qk" ? ref : ref_compact).string());
      ASSERT_EQ(q.size(), f.size());
      for (int64_t i = 0; i < q.size(); ++i) {
        const auto rq = q.get(i), rf = f.get(i);
        for (const auto& [name, a] : rq.arrays) {
          EXPECT_EQ(evl::cache::to_string(a.dtype), dtype);
          const auto& want = rf.array(name);
          ASSERT_EQ(want.shape, a.shape);
          EXPECT_EQ(
              evl::test::check_within_bound(a, reinterpret_cast<const float*>(want.bytes.data())),
              "")
              << rq.key << " " << name;
        }
      }
    }
  // Usage errors name the flag.
  const fs::path bad = root_ / "q_bad";
  EXPECT_EQ(extract(bad, "--dtype int4"), 2);
  EXPECT_NE(slurp(bad.string() + ".log").find("--dtype"), std::string::npos);
}

TEST_F(ExtractTest, BrokenVideosAreRecordedAndSkipped) {
  const fs::path data = root_ / "data";
  const fs::path bad = root_ / "bad";
  fs::create_directories(bad);
  std::ofstream(bad / "empty.mp4").close();
  {
    std::ofstream f(bad / "random.mp4", std::ios::binary);
    for (int i = 0; i < 5000; ++i) f.put(static_cast<char>((i * 7919) % 251));
  }
  const std::string good = slurp(data / "train.txt");
  const fs::path list = root_ / "mixed.txt";
  {
    std::ofstream l(list);
    std::istringstream in(good);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      l << line << "\n";
      if (++n == 2) l << (bad / "empty.mp4").string() << " 0\n";
      if (n == 5)
        l << (bad / "random.mp4").string() << " 1\n"
          << "no/such/file.mp4 2\n";
    }
  }
  const fs::path out = root_ / "mixed";
  EXPECT_EQ(extract(out, "", list.string()), 3) << slurp(out.string() + ".log");
  const std::string failures = slurp(out / "failures.tsv");
  int lines = 0;
  for (char c : failures) lines += c == '\n';
  EXPECT_EQ(lines, 3) << failures;
  EXPECT_NE(failures.find("empty.mp4\t3\t"), std::string::npos) << failures;
  EXPECT_NE(failures.find("random.mp4"), std::string::npos) << failures;
  EXPECT_NE(failures.find("no/such/file.mp4"), std::string::npos) << failures;
  evl::cache::CacheReader r(out.string());
  EXPECT_EQ(r.size(), 12);  // every good clip, one view each
  std::set<std::string> ids;
  for (const auto& c : r.clips()) ids.insert(c.video_id);
  EXPECT_EQ(ids.size(), 12u);
  // --max-failures aborts early with a runtime error.
  EXPECT_EQ(extract(root_ / "mixed_abort", "--max-failures 0", list.string()), 1);
}

TEST_F(ExtractTest, KilledJobResumesToExactlyOneValidRecordPerView) {
  // Nine views per clip and one commit per view-batch, so the job is killed mid-run.
  const fs::path list = root_ / "data" / "train.txt";
  const fs::path out = root_ / "killed";
  const std::string cmd = "exec " + kExtract + " --list " + list.string() + " --root " +
                          (root_ / "data").string() + " --backbone " + kBackbone + " --out " +
                          out.string() +
                          " --frames 4 --stride 3 --layers last2 --temporal-views 3 "
                          "--spatial-views 3 --batch-size 1 --threads 1 >/dev/null 2>&1";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until some records are committed, then SIGKILL mid-run.
  const fs::path data_mdb = out / evl::cache::shard_name(0, 1) / "data.mdb";
  for (int i = 0; i < 600 && !(fs::exists(data_mdb) && fs::file_size(data_mdb) > 100000); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the job finished before it could be killed";
  EXPECT_FALSE(fs::exists(out / "manifest.json"));

  ASSERT_EQ(sh(cmd.substr(5)), 0);  // rerun the same command
  EXPECT_EQ(sh(kCacheTool + " verify " + out.string() + " >/dev/null 2>&1"), 0);
  evl::cache::CacheReader r(out.string());
  EXPECT_EQ(r.size(), 12 * 9);
  std::set<std::string> keys(r.keys().begin(), r.keys().end());
  EXPECT_EQ(keys.size(), static_cast<size_t>(12 * 9));
}

TEST_F(ExtractTest, RealVideosExtract) {
  const fs::path videos = fs::path(EVL_SHARED_DIR) / "data" / "real" / "videos";
  if (!fs::exists(videos)) GTEST_SKIP() << "no real videos at " << videos;
  const fs::path list = root_ / "real.txt";
  int n = 0;
  {
    std::ofstream l(list);
    for (const auto& sub : {"action", "codecs"})
      for (const auto& e : fs::directory_iterator(videos / sub)) {
        l << sub << "/" << e.path().filename().string() << " " << n % 5 << "\n";
        ++n;
      }
  }
  const fs::path out = root_ / "real";
  const std::string cmd = kExtract + " --list " + list.string() + " --root " + videos.string() +
                          " --backbone " + kBackbone + " --out " + out.string() +
                          " --frames 8 --stride 16 --temporal-views 3 --layers last2 >" +
                          out.string() + ".log 2>&1";
  EXPECT_EQ(sh(cmd), 0) << slurp(out.string() + ".log") << slurp(out / "failures.tsv");
  evl::cache::CacheReader r(out.string());
  EXPECT_EQ(r.size(), n * 3);
}

TEST_F(ExtractTest, SigtermCommitsFinishedWorkAndExitsWithStatus4) {
  const fs::path list = root_ / "data" / "train.txt";
  const fs::path out = root_ / "terminated";
  const std::string cmd = kExtract + " --list " + list.string() + " --root " +
                          (root_ / "data").string() + " --backbone " + kBackbone + " --out " +
                          out.string() +
                          " --frames 4 --stride 3 --layers last2 --temporal-views 3 "
                          "--spatial-views 3 --batch-size 1 --threads 1";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string exec_cmd = "exec " + cmd + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", exec_cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const fs::path data_mdb = out / evl::cache::shard_name(0, 1) / "data.mdb";
  for (int i = 0; i < 600 && !(fs::exists(data_mdb) && fs::file_size(data_mdb) > 100000); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill(pid, SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  waitpid(pid, &status, 0);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 0) GTEST_SKIP() << "the job finished before SIGTERM arrived";
  EXPECT_EQ(WEXITSTATUS(status), 4);
  EXPECT_LT(waited, 10.0);
  EXPECT_FALSE(fs::exists(out / "manifest.json"));
  ASSERT_EQ(sh(cmd + " >/dev/null 2>&1"), 0);  // rerun resumes
  EXPECT_EQ(sh(kCacheTool + " verify " + out.string() + " >/dev/null 2>&1"), 0);
  evl::cache::CacheReader r(out.string());
  EXPECT_EQ(r.size(), 12 * 9);
}

TEST_F(ExtractTest, ShardsInSeparateDirectoriesMergeIntoTheUnshardedCache) {
  const fs::path whole = root_ / "whole2", parts = root_ / "parts", merged = root_ / "merged";
  ASSERT_EQ(extract(whole, "--temporal-views 2"), 0);
  std::string inputs;
  fs::create_directories(parts);
  for (int i = 0; i < 4; ++i) {
    const fs::path part = parts / ("part-" + std::to_string(i));
    ASSERT_EQ(
        extract(part, "--temporal-views 2 --shard-index " + std::to_string(i) + " --num-shards 4"),
        0);
    inputs += " " + part.string();
  }
  ASSERT_EQ(sh(kCacheTool + " merge " + merged.string() + inputs + " >/dev/null"), 0);
  EXPECT_EQ(sh(kCacheTool + " verify " + merged.string() + " >/dev/null"), 0);
  EXPECT_TRUE(all_records(whole) == all_records(merged));
}
