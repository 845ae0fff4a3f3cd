// The training loop of evl_train_head over a feature cache: AdamW + per-step
// cosine (docs/OFFICIAL_EVL.md §6), gradient accumulation over --batch-split micro-
// batches, periodic evaluation and checkpoints, metrics.jsonl and the same
// scalars as TensorBoard events (train/tensorboard.h), best.pth (+ best.json)
// by validation top-1 beside last.pth, the run's model name (--name, else the
// run directory's name) in the checkpoint's config, progress, and
// exact resume on CPU (the sampler and dropout RNG are functions of
// (seed, step), so nothing but parameters and AdamW moments need saving).
// Mixed precision: train/mixed_precision.h (fp16 autocast + loss scaling on
// CUDA as the official recipe; optional bf16 autocast on CPU).
#pragma once

#include <atomic>

#include <string>
#include <vector>

#include "train/cached_dataset.h"
#include "train/distributed.h"
#include "train/head.h"
#include "train/train_config.h"

namespace evl {

struct TrainSummary {
  int64_t steps = 0;                    // optimiser steps done in total
  double last_loss = 0;                 // mean loss of the final step
  double val_top1 = -1, val_top5 = -1;  // -1: no validation cache
  double samples_per_s = 0;             // training throughput of this process
  std::string last_checkpoint;
  bool interrupted = false;  // stopped by training_stop_flag(): last.pth is the step reached
};

// Set (e.g. by a SIGTERM/SIGINT handler) to stop training after the current
// step: train_head then saves checkpoint-<step>.pth and last.pth, and returns
// with `interrupted`, so that --resume continues exactly (a preempted job).
std::atomic<bool>& training_stop_flag();

struct EvalResult {
  double top1 = 0, top5 = 0;  // fractions over clips with a label
  int64_t clips = 0;
};

// The head an evl_train_head run builds for a cache (width, heads, grid,
// frames from the cache's provenance; switches and dropouts from `cfg`).
HeadConfig head_config_for(const TrainConfig& cfg, const cache::Manifest& manifest, int64_t layers,
                           int64_t num_classes);

// The provenance fields that decide what a head's inputs mean (backbone,
// layers, frames, sampling, normalisation; not views or dtype).
const std::vector<std::string>& feature_fields();

// Throws evl::Error naming `source`, `checkpoint` and the first differing
// field when `found` (the last `layers` of its layers) differs from the
// provenance a checkpoint recorded (CheckpointMeta::provenance) in
// feature_fields(). Does nothing when nothing was recorded.
void check_recorded_provenance(const std::string& recorded_json, const cache::Manifest& found,
                               int64_t layers, const std::string& checkpoint,
                               const std::string& source);

// Multi-view evaluation over every item of `data`: mean of per-view softmax
// per clip, top-1/top-5. Runs in fp32 (the official evaluation has no autocast).
// With `dist`, sharded over the ranks with the single-process result (scoring.h).
EvalResult evaluate(EvlHead& head, const FeatureSource& data, int64_t batch,
                    const torch::Device& device, Distributed* dist = nullptr);

// Runs (or resumes) a training run into cfg.out. `config_ini` is the resolved
// configuration, written to <out>/config.ini and into every checkpoint.
// Throws evl::UsageError for bad settings and evl::Error for a provenance
// mismatch, unreadable cache, or a non-finite loss (naming the step and the
// last good checkpoint).
//
// With `dist.world_size` > 1 (train/distributed.h) this process is one rank of
// a data-parallel run: every rank draws the same global batch of a step and
// takes its contiguous share (rank r: rows [r B/W, (r+1) B/W)), --batch-split
// micro-batches that share, gradients are summed over ranks in flat buckets and
// divided by W (the gradient of the global batch's mean loss, as one process
// computes it, up to the order of the fp32 sums), while the reads of the next
// step's first micro-batch overlap the allreduce. Parameters start as rank 0's
// and are checked identical at every checkpoint. Rank 0 alone writes the run
// directory; validation is sharded (scoring.h); SIGTERM on any rank stops every
// rank after the same step. Dropout masks are functions of (seed, step, sample)
// (DropoutRows, head.h), so dropout too is the same for any world size.
TrainSummary train_head(const TrainConfig& cfg, const std::string& config_ini,
                        const DistEnv& dist = DistEnv{});

// The same loop over given sources (the online path, tests). `val` may be null.
// cfg.cache / cfg.val_cache are then only names for messages.
TrainSummary train_head(const TrainConfig& cfg, const std::string& config_ini,
                        const FeatureSource& train, const FeatureSource* val,
                        const DistEnv& dist = DistEnv{});

}  // namespace evl
