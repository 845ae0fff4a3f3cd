// evl_train_head: trains the EVL decoder head on a feature cache (official
// recipe by default: AdamW 4e-4, wd 0.05, cosine per step, batch 256, 50k steps),
// or with --online on features computed per batch from the videos (decode +
// frozen backbone, train/online_dataset.h), without a cache.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "common/check.h"
#include "common/cli.h"
#include "train/online_dataset.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace po = boost::program_options;

namespace {

constexpr int kExitInterrupted = 4;

extern "C" void on_signal(int) { evl::training_stop_flag() = true; }

// The flags of the online mode (OnlineConfig): the lists and backbone, and the
// view and feature flags of evl_extract (extract/view_settings.h's table).
po::options_description online_options(evl::OnlineConfig& c) {
  po::options_description o("online mode (--online: no cache; decode + backbone per batch)");
  o.add_options()("online", po::bool_switch(&c.enabled),
                  "train from videos: features computed per batch, no cache")(
      "list", po::value(&c.list), "training dataset list (evl_extract --list format)")(
      "val-list", po::value(&c.val_list), "validation dataset list (test views)")(
      "root", po::value(&c.root)->default_value(c.root), "prefix for relative paths in the lists")(
      "backbone", po::value(&c.backbone), "CLIP weights: OpenAI .pt or Hugging Face .safetensors")(
      "replay-views", po::bool_switch(&c.replay_views),
      "replay the --train-views K views of each clip as a cache holds them (default: a fresh "
      "view of every clip in every epoch, as the official loader)");
  evl::add_view_flags(o, o, c.views, evl::ViewTool::kOnline);
  return o;
}

// Data-parallel training (train/distributed.h): where this rank stands, when
// the environment (torchrun's or srun's variables) does not say or is overridden.
po::options_description distributed_options(evl::DistFlags& d) {
  po::options_description o(
      "distributed (the same command on every rank; default: torchrun's RANK/WORLD_SIZE/"
      "LOCAL_RANK/MASTER_ADDR/MASTER_PORT, else srun's SLURM_* variables, else one process)");
  o.add_options()("rank", po::value(&d.rank), "this process's rank")(
      "world-size", po::value(&d.world_size), "number of ranks")(
      "local-rank", po::value(&d.local_rank), "rank on this node (--device cuda: cuda:LOCAL_RANK)")(
      "master-addr", po::value(&d.master_addr), "host of rank 0 (the rendezvous store)")(
      "master-port", po::value(&d.master_port), "port of the rendezvous store")(
      "dist-timeout", po::value(&d.timeout_s)->default_value(d.timeout_s),
      "seconds to wait for a rank (rendezvous, each collective) before failing and naming it");
  return o;
}

// --online excludes the cache flags, and the online flags need --online. Returns
// the configuration to record: a cached run's config.ini does not list the
// online flags' defaults, which would misdescribe where its features came from.
po::variables_map check_mode(const po::variables_map& vm, const po::options_description& online,
                             bool is_online) {
  auto given = [&](const std::string& name) { return vm.count(name) && !vm[name].defaulted(); };
  po::variables_map recorded = vm;
  if (is_online) {
    for (const char* flag : {"cache", "val-cache"})
      EVL_CHECK_USAGE(!given(flag), "--online computes features from videos; --", flag,
                      " cannot be combined with it (drop --online to train from a cache)");
    EVL_CHECK_USAGE(given("list") && given("backbone"),
                    "--online needs --list (training videos) and --backbone (CLIP weights)");
  } else {
    for (const auto& option : online.options()) {
      const std::string& name = option->long_name();
      EVL_CHECK_USAGE(!given(name), "--", name,
                      " belongs to the online mode: add --online to train from videos, or train "
                      "from a cache with --cache");
      recorded.erase(name);
    }
  }
  return recorded;
}

}  // namespace

