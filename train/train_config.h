// Typed configuration of the EVL head (HeadConfig) and of a training run
// (TrainConfig). In-class defaults are the official recipe (ViT-B/16, K400):
// the single source of defaults for evl_train_head's flags. No Boost here:
// train_main.cpp binds flags to these fields.
#pragma once

#include <cstdint>
#include <string>

namespace evl {

// Shape and switches of the EVL decoder head (docs/OFFICIAL_EVL.md §3-4).
// Letters: M decoder layers, T frames, L = 1 + grid^2 tokens per frame, C width,
// H heads, K classes.
struct HeadConfig {
  int64_t width = 768;         // C
  int64_t heads = 12;          // H (official: C / 64)
  double mlp_ratio = 4.0;      // MLP hidden = round(mlp_ratio * C)
  int64_t decoder_layers = 4;  // M
  int64_t frames = 8;          // T (fixes the position embedding's shape)
  int64_t grid = 14;           // patches per side; TCA tables are ((2g-1)^2, C)
  int64_t num_classes = 400;   // K
  double mlp_dropout = 0.5;    // after QuickGELU inside each decoder MLP
  double cls_dropout = 0.5;    // between the final LayerNorm and Linear
  bool temporal_conv = true;
  bool temporal_pos_embed = true;
  bool temporal_cross_attention = true;

  int64_t tokens() const { return 1 + grid * grid; }  // L
  int64_t head_dim() const { return width / heads; }  // C / H
  // "key = value" lines (the [head] section of a checkpoint's config).
  std::string to_ini() const;
  // Parses what to_ini wrote (unknown keys ignored); throws evl::Error naming `where`.
  static HeadConfig from_ini(const std::string& text, const std::string& where);
};

// The [run] section of a checkpoint's config: "name = <model name>" (what
// evl_eval writes as the score file's `model`). run_name_from_ini returns ""
// when the text has none (official checkpoints, evl checkpoints before it).
std::string run_ini(const std::string& name);
std::string run_name_from_ini(const std::string& text);

// One training run of evl_train_head (docs/OFFICIAL_EVL.md §6 for the defaults).
struct TrainConfig {
  std::string cache;      // training cache directory
  std::string val_cache;  // optional validation cache directory
  std::string out;        // run directory
  std::string name;       // the model's name in score files (empty: out's directory name)
  int64_t steps = 50000;
  int64_t batch_size = 256;  // global batch per optimiser step
  int64_t batch_split = 1;   // micro-batches per step (gradient accumulation)
  double lr = 4e-4;
  double weight_decay = 0.05;
  int64_t warmup_steps = 0;  // linear warmup before the cosine (official: none)
  uint64_t seed = 0;
  std::string device = "cpu";      // "cpu" | "cuda" | "cuda:N"
  std::string precision = "auto";  // "auto" | "fp32" | "bf16" | "fp16"
  int64_t eval_every = 5000;       // 0: only at the end
  int64_t save_every = 5000;       // 0: only at the end
  int64_t log_every = 50;          // metrics.jsonl line every N steps
  int64_t decoder_layers = 0;      // 0: every layer in the cache
  int64_t num_classes = 0;         // 0: 1 + max label in the training cache
  int64_t heads = 0;               // 0: width / 64, as the official presets
  double mlp_dropout = 0.5;
  double cls_dropout = 0.5;
  bool no_temporal_conv = false;
  bool no_temporal_pos_embed = false;
  bool no_temporal_cross_attention = false;
  std::string init;            // official or evl .pth to start from (parameters only)
  double init_lr_scale = 1.0;  // LR and weight decay factor for all but the classifier
                               // (fine-tuning from --init: the paper uses 0.1)
  bool resume = false;         // continue from <out>/last.pth
  int64_t threads = 0;         // torch intra-op threads (0: leave the default)
  // --online's sources and views: OnlineConfig in train/online_dataset.h.
};

}  // namespace evl
