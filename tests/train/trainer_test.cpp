// The trainer on synthetic caches written with ShardWriter: two classes whose
// frames are the same set in opposite temporal order (no single frame, and no
// order-blind pooling, tells them apart). Checks learning, bit-exact resume,
// the run directory, a NaN stop that keeps the last good checkpoint, and
// refusal of a mismatched validation cache.
#include "train/trainer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "tests/support/test_support.h"
#include "tests/support/torch_support.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"

namespace fs = std::filesystem;
using namespace evl;

namespace {

constexpr int64_t kC = 16, kGrid = 2, kL = 1 + kGrid * kGrid, kT = 4, kM = 2;

using test::TempDir;

// clips x views records; class = clip % 2. `nan_clip` gets a NaN feature.
// `bf16_rounded`: the same features rounded to bfloat16 (stored as float32).
void write_cache(const fs::path& dir, int64_t clips, int64_t views, uint64_t seed,
                 int64_t frames = kT, int64_t nan_clip = -1, bool bf16_rounded = false) {
  fs::create_directories(dir);
  torch::manual_seed(12345);  // the class signal direction is shared by all caches
  const auto u = torch::randn({kC}) * 1.5;
  torch::manual_seed(static_cast<int64_t>(seed));
  const std::string shard = cache::shard_name(0, 1);
  {
    cache::ShardWriter w((dir / shard).string(), 32);
    for (int64_t c = 0; c < clips; ++c)
      for (int64_t v = 0; v < views; ++v) {
        cache::Record r;
        r.clip_index = c, r.view_index = static_cast<int32_t>(v), r.label = c % 2;
        r.key = cache::make_key(c, r.view_index);
        r.video_id = "clip" + std::to_string(c);
        auto x = torch::randn({kM, frames, kL, kC}) * 0.5;
        for (int64_t t = 0; t < frames; ++t) {
          const double s = (static_cast<double>(t) - (frames - 1) / 2.0) * (c % 2 ? -1.0 : 1.0);
          x.select(1, t) += s * u;
        }
        if (c == nan_clip) x[0][0][0][0] = std::nan("");
        auto q = torch::randn({kM, frames, kL, kC}), k = torch::randn({kM, frames, kL, kC});
        if (bf16_rounded)
          for (auto* t : {&x, &q, &k}) *t = t->to(torch::kBFloat16).to(torch::kFloat);
        r.arrays = {
            {"x", test::f32_array(x)}, {"q", test::f32_array(q)}, {"k", test::f32_array(k)}};
        w.put(r);
      }
  }
  cache::Manifest m;
  m.backbone.file = "tiny.pt", m.backbone.hash = "0123", m.backbone.format = "openai-torchscript";
  m.backbone.width = kC, m.backbone.depth = 4, m.backbone.heads = 2, m.backbone.patch = 16;
  m.backbone.grid = kGrid, m.backbone.input_size = 32;
  m.layers = {2, 3};
  m.storage = cache::StorageMode::kQK;
  m.dtype = cache::DType::kF32;
  m.frames = frames;
  m.train_views = views;
  m.mean = {0.5, 0.5, 0.5}, m.std = {0.2, 0.2, 0.2};
  m.num_clips = clips;
  m.shards = {{shard, clips * views}};
  m.save(dir.string());
}

TrainConfig base_config(const fs::path& root) {
  TrainConfig c;
  c.cache = (root / "train").string();
  c.out = (root / "run").string();
  c.steps = 20, c.batch_size = 8, c.batch_split = 2, c.lr = 2e-3;
  c.save_every = 5, c.eval_every = 0, c.log_every = 1, c.seed = 7;
  return c;
}

std::map<std::string, torch::Tensor> params_of(const std::string& path) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [k, v] : read_state_dict(path)) out[k] = v;
  return out;
}

// The key bias of the decoder attention: the softmax cancels it, so its exact
// gradient is 0 and what AdamW does with it is normalised rounding noise.
bool is_k_bias(const std::string& name) { return name.find("k_proj.bias") != std::string::npos; }

