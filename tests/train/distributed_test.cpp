// train/distributed.h in one process: where a rank stands (torchrun, srun,
// flags), and a real c10d group (TCPStore + Gloo over loopback) of W ranks as
// W threads: bucketed sums against exact integer sums, the broadcast, the
// divergence check, and sharded validation (score_clips) against one process
// bit for bit. The multi-process trainer: tests/train/distributed_ranks_test.py.
#include "train/distributed.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <thread>

#include "train/scoring.h"

using namespace evl;

namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    const auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t n = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  close(fd);
  return ntohs(a.sin_port);
}

// Runs fn(rank, group) on `world` threads, each a rank of one group.
void with_group(int world, const std::function<void(int, Distributed&)>& fn) {
  const int port = free_port();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(world);
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        DistFlags f;
        f.rank = r, f.world_size = world, f.master_addr = "127.0.0.1", f.master_port = port;
        f.timeout_s = 60;
        Distributed d(resolve_dist_env(f, env_of({})), "same config", torch::kCPU);
        fn(r, d);
        d.finish();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

// A feature source of random features: `clips` clips of `views` views each.
class RandomSource : public FeatureSource {
 public:
  RandomSource(int64_t clips, int64_t views, const HeadConfig& h) : h_(h) {
    torch::manual_seed(5);
    for (int64_t c = 0; c < clips; ++c) {
      EpochSampler::Clip clip;
      clip.clip_index = c;
      for (int64_t v = 0; v < views; ++v) {
        clip.items.push_back(static_cast<int64_t>(x_.size()));
        x_.push_back(torch::randn({h.decoder_layers, h.frames, h.tokens(), h.width}));
        labels_.push_back(c % 3 == 2 ? -1 : c % h.num_classes);  // some clips unlabelled
      }
      clips_.push_back(clip);
    }
  }
  const cache::Manifest& manifest() const override { return manifest_; }
  int64_t layers() const override { return h_.decoder_layers; }
  int64_t size() const override { return static_cast<int64_t>(x_.size()); }
  int64_t max_label() const override { return h_.num_classes - 1; }
  std::string where() const override { return "random source"; }
  const std::vector<EpochSampler::Clip>& clips() const override { return clips_; }
  std::string item_name(int64_t item) const override { return std::to_string(item); }
  std::vector<int64_t> train_batch(uint64_t, int64_t, int64_t) const override { return {}; }
  uint64_t bytes_read() const override { return 0; }
  FeatureBatch load(const std::vector<int64_t>& items) const override {
    FeatureBatch b;
    std::vector<torch::Tensor> rows;
    std::vector<int64_t> labels;
    for (const int64_t i : items) rows.push_back(x_[i]), labels.push_back(labels_[i]);
    const auto x = torch::stack(rows);  // (B, M, T, L, C)
    for (int64_t m = 0; m < h_.decoder_layers; ++m) {
      const auto xm = x.select(1, m).contiguous();
      b.x.push_back(xm), b.q.push_back(xm * 0.5), b.k.push_back(xm * -0.25);
    }
    b.labels = torch::tensor(labels, torch::kInt64);
    b.clip_index = items;
    return b;
  }

 private:
  HeadConfig h_;
  cache::Manifest manifest_;
  std::vector<EpochSampler::Clip> clips_;
  std::vector<torch::Tensor> x_;
  std::vector<int64_t> labels_;
};

}  // namespace

TEST(DistEnv, SingleProcessWithoutVariables) {
  const auto d = resolve_dist_env({}, env_of({}));
  EXPECT_EQ(d.world_size, 1);
  EXPECT_FALSE(d.distributed());
}

TEST(DistEnv, TorchrunVariables) {
  const auto d = resolve_dist_env({}, env_of({{"RANK", "3"},
                                              {"WORLD_SIZE", "8"},
                                              {"LOCAL_RANK", "1"},
                                              {"MASTER_ADDR", "node7"},
                                              {"MASTER_PORT", "29123"}}));
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(d.world_size, 8);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.master_addr, "node7");
  EXPECT_EQ(d.master_port, 29123);
  EXPECT_EQ(d.source, "torchrun variables");
}

TEST(DistEnv, SrunVariablesAndTheirPort) {
  const std::map<std::string, std::string> step = {
      {"SLURM_PROCID", "5"},    {"SLURM_STEP_NUM_TASKS", "6"},
      {"SLURM_LOCALID", "2"},   {"SLURM_STEP_NODELIST", "gpu[012-013,20]"},
      {"SLURM_JOB_ID", "4242"}, {"SLURM_STEP_ID", "1"}};
  const auto d = resolve_dist_env({}, env_of(step));
  EXPECT_EQ(d.rank, 5);
  EXPECT_EQ(d.world_size, 6);
  EXPECT_EQ(d.local_rank, 2);
  EXPECT_EQ(d.master_addr, "gpu012");
  EXPECT_EQ(d.master_port, 20000 + (4242 * 131 + 1) % 40000);
  EXPECT_EQ(d.source, "Slurm (srun)");
  // Every task of the step derives the same port; another step another one.
  auto other = step;
  other["SLURM_STEP_ID"] = "2";
  EXPECT_NE(resolve_dist_env({}, env_of(other)).master_port, d.master_port);
}

