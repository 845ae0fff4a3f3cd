// Data-parallel head training across processes (and nodes) on torch.distributed's
// c10d, which the LibTorch we build against contains: a TCPStore for the
// rendezvous, ProcessGroupGloo for CPU tensors (ProcessGroupNCCL for CUDA where
// LibTorch was built with it). No transport of our own.
//
// Launch: the same evl_train_head command on every rank. Rank, world size and
// local rank come from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT) or, inside an `srun` job step, from Slurm's
// (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, the first host of
// SLURM_STEP_NODELIST / SLURM_JOB_NODELIST, a port derived from the job id);
// explicit flags override both. Without any of them the world size is 1 and
// nothing here is used.
//
// Failure behaviour: every collective and the rendezvous are bounded by
// --dist-timeout. A rank that never arrives, dies, or fails with an error makes
// the others throw evl::Error naming it (each rank keeps a heartbeat and leaves
// its error message in the store), never a hang.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"

namespace c10d {
class Store;
class ProcessGroup;
}  // namespace c10d

namespace evl {

// The distributed flags of evl_train_head; -1 / "" / 0: take it from the environment.
struct DistFlags {
  int64_t rank = -1, world_size = -1, local_rank = -1;
  std::string master_addr;
  int64_t master_port = 0;
  double timeout_s = 300;  // --dist-timeout: rendezvous, collectives, a lost rank
};

// What a rank throws when the group fails (a rank lost, diverged, never
// arrived): not reported to the store as this rank's own failure.
class DistributedError : public Error {
 public:
  using Error::Error;
};

// Where this process stands in the job, resolved from flags and environment.
struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  // "torchrun variables", "Slurm (srun)", "flags"
  std::chrono::milliseconds timeout{300000};
  bool distributed() const { return world_size > 1; }
};

// Environment lookup (getenv in the tool, a map in tests): nullopt when unset.
using EnvLookup = std::function<const char*(const char*)>;

// Resolves rank/world/addr/port. Throws evl::UsageError for inconsistent values
// (rank outside [0, world), a port outside 1..65535, a malformed variable,
// naming the variable or flag).
DistEnv resolve_dist_env(const DistFlags& flags, const EnvLookup& env);

// The first host of a Slurm node list: "node[03-05,9],gpu1" -> "node03".
std::string first_slurm_host(const std::string& nodelist);

// A connected group of ranks. All calls are collective: every rank makes the
// same calls in the same order.
class Distributed {
 public:
  // Rendezvous at env.master_addr:master_port (rank 0 hosts the store), waits up
  // to env.timeout for every rank (naming those that never arrived) and checks
  // that every rank runs the same command (`fingerprint`, e.g. the resolved
  // configuration without the per-rank flags): a differing rank is named.
  // `device`: where the tensors live; CUDA uses NCCL where this LibTorch has it
  // (USE_C10D_NCCL), else Gloo through host copies.
  Distributed(const DistEnv& env, const std::string& fingerprint, const torch::Device& device);
  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const DistEnv& env() const { return env_; }

  // Sums `tensors` over ranks in place. Tensors are packed into flat buckets of
  // at most `bucket_bytes` (few large allreduces, not one per tensor); returns a
  // handle whose wait() finishes the sum and unpacks it. Start, do other work
  // (read the next batch), then wait. Every rank receives the same bits.
  class Pending {
   public:
    void wait();  // throws evl::Error naming a lost rank; later calls do nothing
    struct State;
    std::shared_ptr<State> state;
  };
  Pending start_sum(std::vector<torch::Tensor> tensors, const std::string& what,
                    int64_t bucket_bytes = 32 << 20);
  void sum(std::vector<torch::Tensor> tensors, const std::string& what) {
    start_sum(std::move(tensors), what).wait();
  }
  // Copies rank 0's values of `tensors` into every rank's.
  void broadcast_from_root(std::vector<torch::Tensor> tensors, const std::string& what);
  // A 64-bit digest of `tensors`' bytes, checked equal on every rank; throws
  // naming the first rank whose digest differs from rank 0's.
  void check_identical(const std::vector<torch::Tensor>& tensors, const std::string& what);
  // Records the step a rank is at (shown when another rank waits for it).
  void set_step(int64_t step);
  // Leaves this rank's error in the store for the others' messages (best effort).
  void report_failure(const std::string& message) noexcept;
  // The end of a run: stops the heartbeat and waits for every rank, so that
  // rank 0 (the store's host) exits only after the others are done with it.
  void finish();

 private:
  DistEnv env_;
  c10::intrusive_ptr<c10d::Store> store_;            // main thread's client (rank 0: the server)
  c10::intrusive_ptr<c10d::Store> heartbeat_store_;  // the heartbeat thread's own client
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::thread heartbeat_;
  std::atomic<bool> stop_heartbeat_{false};
  int64_t step_ = -1;
  bool on_device_ = false;  // buckets stay on the device (NCCL); else CPU (Gloo)
  std::string backend_ = "Gloo";

  void wait_for_ranks(const std::string& prefix, const std::string& what);
  // Rethrows a collective's failure as evl::Error naming the lost rank(s).
  [[noreturn]] void explain_failure(const std::string& what, const std::string& cause);
};

}  // namespace evl
