// evl_train_head: trains the EVL decoder head on a feature cache (official
// recipe by default: AdamW 4e-4, wd 0.05, cosine per step, batch 256, 50k steps).
#include <iostream>

#include "common/cli.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  const evl::cli::Tool tool{"evl_train_head",
                            "train the EVL decoder head from cached backbone features",
                            "evl_train_head --cache DIR [--val-cache DIR] --out RUN_DIR [options]"};
  evl::TrainConfig c;
  po::options_description o("options");
  o.add_options()("cache", po::value(&c.cache), "training feature cache directory")(
      "val-cache", po::value(&c.val_cache), "validation feature cache (multi-view top-1/top-5)")(
      "out", po::value(&c.out), "run directory (config.ini, metrics.jsonl, checkpoints)")(
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
      "precision", po::value(&c.precision)->default_value(c.precision), "auto | fp32")(
      "eval-every", po::value(&c.eval_every)->default_value(c.eval_every),
      "validate every N steps (0: end)")("save-every",
                                         po::value(&c.save_every)->default_value(c.save_every),
                                         "checkpoint every N steps (0: end)")(
      "log-every", po::value(&c.log_every)->default_value(c.log_every),
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
      "resume", po::bool_switch(&c.resume), "continue RUN_DIR/last.pth")(
      "threads", po::value(&c.threads)->default_value(c.threads), "torch threads (0: default)");
  return evl::cli::run(tool, [&] {
    po::variables_map vm;
    if (!evl::cli::parse(tool, argc, argv, o, vm)) return evl::cli::kExitOk;
    const auto s = evl::train_head(c, evl::cli::to_ini(vm));
    std::cout << "done: " << s.steps << " steps, loss " << s.last_loss << ", " << s.samples_per_s
              << " samples/s";
    if (s.val_top1 >= 0) std::cout << ", val top-1 " << s.val_top1 << " top-5 " << s.val_top5;
    std::cout << ", checkpoint " << s.last_checkpoint << "\n";
    return evl::cli::kExitOk;
  });
}