// Closed-form bound on how far AdamW (beta1 0.9, beta2 0.999) moves any
// coordinate in a run of `c`, whatever its gradients: the bias-corrected update
// of step t obeys |mhat_t / (sqrt(vhat_t) + eps)| <= sqrt(sum_s w_s^2 / r_s)
// (Cauchy-Schwarz, with mhat = sum_s w_s g_s, vhat = sum_s r_s g_s^2), and the
// decay adds lr_t wd |p_t| <= lr_t wd (|p0| + that bound) per step.
double adamw_max_move(const TrainConfig& c, double max_abs_p0) {
  const double b1 = 0.9, b2 = 0.999;
  double moves = 0, decay = 0;
  for (int64_t t = 0; t < c.steps; ++t) {
    const double bc1 = 1 - std::pow(b1, t + 1), bc2 = 1 - std::pow(b2, t + 1);
    double sum = 0;
    for (int64_t s = 0; s <= t; ++s) {
      const double w = (1 - b1) * std::pow(b1, t - s) / bc1,
                   r = (1 - b2) * std::pow(b2, t - s) / bc2;
      sum += w * w / r;
    }
    const double lr = lr_at_step(c.lr, t, c.steps, c.warmup_steps);
    moves += lr * std::sqrt(sum);
    decay += lr * c.weight_decay;
  }
  return moves + decay * (max_abs_p0 + moves);
}

}  // namespace

TEST(Trainer, ResumeIsBitExactOnCpu) {
  TempDir tmp("trainer");
  write_cache(tmp.path() / "train", 12, 2, 1);
  auto straight = base_config(tmp.path());
  straight.out = (tmp.path() / "straight").string();
  train_head(straight, "");
  auto split = base_config(tmp.path());
  split.out = (tmp.path() / "split").string();
  split.steps = 20;
  // Stop after 10 steps by training a 20-step schedule that is interrupted: run to
  // step 10 with the same schedule length, then resume.
  {
    auto first = split;
    first.steps = 20;
    // Emulate the interruption: run all 20, then roll back to checkpoint-10 as last.pth.
    train_head(first, "");
    fs::copy_file(fs::path(split.out) / "checkpoint-10.pth", fs::path(split.out) / "last.pth",
                  fs::copy_options::overwrite_existing);
    fs::remove(fs::path(split.out) / "checkpoint-20.pth");
  }
  split.resume = true;
  train_head(split, "");
  const auto a = params_of((fs::path(straight.out) / "last.pth").string());
  const auto b = params_of((fs::path(split.out) / "last.pth").string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  // Run directory contents.
  for (const char* f :
       {"config.ini", "metrics.jsonl", "checkpoint-5.pth", "checkpoint-20.pth", "last.pth"})
    EXPECT_TRUE(fs::exists(fs::path(straight.out) / f)) << f;
  std::ifstream metrics(fs::path(straight.out) / "metrics.jsonl");
  std::string line, last_line;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines, last_line = line;
  EXPECT_EQ(lines, 20);
  for (const char* key : {"\"step\":20", "\"loss\"", "\"lr\"", "\"samples_per_s\"", "\"val_top1\""})
    EXPECT_NE(last_line.find(key), std::string::npos) << last_line;
  // A second run into the same directory without --resume is refused.
  EXPECT_THROW(train_head(straight, ""), UsageError);
}

// Smallest fraction k/n with P(X >= k) <= p for X ~ Binomial(n, 1/2).
double binomial_half_upper(int64_t n, double p) {
  double tail = 0;  // P(X >= k), accumulated from k = n down
  for (int64_t k = n; k >= 0; --k) {
    const double pk = std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) -
                               std::lgamma(n - k + 1.0) - n * std::log(2.0));
    if (tail + pk > p) return static_cast<double>(k + 1) / static_cast<double>(n);
    tail += pk;
  }
  return 0;
}

