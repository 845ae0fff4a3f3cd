// c10d process group, rendezvous, heartbeats and failure messages (distributed.h).
#include "train/distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <map>

#include "common/check.h"
#include "common/log.h"

namespace evl {

namespace {

// A whole decimal integer in [lo, hi], or a UsageError naming `name`.
int64_t parse_int(const std::string& text, const std::string& name, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  EVL_CHECK_USAGE(!text.empty() && end && *end == '\0' && errno == 0 && v >= lo && v <= hi, name,
                  " = '", text, "': expected an integer in [", lo, ", ", hi, "]");
  return v;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::string key(const std::string& kind, int rank) {
  return "evl/" + kind + "/" + std::to_string(rank);
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// The first line where two configurations differ, for the mismatch message.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t pa = 0, pb = 0;
  while (pa < a.size() || pb < b.size()) {
    const size_t ea = std::min(a.find('\n', pa), a.size()),
                 eb = std::min(b.find('\n', pb), b.size());
    const std::string la = a.substr(pa, ea - pa), lb = b.substr(pb, eb - pb);
    if (la != lb) return "'" + la + "' vs '" + lb + "'";
    pa = ea + 1, pb = eb + 1;
  }
  return "(same lines)";
}

constexpr auto kHeartbeat = std::chrono::milliseconds(500);

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // Comma-separated entries, each "name" or "prefix[ranges]suffix"; commas
  // inside brackets belong to the range list.
  size_t end = 0;
  int depth = 0;
  while (end < nodelist.size() && !(depth == 0 && nodelist[end] == ',')) {
    if (nodelist[end] == '[') ++depth;
    if (nodelist[end] == ']') --depth;
    ++end;
  }
  const std::string first = nodelist.substr(0, end);
  const size_t open = first.find('[');
  if (open == std::string::npos) return first;
  const size_t close = first.find(']', open);
  EVL_CHECK_USAGE(close != std::string::npos, "SLURM node list '", nodelist, "': unmatched '['");
  const std::string ranges = first.substr(open + 1, close - open - 1);
  const std::string lo = ranges.substr(0, ranges.find_first_of(",-"));
  EVL_CHECK_USAGE(!lo.empty(), "SLURM node list '", nodelist, "': empty range");
  return first.substr(0, open) + lo + first.substr(close + 1);
}

DistEnv resolve_dist_env(const DistFlags& flags, const EnvLookup& env) {
  DistEnv d;
  auto get = [&](const char* name) -> std::string {
    const char* v = env(name);
    return v ? std::string(v) : std::string();
  };
  constexpr int64_t kMaxWorld = 1 << 20;
  if (!get("WORLD_SIZE").empty()) {
    d.source = "torchrun variables";
    d.world_size = static_cast<int>(parse_int(get("WORLD_SIZE"), "WORLD_SIZE", 1, kMaxWorld));
    d.rank =
        static_cast<int>(parse_int(get("RANK").empty() ? "0" : get("RANK"), "RANK", 0, kMaxWorld));
    d.local_rank = static_cast<int>(
        parse_int(get("LOCAL_RANK").empty() ? "0" : get("LOCAL_RANK"), "LOCAL_RANK", 0, kMaxWorld));
    if (!get("MASTER_ADDR").empty()) d.master_addr = get("MASTER_ADDR");
    if (!get("MASTER_PORT").empty())
      d.master_port = static_cast<int>(parse_int(get("MASTER_PORT"), "MASTER_PORT", 1, 65535));
  } else if (!get("SLURM_STEP_NUM_TASKS").empty() && !get("SLURM_PROCID").empty()) {
    // Inside an srun job step (a batch script itself has no step task count,
    // so a plain `evl_train_head` in an sbatch script stays one process).
    d.source = "Slurm (srun)";
    d.world_size = static_cast<int>(
        parse_int(get("SLURM_STEP_NUM_TASKS"), "SLURM_STEP_NUM_TASKS", 1, kMaxWorld));
    d.rank = static_cast<int>(parse_int(get("SLURM_PROCID"), "SLURM_PROCID", 0, kMaxWorld));
    d.local_rank = static_cast<int>(parse_int(
        get("SLURM_LOCALID").empty() ? "0" : get("SLURM_LOCALID"), "SLURM_LOCALID", 0, kMaxWorld));
    const std::string nodes = !get("SLURM_STEP_NODELIST").empty() ? get("SLURM_STEP_NODELIST")
                                                                  : get("SLURM_JOB_NODELIST");
    if (!nodes.empty()) d.master_addr = first_slurm_host(nodes);
    // One port per job step, the same on every task of it: 20000 + a hash of
    // (job id, step id) in [0, 40000).
    const int64_t job = get("SLURM_JOB_ID").empty()
                            ? 0
                            : parse_int(get("SLURM_JOB_ID"), "SLURM_JOB_ID", 0, INT64_MAX / 8);
    const int64_t step = get("SLURM_STEP_ID").empty()
                             ? 0
                             : parse_int(get("SLURM_STEP_ID"), "SLURM_STEP_ID", 0, INT64_MAX / 8);
    d.master_port = static_cast<int>(20000 + (job * 131 + step) % 40000);
    if (!get("MASTER_ADDR").empty()) d.master_addr = get("MASTER_ADDR");
    if (!get("MASTER_PORT").empty())
      d.master_port = static_cast<int>(parse_int(get("MASTER_PORT"), "MASTER_PORT", 1, 65535));
  }
  bool any_flag = false;
  if (flags.world_size >= 0) {
    EVL_CHECK_USAGE(flags.world_size >= 1 && flags.world_size <= kMaxWorld,
                    "--world-size must be in [1, ", kMaxWorld, "], got ", flags.world_size);
    d.world_size = static_cast<int>(flags.world_size), any_flag = true;
  }
  if (flags.rank >= 0) d.rank = static_cast<int>(flags.rank), any_flag = true;
  if (flags.local_rank >= 0) d.local_rank = static_cast<int>(flags.local_rank), any_flag = true;
  if (!flags.master_addr.empty()) d.master_addr = flags.master_addr, any_flag = true;
  if (flags.master_port != 0) {
    EVL_CHECK_USAGE(flags.master_port >= 1 && flags.master_port <= 65535,
                    "--master-port must be in [1, 65535], got ", flags.master_port);
    d.master_port = static_cast<int>(flags.master_port), any_flag = true;
  }
  if (any_flag) d.source = d.source == "single process" ? "flags" : d.source + " and flags";
  EVL_CHECK_USAGE(d.rank >= 0 && d.rank < d.world_size, "rank ", d.rank,
                  " is outside the world of ", d.world_size, " ranks (", d.source,
                  "): the rank must be in [0, world size)");
  EVL_CHECK_USAGE(
      std::isfinite(flags.timeout_s) && flags.timeout_s > 0 && flags.timeout_s <= 7 * 24 * 3600,
      "--dist-timeout must be in (0, 604800] seconds, got ", flags.timeout_s);
  d.timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_s * 1000));
  return d;
}

