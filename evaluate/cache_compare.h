// What a candidate cache costs against a reference cache of the same clips
// (evl_cache compare): e.g. an int8 or fp8 extraction, maybe in another storage
// mode, against an fp16 one. Compares the decoder inputs the loader produces
// (compact caches' Q/K recomputed as training does) and, with a head, the fused
// per-clip scores evl_eval would write. Reports; judging is left to the caller
// (optional thresholds only list what they find). No LibTorch in this header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cache/cache.h"

namespace evl {

// Letters: M decoder layers, K classes, V views of one clip.

struct CompareConfig {
  std::string reference;      // cache A (e.g. fp16)
  std::string candidate;      // cache B (e.g. int8 / fp8) of the same clips
  std::string checkpoint;     // optional EVL head (evl or official .pth); "" = features only
  std::string fuse = "prob";  // view fusion of the head's scores, as evl_eval --fuse
  int64_t limit = -1;         // compare the first N common clips (-1: all of them)
  int64_t batch_size = 16;    // clip-views per load and head forward
  // Optional checks (negative: off); CompareReport::failures lists what fails.
  double max_rel_rms = -1;         // any array of any layer above this relative RMS error
  double min_top1_agreement = -1;  // top-1 agreement of the head below this (needs checkpoint)
};

// Error of B against A over a set of values, accumulated in float64.
struct ArrayError {
  double sum_sq_error = 0;  // sum (b - a)^2
  double sum_sq_ref = 0;    // sum a^2
  double max_abs = 0;       // max |b - a|
  int64_t values = 0;       // elements compared

  // sqrt(sum_sq_error / sum_sq_ref); 0 when both are 0, +inf when only A is 0.
  double rel_rms() const;
  void add(const ArrayError& other);
};

// One decoder layer, named by the backbone block that feeds it.
struct LayerError {
  int64_t block = 0;  // manifest.layers[i]
  ArrayError x, q, k;
};

// One side of the comparison.
struct CompareSide {
  std::string dir;
  cache::DType dtype = cache::DType::kF16;
  cache::StorageMode storage = cache::StorageMode::kQK;
  int64_t records = 0;
  int64_t only_here = 0;               // records whose key the other cache lacks
  std::vector<std::string> only_keys;  // the first few of them (kListedKeys)
};
inline constexpr size_t kListedKeys = 5;

// The head's fused scores on A and on B, over the compared clips that hold the
// same set of views in both caches.
struct HeadAgreement {
  std::string checkpoint, fuse;  // fuse: "prob" or "logits"
  int64_t num_classes = 0;       // K
  int64_t clips = 0;             // clips fused in both caches
  int64_t skipped_clips = 0;     // compared clips whose views differ between A and B
  // max |s_B - s_A| over clips and classes of the fused scores: probabilities
  // with fuse "prob", mean logits with "logits".
  double max_abs_diff = 0;
  double top1_agreement = 0;  // fraction of clips whose argmax agrees (NaN: no clip)
  int64_t labelled = 0;       // fused clips with a label
  double top1_reference = 0, top1_candidate = 0;  // accuracy over them (NaN: none labelled)
};

struct CompareReport {
  CompareSide reference, candidate;
  int64_t common_records = 0;    // keys in both caches
  int64_t compared_clips = 0;    // clips with a common record, after --limit
  int64_t compared_records = 0;  // their common records
  int64_t limit = -1;
  std::vector<LayerError> layers;  // (M) every decoder layer of the caches, in order
  ArrayError x, q, k;              // over all layers
  std::optional<HeadAgreement> head;
  std::vector<std::string> failures;  // the optional checks that failed, in words

  // {"reference": {dir, dtype, storage, records, only_here, only_keys},
  //  "candidate": {..}, "common_records", "compared_clips", "compared_records",
  //  "limit", "features": {"layers": [{"block", "x": {rel_rms, max_abs, values},
  //  "q", "k"}], "overall": {"x", "q", "k"}}, "head": {..} or null,
  //  "failures": [..]}; NaN and inf are written as null.
  std::string to_json() const;
  std::string to_text() const;  // a readable table
};

// Opens both caches and compares them. Records are matched by key; their
// provenance must agree in everything that determines features except storage
// and dtype (check_matches: backbone, layers, frames, stride, sampling, views,
// input size, mean/std, and the seed of augmented views), and a common key must
// name the same video and label in both. Features: every record of the first
// cfg.limit clips that have a common record, through FeatureConverter (all the
// caches' layers). Head: load_inference_head, check_head_fits_cache on both
// caches, eval mode without gradients, fp32 on the CPU, views fused per clip
// with fuse_views as evl_eval does.
// Throws evl::UsageError for bad settings (a threshold without what it needs,
// --limit 0, a bad --fuse), evl::Error naming both caches for a provenance
// mismatch or no common record, and the errors of the cache reader and the
// checkpoint loader.
CompareReport compare_caches(const CompareConfig& cfg);

}  // namespace evl