TEST(Trainer, LearnsTemporalOrderAndValidates) {
  TempDir tmp("trainer");
  constexpr int64_t kValClips = 64;
  write_cache(tmp.path() / "train", 32, 2, 1);
  write_cache(tmp.path() / "val", kValClips, 1, 2);
  auto c = base_config(tmp.path());
  c.val_cache = (tmp.path() / "val").string();
  c.steps = 120, c.batch_size = 16, c.batch_split = 1, c.save_every = 0, c.log_every = 0;
  c.mlp_dropout = 0.0, c.cls_dropout = 0.0;
  const auto s = train_head(c, "");
  EXPECT_GE(s.val_top1, 0.9) << "loss " << s.last_loss;
  EXPECT_EQ(s.val_top5, 1.0);  // 2 classes
  // With every temporal module off the decoder pools frames order-blindly: the
  // two classes' features then have the same distribution, so whatever the head
  // learnt (i.e. whatever the CPU's rounding did), its number of correct
  // validation clips is Binomial(kValClips, 1/2). Fail only past its 1e-3 tail.
  c.out = (tmp.path() / "run_off").string();
  c.no_temporal_conv = c.no_temporal_pos_embed = c.no_temporal_cross_attention = true;
  const double chance_tail = binomial_half_upper(kValClips, 1e-3);
  EXPECT_LT(train_head(c, "").val_top1, chance_tail);
}

TEST(Trainer, NonFiniteLossStopsAndKeepsLastGoodCheckpoint) {
  TempDir tmp("trainer");
  write_cache(tmp.path() / "train", 4, 1, 1, kT, /*nan_clip=*/2);
  auto c = base_config(tmp.path());
  c.batch_size = 1, c.batch_split = 1, c.save_every = 1, c.steps = 8;
  try {
    train_head(c, "");
    FAIL() << "expected a non-finite loss error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("non-finite loss"), std::string::npos) << what;
    // The clip with NaN is the first one sampled in some step; the checkpoint before it survives.
    const auto last = fs::path(c.out) / "last.pth";
    if (what.find("at step 0;") == std::string::npos) {
      EXPECT_NE(what.find("checkpoint-"), std::string::npos) << what;
      EXPECT_TRUE(fs::exists(last));
      EXPECT_NO_THROW(load_head_checkpoint(last.string()));
    }
  }
}

TEST(Trainer, RefusesMismatchedCaches) {
  TempDir tmp("trainer");
  write_cache(tmp.path() / "train", 4, 1, 1);
  write_cache(tmp.path() / "val16", 4, 1, 1, /*frames=*/6);
  auto c = base_config(tmp.path());
  c.val_cache = (tmp.path() / "val16").string();
  try {
    train_head(c, "");
    FAIL() << "expected a provenance error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("frames"), std::string::npos) << e.what();
  }
  c.val_cache.clear();
  c.decoder_layers = 3;  // the cache holds 2
  EXPECT_THROW(train_head(c, ""), Error);
  // --init with an official file of another shape names the key.
  c.decoder_layers = 0;
  c.init = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/head/official_ddp.pth";
  try {
    train_head(c, "");
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("official_ddp.pth"), std::string::npos) << e.what();
  }
}