struct Distributed::Pending::State {
  Distributed* owner = nullptr;
  std::string what;
  std::vector<torch::Tensor> targets;
  struct Bucket {
    torch::Tensor flat;           // what travels (CPU for Gloo)
    std::vector<size_t> members;  // indices into targets
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Bucket> buckets;
  bool done = false;
};

Distributed::Distributed(const DistEnv& env, const std::string& fingerprint,
                         const torch::Device& tensor_device)
    : env_(env) {
  const std::string where = env_.master_addr + ":" + std::to_string(env_.master_port);
  const double secs = std::chrono::duration<double>(env_.timeout).count();
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(env_.master_port);
    opts.isServer = env_.rank == 0;
    opts.numWorkers = static_cast<size_t>(env_.world_size);
    opts.waitWorkers = false;  // wait_for_ranks names who is missing instead
    opts.timeout = env_.timeout;
    store_ = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, opts);
    opts.isServer = false;
    heartbeat_store_ = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, opts);
  } catch (const std::exception& e) {
    EVL_THROW(DistributedError, "distributed training: rank ", env_.rank, " of ", env_.world_size,
              (env_.rank == 0 ? " could not host" : " could not reach"),
              " the rendezvous store at ", where, " within ", secs, " s (--dist-timeout; ",
              env_.source, "): ", e.what());
  }
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  store_->set(key("config", env_.rank), bytes(fingerprint));
  store_->set(key("arrived", env_.rank),
              bytes(std::string(host) + " pid " + std::to_string(getpid())));
  heartbeat_ = std::thread([this] {
    while (!stop_heartbeat_.load()) {
      try {
        heartbeat_store_->add(key("alive", env_.rank), 1);
      } catch (const std::exception&) {
        // The store's host (rank 0) is gone; the next collective says so.
      }
      std::this_thread::sleep_for(kHeartbeat);
    }
  });
  try {
    wait_for_ranks("arrived", "arrive at the rendezvous " + where);
    for (int r = 0; r < env_.world_size; ++r) {
      const std::string other = text(store_->get(key("config", r)));
      if (other != fingerprint)
        EVL_THROW(DistributedError, "distributed training: rank ", r,
                  " runs another configuration than rank ", env_.rank,
                  " (first difference: ", first_difference(other, fingerprint),
                  "); every rank must run the same evl_train_head command");
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("evl/pg", store_);
#ifdef USE_C10D_NCCL
    if (tensor_device.is_cuda()) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = env_.timeout;
      group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, env_.rank, env_.world_size,
                                                           options);
      on_device_ = true;
      backend_ = "NCCL";
    }
