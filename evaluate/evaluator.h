// Multi-view scoring of a test-view feature cache with a trained EVL head
// (evl_eval): provenance check of cache against checkpoint, the head over
// every view of every clip, per-clip view fusion (the official mean of per-view
// softmax probabilities, or mean logits), the score file and metrics JSON.
// Deliberately no decoding or backbone here (see predictor.h for evl_predict).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "evaluate/metrics.h"
#include "evaluate/scores.h"
#include "train/checkpoint.h"
#include "train/head.h"
#include "train/scoring.h"
#include "train/train_config.h"

namespace evl {

// Letters: V views of one clip, K classes, M decoder layers, T frames,
// L tokens per frame, C width.

// The score kind a fusion writes (FuseMode and fuse_views: train/scoring.h).
ScoreKind score_kind(FuseMode mode);

// A head ready for inference (eval mode, CPU).
struct InferenceHead {
  EvlHead head{nullptr};
  HeadConfig config;
  std::string config_ini;  // the run's recorded config; "" for official .pth files
  bool official = false;   // no recorded config: an official (or bare) state dict
  CheckpointMeta meta;     // recorded provenance (train/checkpoint.h); empty for official files
};

// Loads an evl checkpoint (its recorded [head] config) or an official EVL .pth
// (config inferred from shapes). Official files do not record the decoder's
// head count; the official code uses the backbone's, so pass it as
// `backbone_heads` (0: width / 64). Throws evl::Error naming the file when it
// is missing, unreadable, or not an EVL head.
InferenceHead load_inference_head(const std::string& path, int64_t backbone_heads);

// Refuses a cache whose provenance does not fit the head: width, frames, grid,
// decoder layers (the cache must hold at least M layers; the head reads the
// last M, as evl_train_head does). Throws evl::Error
// "cache 'DIR' does not fit checkpoint 'FILE': <field>: ...".
void check_head_fits_cache(const HeadConfig& head, const cache::Manifest& manifest,
                           const std::string& cache_dir, const std::string& checkpoint);

struct EvalConfig {
  std::string cache;       // test-view cache directory
  std::string checkpoint;  // evl checkpoint or official EVL .pth
  std::string scores;      // output score file (.h5)
  std::string labels;      // optional class names, one per line (K lines)
  std::string json;        // optional metrics report
  std::string fuse = "prob";
  int64_t batch_size = 32;  // clip-views per head forward
  std::string device = "cpu";
  int64_t threads = 0;  // torch intra-op threads (0: leave the default)
};

struct EvalReport {
  ScoreFile scores;           // what was written to cfg.scores
  Metrics metrics;            // over clips with a label
  int64_t views = 0;          // clip-views scored
  int64_t missing_clips = 0;  // clips of the list absent from the cache (failed extraction)
  // Top-1 over the labelled evaluated videos plus the missing ones, counted as
  // wrong (assumes the missing videos were labelled, as a labelled list's are):
  // metrics.top1 * num_labelled / (num_labelled + missing_clips).
  double top1_counting_missing = 0;
  double seconds = 0;
  nlohmann::json json;  // the report written to cfg.json (also when cfg.json is empty)
};

// Runs the whole evaluation and writes cfg.scores (and cfg.json when set).
// Throws evl::UsageError for bad settings, evl::Error for unreadable inputs, a
// provenance mismatch, labels outside the head's classes, or a label-name file
// whose length is not K.
EvalReport run_eval(const EvalConfig& cfg);

// "top-1 81.20%  top-5 95.10%  mean class 80.95%  (N videos)".
std::string summary_line(const Metrics& m);

}  // namespace evl
