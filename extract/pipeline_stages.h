// The stages of an extraction task (pipeline.h), each a method that a reader
// can find and a test can run on its own; run_extraction (pipeline.cpp) only
// chains them in a tbb::parallel_pipeline and handles stop requests and fatal
// errors:
//
//   plan      ExtractionJob(cfg): list, shard slice, backbone, provenance check,
//             resume (which clips are still to do)
//   1 emit    emit(): the next clip to do, in list order            [serial]
//   2 decode  decode(w): video -> views (pixels), PNG dumps         [parallel]
//   3 batch   collect(w): clips into backbone batches of consecutive
//             list groups; forward(b): the backbone over a batch,
//             features regrouped per clip and view                  [serial]
//   4 write   write(b): records or failures, one durable commit     [serial, in order]
//   finish    finish(): final commit, shard manifest, the summary
//
// Batches are fixed groups of batch_size / views_per_clip consecutive list
// entries, and shards take whole groups, so batch composition (and therefore
// the bytes written: GEMM results depend on the batch) depends only on the list
// and --batch-size, never on threads, sharding or resume.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache.h"
#include "common/progress.h"
#include "extract/clip_vit.h"
#include "extract/dataset_list.h"
#include "extract/extract_config.h"
#include "extract/features.h"
#include "extract/pipeline.h"
#include "extract/views.h"

namespace evl {

// One clip travelling through the stages.
struct ClipWork {
  int64_t clip_index = -1;  // position in the list
  const ClipEntry* entry = nullptr;
  std::vector<ClipView> views;  // decode: the clip's views, (T, 3, S, S) pixels each
  int64_t frames_decoded = 0;
  std::string error;      // non-empty: the clip failed; it is recorded, not written
  ViewFeatures features;  // forward: per stored block (V, T, L, C) float32, V = views.size()
};

using Batch = std::vector<std::unique_ptr<ClipWork>>;

class ExtractionJob {
 public:
  // Plans the task. Throws UsageError for bad settings, evl::Error for an
  // unreadable list or backbone, or a cache made with other settings.
  explicit ExtractionJob(const ExtractConfig& cfg);
  ~ExtractionJob();

  const ExtractConfig& config() const { return cfg_; }
  const cache::Manifest& manifest() const { return manifest_; }
  const std::vector<int64_t>& todo() const { return todo_; }  // clip indices still to do
  int64_t group_size() const { return group_; }               // clips per backbone batch
  int threads() const { return threads_; }

  // 1. The next clip of todo(), or null when all have been emitted.
  std::unique_ptr<ClipWork> emit();
  // 2. Decodes `w`'s video and makes its views; a failure goes into w.error.
  // Thread-safe.
  void decode(ClipWork& w) const;
  // 3a. Adds `w` (null: the end of input) to the pending group; returns the
  // completed group when `w` starts a new one or ends the input, else null.
  std::unique_ptr<Batch> collect(std::unique_ptr<ClipWork> w);
  // 3b. Runs the backbone over the views of the batch's good clips, in forwards
  // of --batch-size views, and fills each clip's features.
  void forward(Batch& batch);
  // 4. Writes the batch's records (failed clips go to the failures file) and
  // commits them durably. With --dtype int8/fp8 a clip whose features hold a NaN
  // or inf (or exceed the fp16 scales' range) fails too, its reason starting
  // "non-finite features" ("features out of range"), instead of being stored. Returns a fatal
  // message when more videos failed than
  // --max-failures allows (the batch is still committed), else "".
  std::string write(Batch& batch);
  // The last commit, then the shard manifest (unless `interrupted` and clips
  // are left), the summary.
  ExtractSummary finish(bool interrupted);
  // After a fatal error: the last commit, no manifest (a rerun resumes).
  void abandon();
  // The summary so far (finish() completes it).
  const ExtractSummary& summary() const { return summary_; }

 private:
  void record_failure(const ClipWork& w);

  ExtractConfig cfg_;
  int threads_ = 1;
  int shard_index_ = 0, num_shards_ = 1;
  std::string shard_;
  std::vector<ClipEntry> entries_;
  int64_t group_ = 1, views_per_clip_ = 1;
  LoadedBackbone backbone_;
  std::vector<int64_t> layers_, stored_blocks_;
  cache::StorageMode storage_ = cache::StorageMode::kQK;
  cache::DType dtype_ = cache::DType::kF16;
  SamplingConfig sampling_;
  cache::Manifest manifest_;
  std::unique_ptr<cache::ShardWriter> writer_;
  std::vector<int64_t> todo_;
  size_t next_ = 0;
  Batch pending_;
  std::unique_ptr<Progress> progress_;
  std::chrono::steady_clock::time_point start_;
  ExtractSummary summary_;
};

}  // namespace evl