#else
    (void)tensor_device;
#endif
    if (!group_) {
      std::shared_ptr<::gloo::transport::Device> device;
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
        device = c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
      else if (is_loopback(env_.master_addr))
        device = c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
      else
        device = c10d::ProcessGroupGloo::createDefaultDevice();
      auto options = c10d::ProcessGroupGloo::Options::create(env_.timeout);
      options->devices.push_back(device);
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env_.rank, env_.world_size,
                                                           options);
    }
  } catch (const DistributedError&) {
    stop_heartbeat_ = true;
    heartbeat_.join();
    throw;
  } catch (const std::exception& e) {
    stop_heartbeat_ = true;
    heartbeat_.join();
    EVL_THROW(DistributedError, "distributed training: rank ", env_.rank, " of ", env_.world_size,
              " could not connect the process group via ", where, ": ", e.what());
  }
  log::info("distributed training: rank ", env_.rank, " of ", env_.world_size, " (local rank ",
            env_.local_rank, ", ", env_.source, "), rendezvous ", where, ", ", backend_);
}

Distributed::~Distributed() {
  stop_heartbeat_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

void Distributed::wait_for_ranks(const std::string& prefix, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + env_.timeout;
  while (true) {
    std::vector<int> missing;
    for (int r = 0; r < env_.world_size; ++r)
      if (!store_->check({key(prefix, r)})) missing.push_back(r);
    if (missing.empty()) return;
    if (std::chrono::steady_clock::now() > deadline) {
      std::string names;
      for (const int r : missing) names += (names.empty() ? "" : ", ") + std::to_string(r);
      EVL_THROW(DistributedError, "distributed training: rank", (missing.size() > 1 ? "s " : " "),
                names, " of ", env_.world_size, " did not ", what, " within ",
                std::chrono::duration<double>(env_.timeout).count(),
                " s (--dist-timeout); was every task started with the same world size?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Distributed::finish() {
  auto token = torch::zeros({1}, torch::kInt64);
  sum({token}, "the end of the run");
  stop_heartbeat_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

void Distributed::set_step(int64_t step) {
  step_ = step;
  try {
    store_->set(key("step", env_.rank), bytes(std::to_string(step)));
  } catch (const std::exception& e) {
    explain_failure("step " + std::to_string(step), e.what());
  }
}

void Distributed::report_failure(const std::string& message) noexcept {
  try {
    store_->set(key("failed", env_.rank), bytes(message));
  } catch (...) {
  }
}

void Distributed::explain_failure(const std::string& what, const std::string& cause) {
  const std::string prefix = str("distributed training: ", what, " failed on rank ", env_.rank,
                                 " of ", env_.world_size, ": ");
  std::string found;
  try {
    // A rank that failed with an error says so in the store.
    for (int r = 0; r < env_.world_size; ++r)
      if (r != env_.rank && store_->check({key("failed", r)}))
        found += str(found.empty() ? "" : "; ", "rank ", r,
                     " failed: ", text(store_->get(key("failed", r))));
    if (found.empty()) {
      // Otherwise: whose heartbeat stopped (a killed or stopped process)?
      std::vector<int64_t> before(env_.world_size), after(env_.world_size);
      for (int r = 0; r < env_.world_size; ++r) before[r] = store_->add(key("alive", r), 0);
      std::this_thread::sleep_for(kHeartbeat * 5);
      for (int r = 0; r < env_.world_size; ++r) after[r] = store_->add(key("alive", r), 0);
      for (int r = 0; r < env_.world_size; ++r) {
        if (r == env_.rank || after[r] != before[r]) continue;
        std::string at;
        if (store_->check({key("step", r)}))
          at = ", last seen at step " + text(store_->get(key("step", r)));
        found += str(found.empty() ? "" : "; ", "rank ", r, " is gone (no heartbeat for ",
                     5 * kHeartbeat.count() / 1000.0, " s", at, ")");
      }
    }
    if (found.empty()) {
      for (int r = 0; r < env_.world_size; ++r) {
        if (r == env_.rank || !store_->check({key("step", r)})) continue;
        const std::string s = text(store_->get(key("step", r)));
        if (s != std::to_string(step_))
          found += str(found.empty() ? "" : "; ", "rank ", r, " is alive but at step ", s,
                       " (this rank: ", step_, ")");
      }
    }
  } catch (const std::exception&) {
    found = str("rank 0, which hosts the rendezvous store at ", env_.master_addr, ":",
                env_.master_port, ", is gone");
  }
  if (found.empty()) found = "no rank named itself lost";
  EVL_THROW(DistributedError, prefix, found, " (", cause, ")");
}

void Distributed::Pending::wait() {
  if (!state || state->done) return;
  state->done = true;
  auto& s = *state;
  for (auto& b : s.buckets) {
    try {
      b.work->wait(s.owner->env_.timeout);
    } catch (const std::exception& e) {
      s.owner->explain_failure(s.what, e.what());
    }
    int64_t offset = 0;
    for (const size_t m : b.members) {
      auto& t = s.targets[m];
      const int64_t n = t.numel();
      t.copy_(b.flat.narrow(0, offset, n).view(t.sizes()));
      offset += n;
    }
  }
}

Distributed::Pending Distributed::start_sum(std::vector<torch::Tensor> tensors,
                                            const std::string& what, int64_t bucket_bytes) {
  Pending p;
  p.state = std::make_shared<Pending::State>();
  auto& s = *p.state;
  s.owner = this;
  s.what = what;
  s.targets = std::move(tensors);
  // Buckets: consecutive tensors of one dtype up to bucket_bytes each.
  std::vector<std::vector<size_t>> groups;
  int64_t bytes_in = 0;
  for (size_t i = 0; i < s.targets.size(); ++i) {
    const auto& t = s.targets[i];
    const int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
    if (groups.empty() || bytes_in + b > bucket_bytes ||
        s.targets[groups.back().front()].scalar_type() != t.scalar_type()) {
      groups.emplace_back();
      bytes_in = 0;
    }
    groups.back().push_back(i);
    bytes_in += b;
  }
  try {
    for (auto& g : groups) {
      std::vector<torch::Tensor> parts;
      for (const size_t m : g)
        parts.push_back(on_device_ ? s.targets[m].detach().reshape({-1})
                                   : s.targets[m].detach().reshape({-1}).to(torch::kCPU));
      Pending::State::Bucket bucket;
      bucket.flat = torch::cat(parts).contiguous();
      bucket.members = g;
      std::vector<torch::Tensor> io{bucket.flat};
      bucket.work = group_->allreduce(io);
      s.buckets.push_back(std::move(bucket));
    }
  } catch (const std::exception& e) {
    explain_failure(what, e.what());
  }
  return p;
}

void Distributed::broadcast_from_root(std::vector<torch::Tensor> tensors, const std::string& what) {
  // Zeros everywhere but rank 0, then a sum: the same bits as a broadcast.
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> staged;
  for (auto& t : tensors)
    staged.push_back(env_.rank == 0 ? t.detach().clone() : torch::zeros_like(t));
  sum(staged, what);
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].detach().copy_(staged[i]);
}

void Distributed::check_identical(const std::vector<torch::Tensor>& tensors,
                                  const std::string& what) {
  XXH3_state_t* h = XXH3_createState();
  XXH3_64bits_reset(h);
  for (const auto& t : tensors) {
    const auto c = t.detach().to(torch::kCPU).contiguous();
    XXH3_64bits_update(h, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  }
  const uint64_t digest = XXH3_64bits_digest(h);
  XXH3_freeState(h);
  // Each rank's digest in its own slot (31 bits per half, so sums stay exact).
  auto slots = torch::zeros({env_.world_size, 2}, torch::kInt64);
  slots[env_.rank][0] = static_cast<int64_t>(digest >> 32);
  slots[env_.rank][1] = static_cast<int64_t>(digest & 0xffffffffu);
  sum({slots}, what + " (digest)");
  for (int r = 1; r < env_.world_size; ++r)
    if (slots[r][0].item<int64_t>() != slots[0][0].item<int64_t>() ||
        slots[r][1].item<int64_t>() != slots[0][1].item<int64_t>())
      EVL_THROW(DistributedError, "distributed training: ", what,
                " differ between rank 0 and rank ", r,
                " (the ranks diverged: a bug, or ranks running different builds)");
}

}  // namespace evl