// bf16 autocast against fp32, with bounds that hold whatever the CPU's bf16
// GEMMs (native AMX/AVX512-BF16 or emulated) do:
//  - weights with a nonzero gradient: bf16 autocast rounds the two operands of
//    every matmul/conv (9 per decoder layer, the classifier's linear) to bf16 in
//    the forward pass and again the incoming gradients in the backward pass. Its
//    analogue measured in the same test is one such rounding: fp32 training on
//    the features rounded to bf16. To first order the stages' effects add, so
//    the bf16 run ends at most kBf16Roundings times that spread from the fp32 run
//    (whole-model L2 norm; the same for the final loss);
//  - the key biases (zero exact gradient, so rounding noise that AdamW
//    normalises into lr-sized steps, in fp32 too): AdamW's closed-form bound on
//    how far a coordinate can move from its initial value.
TEST(Trainer, CpuBf16AutocastLearnsLikeFp32) {
  TempDir tmp("trainer");
  write_cache(tmp.path() / "train", 32, 2, 1);
  write_cache(tmp.path() / "train_bf16_rounded", 32, 2, 1, kT, -1, /*bf16_rounded=*/true);
  write_cache(tmp.path() / "val", 16, 1, 2);
  auto c = base_config(tmp.path());
  c.val_cache = (tmp.path() / "val").string();
  c.steps = 120, c.batch_size = 16, c.batch_split = 1, c.save_every = 0, c.log_every = 0;
  c.mlp_dropout = 0.0, c.cls_dropout = 0.0;
  c.precision = "fp32";
  const auto fp32 = train_head(c, "");
  c.out = (tmp.path() / "run_rounded_inputs").string();
  c.cache = (tmp.path() / "train_bf16_rounded").string();
  const auto rounded = train_head(c, "");
  c.cache = (tmp.path() / "train").string();
  c.out = (tmp.path() / "run_bf16").string();
  c.precision = "bf16";
  const auto bf16 = train_head(c, "");
  // The initial weights (a function of --seed): one step at lr 0 leaves them as they are.
  auto c0 = c;
  c0.out = (tmp.path() / "run_init").string(), c0.steps = 1, c0.lr = 0, c0.precision = "fp32";
  train_head(c0, "");

  EXPECT_GE(bf16.val_top1, 0.9) << "loss " << bf16.last_loss;
  constexpr int64_t kBf16Roundings = 2 * (2 * (9 * kM + 1));  // operands, forward + backward
  EXPECT_LE(std::abs(bf16.last_loss - fp32.last_loss),
            kBf16Roundings * std::abs(rounded.last_loss - fp32.last_loss))
      << "fp32 " << fp32.last_loss << " bf16 " << bf16.last_loss << " fp32 on bf16 inputs "
      << rounded.last_loss;
  const auto a = params_of((tmp.path() / "run" / "last.pth").string());
  const auto b = params_of((tmp.path() / "run_bf16" / "last.pth").string());
  const auto r = params_of((tmp.path() / "run_rounded_inputs" / "last.pth").string());
  const auto p0 = params_of((tmp.path() / "run_init" / "last.pth").string());
  double bf16_sq = 0, rounded_sq = 0;
  for (const auto& [name, t] : a) {
    EXPECT_EQ(b.at(name).scalar_type(), torch::kFloat) << name;  // master weights stay fp32
    if (is_k_bias(name)) {
      const double max_move = adamw_max_move(c, p0.at(name).abs().max().item<double>());
      EXPECT_LE((b.at(name) - p0.at(name)).abs().max().item<double>(), max_move) << name;
      EXPECT_LE((t - p0.at(name)).abs().max().item<double>(), max_move) << name;
      continue;
    }
    bf16_sq += (b.at(name) - t).pow(2).sum().item<double>();
    rounded_sq += (r.at(name) - t).pow(2).sum().item<double>();
  }
  EXPECT_GT(rounded_sq, 0.0);  // the analogue did perturb the run
  EXPECT_LE(std::sqrt(bf16_sq), kBf16Roundings * std::sqrt(rounded_sq));
  std::cout << "|bf16 - fp32| " << std::sqrt(bf16_sq) << ", one bf16 rounding of the inputs "
            << std::sqrt(rounded_sq) << " (ratio " << std::sqrt(bf16_sq / rounded_sq)
            << ", allowed " << kBf16Roundings << "); loss ratio "
            << std::abs(bf16.last_loss - fp32.last_loss) /
                   std::abs(rounded.last_loss - fp32.last_loss)
            << "\n";
  c.precision = "fp16";  // CUDA only
  c.out = (tmp.path() / "run_fp16").string();
  EXPECT_THROW(train_head(c, ""), UsageError);
}

