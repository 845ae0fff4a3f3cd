// The extraction pipeline (pipeline.h): shard slicing, resume, a four-stage
// tbb::parallel_pipeline (emit -> decode+views [parallel] -> backbone [serial,
// batches across clips] -> write [serial, ordered]), failures file, manifest.
#include "extract/pipeline.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <tbb/global_control.h>
#include <tbb/parallel_pipeline.h>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "cache/cache.h"
#include "common/check.h"
#include "common/log.h"
#include "common/progress.h"
#include "evl/version.h"
#include "extract/clip_vit.h"
#include "extract/dataset_list.h"
#include "extract/frame_dump.h"
#include "extract/video_reader.h"
#include "extract/views.h"

namespace fs = std::filesystem;

namespace evl {

namespace {

// One clip travelling through the pipeline.
struct ClipWork {
  int64_t clip_index = -1;  // position in the list
  const ClipEntry* entry = nullptr;
  std::vector<ClipView> views;
  int64_t frames_decoded = 0;
  std::string error;  // non-empty: the clip failed and is recorded, not written
  // Filled by the backbone stage: per view, per stored block, (T, L, C) float32.
  std::vector<std::vector<torch::Tensor>> x, q, k;
  bool flush = false;  // sentinel: end of input, flush the pending batch
};

using Batch = std::vector<std::unique_ptr<ClipWork>>;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    EVL_THROW(UsageError, "environment variable ", name, "='", v, "' is not an integer");
  }
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

cache::Array to_array(const torch::Tensor& t, cache::DType dtype) {
  torch::ScalarType st = torch::kFloat32;
  if (dtype == cache::DType::kF16) st = torch::kFloat16;
  if (dtype == cache::DType::kBF16) st = torch::kBFloat16;
  const torch::Tensor c = t.to(torch::kCPU, st).contiguous();
  cache::Array a;
  a.dtype = dtype;
  a.shape.assign(c.sizes().begin(), c.sizes().end());
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  a.bytes.assign(p, p + c.nbytes());
  return a;
}

void validate(const ExtractConfig& cfg) {
  EVL_CHECK_USAGE(!cfg.list.empty(), "--list is required");
  EVL_CHECK_USAGE(!cfg.backbone.empty(), "--backbone is required");
  EVL_CHECK_USAGE(!cfg.out.empty(), "--out is required");
  EVL_CHECK_USAGE(cfg.frames >= 1, "--frames must be >= 1, got ", cfg.frames);
  EVL_CHECK_USAGE(cfg.sampling == "dense" || cfg.sampling == "tsn",
                  "--sampling must be dense or tsn, got '", cfg.sampling, "'");
  EVL_CHECK_USAGE(cfg.sampling == "tsn" || cfg.stride >= 1, "--stride must be >= 1");
  EVL_CHECK_USAGE(cfg.temporal_views >= 1 && cfg.spatial_views >= 1,
                  "--temporal-views and --spatial-views must be >= 1");
  EVL_CHECK_USAGE(cfg.spatial_views == 1 || cfg.spatial_views == 3,
                  "--spatial-views must be 1 or 3 (official crops), got ", cfg.spatial_views);
  EVL_CHECK_USAGE(cfg.train_views >= 0, "--train-views must be >= 0");
  EVL_CHECK_USAGE(cfg.batch_size >= 1, "--batch-size must be >= 1");
  EVL_CHECK_USAGE(cfg.threads >= 0, "--threads must be >= 0");
}

// Writes the top-level manifest once every shard of the job has finished:
// each task leaves <shard>.manifest.json; the last one to finish (under an
// flock) joins them into manifest.json. A single-shard job writes it directly.
void publish_manifest(const std::string& out, const cache::Manifest& shard_manifest,
                      const std::string& shard, int num_shards) {
  const fs::path partial = fs::path(out) / (shard + ".manifest.json");
  {
    const fs::path tmp = partial.string() + ".tmp";
    std::ofstream(tmp) << shard_manifest.to_json();
    fs::rename(tmp, partial);
  }
  const std::string lock_path = (fs::path(out) / ".manifest.lock").string();
  const int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR, 0644);
  EVL_CHECK(fd >= 0, "cache '", out, "': cannot open ", lock_path);
  ::flock(fd, LOCK_EX);
  try {
    cache::Manifest joined = shard_manifest;
    joined.shards.clear();
    bool complete = true;
    for (int i = 0; i < num_shards; ++i) {
      const std::string name = cache::shard_name(i, num_shards);
      const fs::path p = fs::path(out) / (name + ".manifest.json");
      if (!fs::exists(p)) {
        complete = false;
        break;
      }
      std::ifstream in(p);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      const cache::Manifest m = cache::Manifest::from_json(text, p.string());
      cache::check_matches(shard_manifest, m, p.string());
      joined.shards.insert(joined.shards.end(), m.shards.begin(), m.shards.end());
    }
    if (complete) joined.save(out);
  } catch (...) {
    ::flock(fd, LOCK_UN);
    ::close(fd);
    throw;
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
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

SamplingConfig sampling_config(const ExtractConfig& cfg, int64_t input_size) {
  SamplingConfig s;
  s.frames = cfg.frames;
  s.stride = cfg.stride;
  s.tsn = cfg.sampling == "tsn";
  s.temporal_views = cfg.temporal_views;
  s.spatial_views = cfg.spatial_views;
  s.train_views = cfg.train_views;
  s.input_size = input_size;
  s.flip = cfg.flip;
  s.photometric = cfg.photometric;
  s.seed = cfg.seed;
  return s;
}

Precision resolve_precision(const std::string& name, const torch::Device& device) {
  if (name == "auto") return device.is_cuda() ? Precision::kFP16 : Precision::kFP32;
  if (name == "fp32") return Precision::kFP32;
  if (name == "bf16") return Precision::kBF16;
  if (name == "fp16") return Precision::kFP16;
  EVL_THROW(UsageError, "--precision '", name, "': expected auto, fp32, bf16 or fp16");
}

cache::Manifest make_manifest(const ExtractConfig& cfg, const LoadedBackbone& backbone,
                              int64_t num_clips) {
  const VitArch& arch = backbone.arch;
  const int64_t input_size = cfg.input_size > 0 ? cfg.input_size : arch.image_size;
  const SamplingConfig scfg = sampling_config(cfg, input_size);
  cache::Manifest manifest;
  manifest.tool_version = EVL_VERSION;
  manifest.created = utc_now();
  manifest.backbone.file = fs::path(cfg.backbone).filename().string();
  manifest.backbone.hash = backbone.file_hash;
  manifest.backbone.format = backbone.format;
  manifest.backbone.width = arch.width;
  manifest.backbone.depth = arch.depth;
  manifest.backbone.heads = arch.heads;
  manifest.backbone.patch = arch.patch;
  manifest.backbone.grid = input_size / arch.patch;
  manifest.backbone.input_size = input_size;
  manifest.layers = resolve_blocks(cfg.layers, arch.depth);
  manifest.storage = cache::parse_storage_mode(cfg.store);
  manifest.dtype = cache::parse_dtype(cfg.dtype);
  manifest.frames = cfg.frames;
  manifest.stride = cfg.sampling == "tsn" ? 0 : cfg.stride;
  manifest.sampling = cfg.sampling;
  manifest.temporal_views = cfg.train_views > 0 ? 1 : cfg.temporal_views;
  manifest.spatial_views = cfg.train_views > 0 ? 1 : cfg.spatial_views;
  manifest.train_views = cfg.train_views;
  manifest.mean.assign(scfg.mean.begin(), scfg.mean.end());
  manifest.std.assign(scfg.std.begin(), scfg.std.end());
  manifest.seed = cfg.seed;
  manifest.has_inputs = cfg.save_inputs;
  manifest.list_file = fs::path(cfg.list).filename().string();
  manifest.num_clips = num_clips;
  return manifest;
}

ExtractSummary run_extraction(const ExtractConfig& cfg, const std::atomic<bool>* stop) {
  validate(cfg);
  const auto start_time = std::chrono::steady_clock::now();
  const auto [shard_index, num_shards] = resolve_shard(cfg.shard_index, cfg.num_shards);
  const int threads =
      cfg.threads > 0 ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
  tbb::global_control tbb_threads(tbb::global_control::max_allowed_parallelism, threads + 1);

  // The list and this task's slice of it.
  std::vector<ClipEntry> entries = read_dataset_list(cfg.list);
  if (cfg.limit > 0 && static_cast<int64_t>(entries.size()) > cfg.limit) entries.resize(cfg.limit);
  // Clips are processed in fixed groups of consecutive list entries, one group
  // per backbone batch, and shards take whole groups. Batch composition then
  // depends only on the list and --batch-size, never on threads, sharding or
  // resume, so every run writes the same bytes (GEMM results depend on the batch).
  const int64_t views_per_clip =
      cfg.train_views > 0 ? cfg.train_views : cfg.temporal_views * cfg.spatial_views;
  const int64_t group = std::max<int64_t>(1, cfg.batch_size / views_per_clip);
  const int64_t num_clips = static_cast<int64_t>(entries.size());
  const auto [group_begin, group_end] =
      shard_slice((num_clips + group - 1) / group, shard_index, num_shards);
  const int64_t begin = std::min(num_clips, group_begin * group);
  const int64_t end = std::min(num_clips, group_end * group);

  // The backbone and the blocks to store.
  const torch::Device device(cfg.device);
  BackboneOptions bopts;
  bopts.input_size = cfg.input_size;
  bopts.device = device;
  bopts.precision = resolve_precision(cfg.precision, device);
  LoadedBackbone backbone = load_backbone(cfg.backbone, bopts);
  const VitArch& arch = backbone.arch;
  const int64_t input_size = cfg.input_size > 0 ? cfg.input_size : arch.image_size;
  const std::vector<int64_t> layers = resolve_blocks(cfg.layers, arch.depth);
  const cache::StorageMode storage = cache::parse_storage_mode(cfg.store);
  const cache::DType dtype = cache::parse_dtype(cfg.dtype);
  std::vector<int64_t> stored_blocks = layers;  // blocks whose X is stored
  if (storage == cache::StorageMode::kCompact) {
    for (size_t i = 1; i < layers.size(); ++i)
      EVL_CHECK_USAGE(layers[i] == layers[i - 1] + 1,
                      "--store compact needs consecutive --layers, got '", cfg.layers, "'");
    EVL_CHECK_USAGE(layers.front() >= 1, "--store compact needs the output of block ",
                    layers.front() - 1,
                    ", which does not exist; use --store qk with layers starting at block 0");
    stored_blocks.insert(stored_blocks.begin(), layers.front() - 1);
  }

  // Provenance.
  const cache::Manifest manifest = make_manifest(cfg, backbone, num_clips);
  const SamplingConfig scfg = sampling_config(cfg, input_size);

  // Refuse to mix features into a cache made differently.
  fs::create_directories(cfg.out);
  if (fs::exists(fs::path(cfg.out) / "manifest.json")) {
    const cache::Manifest existing = cache::Manifest::load(cfg.out);
    cache::check_matches(manifest, existing, (fs::path(cfg.out) / "manifest.json").string());
  }
  if (storage == cache::StorageMode::kCompact) {
    cache::Record w;
    w.key = "qk_weights";
    for (const int64_t b : layers) {
      const auto qk = backbone.model->qk_weights(b);
      const std::string s = "." + std::to_string(b);
      w.arrays.emplace_back("ln_1.weight" + s, to_array(qk.ln_weight, cache::DType::kF32));
      w.arrays.emplace_back("ln_1.bias" + s, to_array(qk.ln_bias, cache::DType::kF32));
      w.arrays.emplace_back("q_proj.weight" + s, to_array(qk.q_weight, cache::DType::kF32));
      w.arrays.emplace_back("q_proj.bias" + s, to_array(qk.q_bias, cache::DType::kF32));
      w.arrays.emplace_back("k_proj.weight" + s, to_array(qk.k_weight, cache::DType::kF32));
      w.arrays.emplace_back("k_proj.bias" + s, to_array(qk.k_bias, cache::DType::kF32));
    }
    cache::save_qk_weights(cfg.out, w);
  }

  ExtractSummary summary;
  summary.cache_dir = cfg.out;
  const std::string shard = cache::shard_name(shard_index, num_shards);
  summary.shard_dir = (fs::path(cfg.out) / shard).string();
  summary.failures_file = !cfg.failures.empty() ? cfg.failures
                          : num_shards == 1
                              ? (fs::path(cfg.out) / "failures.tsv").string()
                              : (fs::path(cfg.out) / ("failures-" + shard + ".tsv")).string();
  summary.clips_in_shard = end - begin;

  cache::ShardWriter writer(summary.shard_dir);
  EVL_CHECK(manifest.views_per_clip() == views_per_clip, "internal: views per clip mismatch");

  // Resume: groups whose every view is committed and valid are skipped; a
  // partly written group is redone whole (same batch, same bytes).
  std::vector<int64_t> todo;
  for (int64_t g = begin; g < end; g += group) {
    const int64_t g_end = std::min(end, g + group);
    bool present = true;
    for (int64_t c = g; c < g_end && present; ++c)
      for (int32_t v = 0; v < views_per_clip && present; ++v)
        present = writer.contains_valid(cache::make_key(c, v));
    for (int64_t c = g; c < g_end; ++c) {
      if (present)
        ++summary.clips_skipped;
      else
        todo.push_back(c);
    }
  }
  if (summary.clips_skipped > 0)
    log::info("resuming: ", summary.clips_skipped, " of ", summary.clips_in_shard,
              " clips already in ", summary.shard_dir);

  std::ofstream failures(summary.failures_file, std::ios::app);
  EVL_CHECK(failures, "cannot open failures file '", summary.failures_file, "'");
  if (!cfg.dump_frames.empty()) fs::create_directories(cfg.dump_frames);

  Progress progress("extract " + shard, static_cast<int64_t>(todo.size()), "clips");
  size_t next = 0;
  bool sent_flush = false;
  Batch pending;  // clips of the current group, waiting for the group to complete
  // A fatal error stops the job: set from the serial stages, read by the emitter.
  std::mutex fatal_mu;
  std::string fatal;
  std::atomic<bool> has_fatal{false};
  auto set_fatal = [&](std::string message) {
    std::lock_guard<std::mutex> lock(fatal_mu);
    if (fatal.empty()) fatal = std::move(message);
    has_fatal = true;
  };

  auto run_backbone = [&](Batch& batch) {
    std::vector<torch::Tensor> images;  // each (V*T, 3, S, S)
    for (auto& w : batch)
      for (auto& v : w->views) images.push_back(v.pixels);
    if (images.empty()) return;
    // Forward in chunks of --batch-size views (a group can exceed it when one
    // clip has more views than the batch size).
    const torch::Tensor all = torch::cat(images, 0);
    const int64_t chunk = cfg.batch_size * cfg.frames;
    BackboneOutput out;
    std::vector<std::vector<torch::Tensor>> xs(stored_blocks.size()), qs(stored_blocks.size()),
        ks(stored_blocks.size());
    for (int64_t r = 0; r < all.size(0); r += chunk) {
      BackboneOutput part = backbone.model->forward(
          all.narrow(0, r, std::min(chunk, all.size(0) - r)).to(device), stored_blocks);
      for (size_t i = 0; i < part.layers.size(); ++i) {
        xs[i].push_back(part.layers[i].x.cpu());
        if (storage == cache::StorageMode::kQK) {
          qs[i].push_back(part.layers[i].q.cpu());
          ks[i].push_back(part.layers[i].k.cpu());
        }
      }
    }
    for (size_t i = 0; i < stored_blocks.size(); ++i) {
      LayerFeatures lf;
      lf.block = stored_blocks[i];
      lf.x = torch::cat(xs[i], 0);
      if (storage == cache::StorageMode::kQK) {
        lf.q = torch::cat(qs[i], 0);
        lf.k = torch::cat(ks[i], 0);
      }
      out.layers.push_back(std::move(lf));
    }
    int64_t row = 0;
    const int64_t t = cfg.frames;
    for (auto& w : batch) {
      if (!w->error.empty()) continue;
      for (size_t v = 0; v < w->views.size(); ++v, row += t) {
        std::vector<torch::Tensor> view_x, view_q, view_k;
        for (size_t i = 0; i < out.layers.size(); ++i) {
          const auto& lf = out.layers[i];
          view_x.push_back(lf.x.narrow(0, row, t));
          if (storage == cache::StorageMode::kQK) {  // compact: Q/K are recomputed later
            view_q.push_back(lf.q.narrow(0, row, t));
            view_k.push_back(lf.k.narrow(0, row, t));
          }
        }
        w->x.push_back(std::move(view_x));
        w->q.push_back(std::move(view_q));
        w->k.push_back(std::move(view_k));
      }
    }
  };

  tbb::parallel_pipeline(
      static_cast<size_t>(std::max<int64_t>(2 * threads + 2, 2 * group + 2)),
      // 1. emit clips in list order; stop early on a stop request or fatal error
      tbb::make_filter<void, ClipWork*>(tbb::filter_mode::serial_in_order,
                                        [&](tbb::flow_control& fc) -> ClipWork* {
                                          const bool stopping =
                                              (stop && stop->load()) || has_fatal.load();
                                          if (next < todo.size() && !stopping) {
                                            auto* w = new ClipWork;
                                            w->clip_index = todo[next++];
                                            w->entry = &entries[static_cast<size_t>(w->clip_index)];
                                            return w;
                                          }
                                          if (!sent_flush) {
                                            sent_flush = true;
                                            auto* w = new ClipWork;
                                            w->flush = true;
                                            return w;
                                          }
                                          fc.stop();
                                          return nullptr;
                                        }) &
          // 2. decode, sample and preprocess (parallel across clips)
          tbb::make_filter<ClipWork*, ClipWork*>(
              tbb::filter_mode::parallel,
              [&](ClipWork* w) -> ClipWork* {
                if (w->flush) return w;
                const std::string path = resolve_video_path(*w->entry, cfg.root);
                try {
                  w->views = load_clip_views(path, *w->entry, scfg, w->clip_index);
                  EVL_CHECK(static_cast<int64_t>(w->views.size()) == views_per_clip, "video '",
                            path, "': expected ", views_per_clip, " views, got ", w->views.size());
                  for (const auto& v : w->views)
                    w->frames_decoded += static_cast<int64_t>(v.frame_indices.size());
                  if (!cfg.dump_frames.empty())
                    for (const auto& v : w->views)
                      dump_view_png(
                          v, scfg, cfg.dump_frames,
                          cache::make_key(w->clip_index, v.view_index).replace(10, 1, "_"));
                } catch (const std::exception& e) {
                  w->error = e.what();
                  w->views.clear();
                }
                return w;
              }) &
          // 3. backbone forward over batches formed across clips, in list order
          tbb::make_filter<ClipWork*, Batch*>(
              tbb::filter_mode::serial_in_order,
              [&](ClipWork* w) -> Batch* {
                std::unique_ptr<ClipWork> owned(w);
                // A clip of a new group (or the end) completes the pending group.
                Batch* batch = nullptr;
                if (!pending.empty() &&
                    (w->flush || w->clip_index / group != pending.front()->clip_index / group)) {
                  batch = new Batch(std::move(pending));
                  pending.clear();
                  try {
                    run_backbone(*batch);
                  } catch (const std::exception& e) {
                    set_fatal(str("backbone forward failed: ", e.what()));
                  }
                }
                if (!w->flush) pending.push_back(std::move(owned));
                return batch;
              }) &
          // 4. write records (serial, ordered), one durable commit per batch
          tbb::make_filter<Batch*, void>(tbb::filter_mode::serial_in_order, [&](Batch* b) {
            std::unique_ptr<Batch> batch(b);
            if (!batch || has_fatal.load()) return;
            for (auto& w : *batch) {
              if (!w->error.empty()) {
                ++summary.clips_failed;
                failures << w->entry->path << '\t' << w->entry->line << '\t' << w->error << '\n';
                failures.flush();
                log::warn("skipping clip ", w->clip_index, ": ", w->error);
                if (cfg.max_failures >= 0 && summary.clips_failed > cfg.max_failures)
                  set_fatal(str(summary.clips_failed, " videos failed, more than --max-failures ",
                                cfg.max_failures, "; see ", summary.failures_file));
                progress.advance();
                continue;
              }
              for (size_t v = 0; v < w->views.size(); ++v) {
                const ClipView& view = w->views[v];
                cache::Record r;
                r.clip_index = w->clip_index;
                r.view_index = view.view_index;
                r.key = cache::make_key(w->clip_index, view.view_index);
                r.video_id = w->entry->path;
                r.label = w->entry->label;
                r.view = view.description;
                r.arrays.emplace_back("x", to_array(torch::stack(w->x[v]), dtype));
                if (storage == cache::StorageMode::kQK) {
                  r.arrays.emplace_back("q", to_array(torch::stack(w->q[v]), dtype));
                  r.arrays.emplace_back("k", to_array(torch::stack(w->k[v]), dtype));
                }
                if (cfg.save_inputs)
                  r.arrays.emplace_back("inputs", to_array(view.pixels, cache::DType::kF32));
                writer.put(r);
                ++summary.views_written;
              }
              summary.frames_decoded += w->frames_decoded;
              ++summary.clips_done;
              progress.advance();
            }
            writer.commit();
          }));
  writer.commit();
  progress.finish();
  EVL_CHECK(fatal.empty(), fatal);

  summary.interrupted =
      stop && stop->load() &&
      summary.clips_done + summary.clips_failed < static_cast<int64_t>(todo.size());
  summary.bytes_written = writer.bytes_written();
  if (!summary.interrupted) {
    cache::Manifest shard_manifest = manifest;
    shard_manifest.shards = {{shard, writer.committed_records()}};
    publish_manifest(cfg.out, shard_manifest, shard, num_shards);
  }
  summary.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  return summary;
}

}  // namespace evl
