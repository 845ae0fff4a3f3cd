// The extraction pipeline (pipeline.h): shard resolution, provenance, and
// run_extraction, which chains the stages of pipeline_stages.h in a
// tbb::parallel_pipeline (emit -> decode [parallel] -> backbone [serial,
// batches across clips] -> write [serial, ordered]) and turns stop requests and
// fatal errors into an orderly end: the clips in flight are finished and
// committed, nothing new starts.
#include "extract/pipeline.h"

#include <tbb/global_control.h>
#include <tbb/parallel_pipeline.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/check.h"
#include "common/time.h"
#include "evl/version.h"
#include "extract/pipeline_stages.h"

namespace fs = std::filesystem;

namespace evl {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    EVL_THROW(UsageError, "environment variable ", name, "='", v, "' is not an integer");
  }
}

}  // namespace

std::pair<int, int> resolve_shard(int shard_index, int num_shards) {
  int count = num_shards;
  int index = shard_index;
  if (count < 0) count = env_int("SLURM_ARRAY_TASK_COUNT", -1);
  if (count < 0) count = env_int("SLURM_NTASKS", -1);
  if (count < 0) count = 1;
  if (index < 0) index = env_int("SLURM_ARRAY_TASK_ID", -1);
  if (index < 0) index = env_int("SLURM_PROCID", -1);
  if (index < 0) index = 0;
  // Slurm array ids may start anywhere (--array=1-4): shift by the minimum.
  if (shard_index < 0 && std::getenv("SLURM_ARRAY_TASK_ID") && std::getenv("SLURM_ARRAY_TASK_MIN"))
    index -= env_int("SLURM_ARRAY_TASK_MIN", 0);
  EVL_CHECK_USAGE(count >= 1, "--num-shards must be >= 1, got ", count);
  EVL_CHECK_USAGE(index >= 0 && index < count, "--shard-index ", index, " is outside [0, ", count,
                  ")");
  return {index, count};
}

std::pair<int64_t, int64_t> shard_slice(int64_t n, int index, int count) {
  return {n * index / count, n * (index + 1) / count};
}

cache::Manifest make_manifest(const ExtractConfig& cfg, const LoadedBackbone& backbone,
                              int64_t num_clips) {
  const VitArch& arch = backbone.arch;
  const ViewSettings& v = cfg.views;
  const int64_t input_size = v.input_size > 0 ? v.input_size : arch.image_size;
  const SamplingConfig scfg = sampling_config(v, cfg.seed, input_size);
  cache::Manifest manifest;
  manifest.tool_version = EVL_VERSION;
  manifest.created = utc_now_iso8601();
  manifest.backbone.file = fs::path(cfg.backbone).filename().string();
  manifest.backbone.hash = backbone.file_hash;
  manifest.backbone.format = backbone.format;
  manifest.backbone.width = arch.width;
  manifest.backbone.depth = arch.depth;
  manifest.backbone.heads = arch.heads;
  manifest.backbone.patch = arch.patch;
  manifest.backbone.grid = input_size / arch.patch;
  manifest.backbone.input_size = input_size;
  manifest.layers = resolve_blocks(v.layers, arch.depth);
  manifest.storage = cache::parse_storage_mode(cfg.store);
  manifest.dtype = cache::parse_dtype(v.dtype);
  manifest.frames = v.frames;
  manifest.stride = v.tsn() ? 0 : v.stride;
  manifest.sampling = v.sampling;
  manifest.temporal_views = v.train_views > 0 ? 1 : v.temporal_views;
  manifest.spatial_views = v.train_views > 0 ? 1 : v.spatial_views;
  manifest.train_views = v.train_views;
  manifest.augment = v.augmentation();
  manifest.mean.assign(scfg.mean.begin(), scfg.mean.end());
  manifest.std.assign(scfg.std.begin(), scfg.std.end());
  manifest.seed = cfg.seed;
  manifest.has_inputs = cfg.save_inputs;
  manifest.list_file = fs::path(cfg.list).filename().string();
  manifest.num_clips = num_clips;
  return manifest;
}

ExtractSummary run_extraction(const ExtractConfig& cfg, const std::atomic<bool>* stop) {
  ExtractionJob job(cfg);
  tbb::global_control tbb_threads(tbb::global_control::max_allowed_parallelism,
                                  static_cast<size_t>(job.threads() + 1));
  // A fatal error stops the job: set from the serial stages, read by the emitter.
  std::mutex fatal_mu;
  std::string fatal;
  std::atomic<bool> has_fatal{false};
  auto set_fatal = [&](std::string message) {
    std::lock_guard<std::mutex> lock(fatal_mu);
    if (fatal.empty()) fatal = std::move(message);
    has_fatal = true;
  };
  // Items are ClipWork*: ownership passes along the stages; a null ClipWork
  // marks the end of input (it flushes the last batch).
  bool sent_end = false;
  const auto tokens =
      static_cast<size_t>(std::max<int64_t>(2 * job.threads() + 2, 2 * job.group_size() + 2));
  tbb::parallel_pipeline(
      tokens, tbb::make_filter<void, ClipWork*>(tbb::filter_mode::serial_in_order,
                                                [&](tbb::flow_control& fc) -> ClipWork* {
                                                  const bool stopping =
                                                      (stop && stop->load()) || has_fatal.load();
                                                  if (!stopping)
                                                    if (auto w = job.emit()) return w.release();
                                                  if (!sent_end) {
                                                    sent_end = true;
                                                    return nullptr;
                                                  }
                                                  fc.stop();
                                                  return nullptr;
                                                }) &
                  tbb::make_filter<ClipWork*, ClipWork*>(tbb::filter_mode::parallel,
                                                         [&](ClipWork* w) -> ClipWork* {
                                                           if (w) job.decode(*w);
                                                           return w;
                                                         }) &
                  tbb::make_filter<ClipWork*, Batch*>(
                      tbb::filter_mode::serial_in_order,
                      [&](ClipWork* w) -> Batch* {
                        std::unique_ptr<Batch> batch = job.collect(std::unique_ptr<ClipWork>(w));
                        if (batch && !has_fatal.load()) {
                          try {
                            job.forward(*batch);
                          } catch (const std::exception& e) {
                            set_fatal(str("backbone forward failed: ", e.what()));
                          }
                        }
                        return batch.release();
                      }) &
                  tbb::make_filter<Batch*, void>(tbb::filter_mode::serial_in_order, [&](Batch* b) {
                    std::unique_ptr<Batch> batch(b);
                    if (!batch || has_fatal.load()) return;
                    const std::string message = job.write(*batch);
                    if (!message.empty()) set_fatal(message);
                  }));
  if (!fatal.empty()) {
    job.abandon();  // what was written stays committed; no manifest, a rerun resumes
    EVL_THROW(Error, fatal);
  }
  return job.finish(stop && stop->load());
}

}  // namespace evl
