// The extraction job: dataset list -> decode -> sample views -> preprocess ->
// frozen CLIP ViT -> cache records, as a oneTBB pipeline of four named stages
// (pipeline_stages.h). Decoding of upcoming clips overlaps the backbone
// forward; backbone batches are formed across clips in list order (so batch
// composition, and the bytes written, do not depend on the number of threads);
// writing is serial and ordered, one commit per batch. Memory is bounded by the
// number of clips in flight, not by the dataset size.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

#include "cache/cache.h"
#include "extract/clip_vit.h"
#include "extract/extract_config.h"

namespace evl {

struct ExtractSummary {
  int64_t clips_in_shard = 0;
  int64_t clips_done = 0;     // extracted in this run
  int64_t clips_skipped = 0;  // already present and valid (resume)
  int64_t clips_failed = 0;   // recorded in the failures file
  int64_t views_written = 0;
  int64_t frames_decoded = 0;
  uint64_t bytes_written = 0;
  double seconds = 0;
  // Time in the write stage (serial; it overlaps the backbone of later batches):
  // all of it (conversion, records, checksums, LMDB puts, durable commits), and
  // the part converting float32 features to the storage dtype (int8/fp8: the
  // range check and the quantization).
  double write_seconds = 0, convert_seconds = 0;
  bool interrupted = false;  // stop flag seen: finished work committed, rerun resumes
  std::string cache_dir, shard_dir, failures_file;
};

// This task's shard: explicit values win; otherwise SLURM_ARRAY_TASK_ID/COUNT,
// then SLURM_PROCID/SLURM_NTASKS, then (0, 1). Throws UsageError if out of range.
std::pair<int, int> resolve_shard(int shard_index, int num_shards);

// Balanced contiguous slice [begin, end) of `n` clips for shard `index` of `count`.
std::pair<int64_t, int64_t> shard_slice(int64_t n, int index, int count);

// The provenance a job with `cfg` writes for a list of `num_clips` clips, without
// shards. Shared with the online training source (train/online_dataset.h), which
// reports the manifest of the cache it stands in for. Throws UsageError for a bad
// --layers, --store or --dtype.
cache::Manifest make_manifest(const ExtractConfig& cfg, const LoadedBackbone& backbone,
                              int64_t num_clips);

// Runs the job. `stop` (may be null) is polled between clips: when it becomes
// true no new clip starts, the clips in flight are finished and committed, and
// the summary says interrupted. Throws evl::Error/UsageError on fatal problems
// (unreadable list, backbone, cache mismatch, too many failures); a video that
// fails to decode is recorded and skipped.
ExtractSummary run_extraction(const ExtractConfig& config, const std::atomic<bool>* stop);

}  // namespace evl