int main(int argc, char** argv) {
  const evl::cli::Tool tool{
      "evl_train_head", "train the EVL decoder head from cached (or online) backbone features",
      "evl_train_head --cache DIR [--val-cache DIR] --out RUN_DIR [options]\n"
      "       evl_train_head --online --list LIST [--root DIR] --backbone FILE [--val-list LIST] "
      "--out RUN_DIR [options]"};
  evl::TrainConfig c;
  evl::OnlineConfig online_cfg;
  evl::DistFlags dist_flags;
  po::options_description o("options");
  o.add_options()("cache", po::value(&c.cache), "training feature cache directory")(
      "val-cache", po::value(&c.val_cache), "validation feature cache (multi-view top-1/top-5)")(
      "out", po::value(&c.out), "run directory (config.ini, metrics.jsonl, checkpoints)")(
      "name", po::value(&c.name),
      "model name in score files and ensemble reports (default: the --out directory's name)")(
      "steps", po::value(&c.steps)->default_value(c.steps), "optimiser steps")(
      "batch-size", po::value(&c.batch_size)->default_value(c.batch_size), "clips per step")(
      "batch-split", po::value(&c.batch_split)->default_value(c.batch_split),
      "micro-batches per step")("lr", po::value(&c.lr)->default_value(c.lr),
                                "AdamW base learning rate (cosine to 0)")(
      "weight-decay", po::value(&c.weight_decay)->default_value(c.weight_decay),
      "AdamW weight decay")("warmup-steps",
                            po::value(&c.warmup_steps)->default_value(c.warmup_steps),
                            "linear warmup steps")(
      "seed", po::value(&c.seed)->default_value(c.seed), "sampler and dropout seed")(
      "device", po::value(&c.device)->default_value(c.device), "cpu | cuda | cuda:N")(
      "precision", po::value(&c.precision)->default_value(c.precision),
      "head training: auto (CUDA: fp16 + loss scaling; CPU: bf16 where the CPU has native bf16, "
      "else fp32) | fp32 | bf16 | fp16")("eval-every",
                                         po::value(&c.eval_every)->default_value(c.eval_every),
                                         "validate every N steps (0: end)")(
      "save-every", po::value(&c.save_every)->default_value(c.save_every),
      "checkpoint every N steps (0: end)")("log-every",
                                           po::value(&c.log_every)->default_value(c.log_every),
                                           "metrics.jsonl line every N steps")(
      "decoder-layers", po::value(&c.decoder_layers)->default_value(c.decoder_layers),
      "decoder layers M (last M cached blocks; 0: all)")(
      "num-classes", po::value(&c.num_classes)->default_value(c.num_classes),
      "classes (0: from the labels)")("heads", po::value(&c.heads)->default_value(c.heads),
                                      "decoder heads (0: the backbone's)")(
      "mlp-dropout", po::value(&c.mlp_dropout)->default_value(c.mlp_dropout),
      "dropout in the decoder MLPs")("cls-dropout",
                                     po::value(&c.cls_dropout)->default_value(c.cls_dropout),
                                     "dropout before the classifier")(
      "no-temporal-conv", po::bool_switch(&c.no_temporal_conv), "disable the temporal convolution")(
      "no-temporal-pos-embed", po::bool_switch(&c.no_temporal_pos_embed),
      "disable the temporal position embedding")("no-temporal-cross-attention",
                                                 po::bool_switch(&c.no_temporal_cross_attention),
                                                 "disable the temporal cross attention")(
      "init", po::value(&c.init), "initialise from an evl or official EVL .pth")(
      "init-lr-scale", po::value(&c.init_lr_scale)->default_value(c.init_lr_scale),
      "LR and weight-decay factor for all but the classifier (fine-tuning: 0.1)")(
      "resume", po::bool_switch(&c.resume), "continue RUN_DIR/last.pth (--init is then ignored)")(
      "threads", po::value(&c.threads)->default_value(c.threads), "torch threads (0: default)");
  const auto online = online_options(online_cfg);
  o.add(online);
  const auto distributed = distributed_options(dist_flags);
  o.add(distributed);
  return evl::cli::run(tool, [&] {
    po::variables_map vm;
    if (!evl::cli::parse(tool, argc, argv, o, vm)) return evl::cli::kExitOk;
    // The recorded configuration holds no per-rank flags: it is what every rank
    // must agree on, and what a resume with another world size repeats.
    auto recorded = check_mode(vm, online, online_cfg.enabled);
    for (const auto& option : distributed.options()) recorded.erase(option->long_name());
    const std::string ini = evl::cli::to_ini(recorded);
    const evl::DistEnv dist = evl::resolve_dist_env(
        dist_flags, [](const char* name) { return static_cast<const char*>(std::getenv(name)); });
    // SIGTERM (a preempted or cancelled batch job) and SIGINT stop after the
    // current step with a checkpoint; exit 4, as evl_extract.
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    evl::TrainSummary s;
    if (online_cfg.enabled) {
      // One backbone for both lists; the views of both are drawn from --seed.
      if (c.threads > 0) torch::set_num_threads(static_cast<int>(c.threads));
      auto backbone = std::make_shared<evl::OnlineBackbone>(online_cfg, c.device);
      const evl::OnlineDataset train(online_cfg, online_cfg.list, evl::OnlineDataset::Views::kTrain,
                                     c.seed, c.decoder_layers, backbone);
      std::unique_ptr<evl::OnlineDataset> val;
      if (!online_cfg.val_list.empty())
        val = std::make_unique<evl::OnlineDataset>(online_cfg, online_cfg.val_list,
                                                   evl::OnlineDataset::Views::kTest, c.seed,
                                                   c.decoder_layers, backbone);
      s = evl::train_head(c, ini, train, val.get(), dist);
    } else {
      s = evl::train_head(c, ini, dist);
    }
    if (s.interrupted) {
      std::cerr << "interrupted after step " << s.steps << ": " << s.last_checkpoint
                << " saved; rerun the same command with --resume to continue\n";
      return kExitInterrupted;
    }
    if (dist.rank != 0) return evl::cli::kExitOk;  // rank 0 reports the run
    std::cout << "done: " << s.steps << " steps, loss " << s.last_loss << ", " << s.samples_per_s
              << " samples/s";
    if (s.val_top1 >= 0) std::cout << ", val top-1 " << s.val_top1 << " top-5 " << s.val_top5;
    std::cout << ", checkpoint " << s.last_checkpoint << "\n";
    return evl::cli::kExitOk;
  });
}