TEST(DistEnv, ABatchScriptIsOneProcess) {
  // sbatch --ntasks 4 sets SLURM_NTASKS and SLURM_PROCID for the batch script,
  // which is one process: only srun's step task count makes ranks.
  const auto d = resolve_dist_env(
      {}, env_of({{"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "0"}, {"SLURM_JOB_ID", "9"}}));
  EXPECT_EQ(d.world_size, 1);
}

TEST(DistEnv, FlagsOverrideTheEnvironment) {
  DistFlags f;
  f.rank = 1, f.master_port = 31000;
  const auto d = resolve_dist_env(f, env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}));
  EXPECT_EQ(d.rank, 1);
  EXPECT_EQ(d.world_size, 2);
  EXPECT_EQ(d.master_port, 31000);
  EXPECT_EQ(d.source, "torchrun variables and flags");
}

TEST(DistEnv, BadValuesAreUsageErrorsNamingTheSource) {
  auto message = [](const DistFlags& f, std::map<std::string, std::string> v) {
    try {
      resolve_dist_env(f, env_of(std::move(v)));
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({}, {{"WORLD_SIZE", "two"}}).find("WORLD_SIZE = 'two'"), std::string::npos);
  EXPECT_NE(message({}, {{"WORLD_SIZE", "2"}, {"RANK", "2"}}).find("outside the world of 2"),
            std::string::npos);
  EXPECT_NE(message({}, {{"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}).find("MASTER_PORT"),
            std::string::npos);
  DistFlags f;
  f.timeout_s = 0;
  EXPECT_NE(message(f, {}).find("--dist-timeout"), std::string::npos);
  f = {};
  f.world_size = 0;
  EXPECT_NE(message(f, {}).find("--world-size"), std::string::npos);
}

TEST(DistEnv, FirstSlurmHost) {
  EXPECT_EQ(first_slurm_host("localhost"), "localhost");
  EXPECT_EQ(first_slurm_host("a1,b2"), "a1");
  EXPECT_EQ(first_slurm_host("node[03-05,9],gpu1"), "node03");
  EXPECT_EQ(first_slurm_host("rack[7,2]-n[1-2]"), "rack7-n[1-2]");
  EXPECT_THROW(first_slurm_host("node[1-2"), UsageError);
}

TEST(Distributed, BucketedSumsAreExactAndIdenticalOnEveryRank) {
  constexpr int kWorld = 3;
  with_group(kWorld, [](int rank, Distributed& d) {
    // Integer-valued floats: every order of summation gives the exact sum.
    std::vector<torch::Tensor> ts = {
        torch::full({1000}, rank + 1.0), torch::arange(12, torch::kFloat).view({3, 4}) * (rank + 1),
        torch::full({7}, int64_t(10) * rank, torch::kInt64), torch::full({300, 5}, -2.0 * rank)};
    // 2 KiB buckets: the 4 KB tensor is a bucket alone, dtypes never share one.
    d.start_sum(ts, "test sum", 2048).wait();
    EXPECT_TRUE(torch::equal(ts[0], torch::full({1000}, 6.0)));
    EXPECT_TRUE(torch::equal(ts[1], torch::arange(12, torch::kFloat).view({3, 4}) * 6));
    EXPECT_TRUE(torch::equal(ts[2], torch::full({7}, int64_t(30), torch::kInt64)));
    EXPECT_TRUE(torch::equal(ts[3], torch::full({300, 5}, -6.0)));
    auto b = torch::full({4}, 10.0 + rank);
    d.broadcast_from_root({b}, "test broadcast");
    EXPECT_TRUE(torch::equal(b, torch::full({4}, 10.0)));
    d.check_identical({b}, "the broadcast values");
    // Different values on rank 2: every rank learns that they diverged.
    auto c = torch::full({4}, rank == 2 ? 1.0 : 0.0);
    try {
      d.check_identical({c}, "test values");
      ADD_FAILURE() << "rank " << rank << ": no divergence found";
    } catch (const DistributedError& e) {
      EXPECT_NE(std::string(e.what()).find("rank 0 and rank 2"), std::string::npos) << e.what();
    }
  });
}

TEST(Distributed, ShardedValidationIsTheSingleProcessResult) {
  HeadConfig h;
  h.width = 16, h.heads = 2, h.decoder_layers = 2, h.frames = 3, h.grid = 2, h.num_classes = 4;
  const RandomSource data(11, 3, h);  // 33 items: batches of 4 split unevenly over ranks
  torch::manual_seed(1);
  EvlHead reference(h);
  const auto single = score_clips(reference, data, 4, torch::kCPU, FuseMode::kProbabilities);
  ASSERT_EQ(single.num_clips(), 11);
  for (const int world : {2, 3}) {
    std::vector<EvlHead> heads;
    for (int r = 0; r < world; ++r) {
      heads.emplace_back(h);
      torch::NoGradGuard g;
      auto dst = heads.back()->parameters();
      auto src = reference->parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    }
    with_group(world, [&](int rank, Distributed& d) {
      const auto s =
          score_clips(heads[rank], data, 4, torch::kCPU, FuseMode::kProbabilities, nullptr, &d);
      EXPECT_EQ(s.scores, single.scores) << "world " << world << " rank " << rank;
      EXPECT_EQ(s.labels, single.labels);
      EXPECT_EQ(s.views, single.views);
      EXPECT_EQ(s.clip_index, single.clip_index);
    });
  }
}