TEST(Trainer, InitFineTunesWithANewClassifierAndScaledLr) {
  // A 2-class head, then a 3-class run initialised from it (UCF-101 from K400).
  TempDir tmp("trainer");
  write_cache(tmp.path() / "train", 8, 1, 1);
  auto c = base_config(tmp.path());
  c.steps = 2, c.save_every = 0, c.mlp_dropout = 0.0, c.cls_dropout = 0.0;
  train_head(c, "");
  const auto pre_path = (fs::path(c.out) / "last.pth").string();
  const auto pre = params_of(pre_path);

  auto f = base_config(tmp.path());
  f.out = (tmp.path() / "finetune").string();
  f.init = pre_path, f.num_classes = 3, f.steps = 1, f.batch_size = 4, f.batch_split = 1;
  f.lr = 1e-2, f.weight_decay = 0.05, f.init_lr_scale = 0.1, f.save_every = 0;
  f.mlp_dropout = 0.0, f.cls_dropout = 0.0;
  train_head(f, "");
  const auto post = params_of((fs::path(f.out) / "last.pth").string());
  EXPECT_EQ(post.at("proj.2.weight").size(0), 3);
  // AdamW's first step, in closed form: p <- p (1 - lr wd) - lr g / (|g| + eps),
  // so after the decay every coordinate moves by at most lr, and by lr itself
  // wherever |g| >> eps. Body parameters use lr*0.1 and wd*0.1 (the cosine LR
  // of step 0 is the base LR); unscaled, they would move by 1e-2. In float32
  // the update lr mhat / (sqrt(vhat) + eps) carries <= ~8 roundings (u = 2^-24
  // each) and the final addition rounds at the parameter's scale: <= u |p|.
  // (The decayed p0 (1 - lr wd) is computed here exactly as AdamW does.)
  const double u = std::ldexp(1.0, -24);
  for (const auto& [name, p0] : pre) {
    if (name.rfind("proj.2.", 0) == 0) continue;
    const double lr = 1e-2 * 0.1, wd = 0.05 * 0.1;
    const auto moved = (post.at(name) - p0 * (1 - lr * wd)).abs();
    const auto allowed = lr * (1 + 8 * u) + u * post.at(name).abs();
    EXPECT_TRUE((moved <= allowed).all().item<bool>())
        << name << ": moved " << moved.max().item<double>() << " lr " << lr;
    // The key bias has a zero gradient in exact arithmetic (softmax ignores it);
    // everywhere else some coordinate has |g| >> eps = 1e-8 and moves by lr.
    if (!is_k_bias(name)) {
      EXPECT_GE(moved.max().item<double>(), lr * (1 - 1e-3)) << name;
    }
  }
  // The classifier was re-initialised and trained at the full LR: moves of ~1e-2.
  EXPECT_GT((post.at("proj.2.bias")).abs().max().item<double>(), 0.5e-2);
  // A requeued job repeats its command line: --resume with --init continues the run.
  // (--init is then ignored). Another --steps would restart the cosine
  // schedule silently: a usage error naming the flag.
  auto again = f;
  again.resume = true;
  EXPECT_NO_THROW(train_head(again, ""));
  again.steps = f.steps + 1;
  try {
    train_head(again, "");
    ADD_FAILURE() << "resumed with another --steps";
  } catch (const evl::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--steps"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(
      fs::exists(fs::path(f.out) / ("checkpoint-" + std::to_string(again.steps) + ".pth")));
  // A classifier of the right class count is reused, any other mismatch still fails.
  auto g = f;
  g.out = (tmp.path() / "same_classes").string();
  g.num_classes = 2;
  EXPECT_NO_THROW(train_head(g, ""));
  g.out = (tmp.path() / "bad").string();
  g.no_temporal_conv = true;  // the file has temporal_conv weights this head lacks
  EXPECT_THROW(train_head(g, ""), Error);
}
