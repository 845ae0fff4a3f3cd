// The stages of an extraction task (pipeline_stages.h): planning and resume,
// decoding into views, batching and the backbone forward, writing records and
// failures, and publishing the shard's manifest.
#include "extract/pipeline_stages.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <tbb/global_control.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "cache/quantize.h"
#include "cache/torch_interop.h"
#include "common/atomic_file.h"
#include "common/check.h"
#include "common/log.h"
#include "extract/frame_dump.h"

namespace fs = std::filesystem;

namespace evl {

namespace {

cache::Array to_array(const torch::Tensor& t, cache::DType dtype) {
  if (cache::is_quantized(dtype)) {  // codes + group scales (cache/quantize.h)
    const torch::Tensor f = t.to(torch::kCPU, torch::kFloat).contiguous();
    return cache::make_array(dtype, f.sizes().vec(), f.data_ptr<float>(),
                             static_cast<size_t>(f.numel()));
  }
  const torch::Tensor c = t.to(torch::kCPU, cache::torch_dtype(dtype)).contiguous();
  cache::Array a;
  a.dtype = dtype;
  a.shape.assign(c.sizes().begin(), c.sizes().end());
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  a.bytes.assign(p, p + c.nbytes());
  return a;
}

// Why a clip's features cannot be stored as `dtype`, "" when they can: int8
// and fp8 hold neither NaN nor inf (fp16/bf16/fp32 store them as they are).
// `blocks`: the backbone block of each entry of f.x (and of f.q, f.k).
std::string storage_problem(const ViewFeatures& f, cache::DType dtype,
                            const std::vector<int64_t>& blocks) {
  if (!cache::is_quantized(dtype)) return "";
  for (const auto& [name, tensors] :
       {std::pair{"x", &f.x}, std::pair{"q", &f.q}, std::pair{"k", &f.k}})
    for (size_t i = 0; i < tensors->size(); ++i) {
      const torch::Tensor c = (*tensors)[i].to(torch::kCPU, torch::kFloat).contiguous();
      const std::string why =
          cache::quantization_problem(dtype, c.sizes().vec(), c.data_ptr<float>());
      if (!why.empty()) return str(why, " (", name, " of block ", blocks[i], ")");
    }
  return "";
}

void validate(const ExtractConfig& cfg) {
  EVL_CHECK_USAGE(!cfg.list.empty(), "--list is required");
  EVL_CHECK_USAGE(!cfg.backbone.empty(), "--backbone is required");
  EVL_CHECK_USAGE(!cfg.out.empty(), "--out is required");
  validate_view_settings(cfg.views, ViewUse::kExtract, ViewTool::kExtract);
  cache::parse_storage_mode(cfg.store);
  EVL_CHECK_USAGE(cfg.batch_size >= 1 && cfg.batch_size <= 65536,
                  "--batch-size must be in [1, 65536], got ", cfg.batch_size);
  EVL_CHECK_USAGE(cfg.threads >= 0 && cfg.threads <= 4096, "--threads must be in [0, 4096], got ",
                  cfg.threads);
  EVL_CHECK_USAGE(cfg.limit >= 0, "--limit must be >= 0 (0: all), got ", cfg.limit);
  EVL_CHECK_USAGE(cfg.max_decoded_mib >= 1 && cfg.max_decoded_mib <= (int64_t(1) << 24),
                  "--max-decoded-mib must be in [1, 16777216], got ", cfg.max_decoded_mib);
}

// --device as a torch::Device, refusing one this LibTorch cannot use with a
// one-line usage error (not a dispatcher trace from the first tensor op).
torch::Device parse_device(const std::string& name) {
  std::unique_ptr<torch::Device> device;
  try {
    device = std::make_unique<torch::Device>(name);
  } catch (const std::exception& e) {
    EVL_THROW(UsageError, "--device '", name, "': ", strip_backtrace(e.what()));
  }
  EVL_CHECK_USAGE(!device->is_cuda() || torch::cuda::is_available(), "--device ", name,
                  ": this LibTorch has no CUDA device available (Debian's LibTorch is CPU-only; "
                  "use --device cpu)");
  return *device;
}

// Holds an exclusive flock on `path` (created if needed) for its lifetime.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_CREAT | O_RDWR, 0644)) {
    EVL_CHECK(fd_ >= 0, "cannot open lock file '", path, "'");
    ::flock(fd_, LOCK_EX);
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

// Writes the top-level manifest once every shard of the job has finished:
// each task leaves <shard>.manifest.json; the last one to finish (under an
// flock) joins them into manifest.json. A single-shard job writes it directly.
void publish_manifest(const std::string& out, const cache::Manifest& shard_manifest,
                      const std::string& shard, int num_shards) {
  write_file_atomic((fs::path(out) / (shard + ".manifest.json")).string(),
                    shard_manifest.to_json());
  FileLock lock((fs::path(out) / ".manifest.lock").string());
  cache::Manifest joined = shard_manifest;
  joined.shards.clear();
  for (int i = 0; i < num_shards; ++i) {
    const fs::path p = fs::path(out) / (cache::shard_name(i, num_shards) + ".manifest.json");
    if (!fs::exists(p)) return;  // another task will finish the job
    const cache::Manifest m = cache::Manifest::from_json(read_file(p.string()), p.string());
    cache::check_matches(shard_manifest, m, p.string());
    joined.shards.insert(joined.shards.end(), m.shards.begin(), m.shards.end());
  }
  joined.save(out);
}

// The job's provenance is written to <out>/provenance.json before the first
// record, so that an unfinished cache (killed before its manifest) and a
// second writer on the same --out are checked as a finished one is: under the
// manifest lock, this job's provenance must equal what provenance.json and
// manifest.json say in every field but num_clips (a different --limit extends
// or cuts the same list; the keys still name the same clips).
void check_and_record_provenance(const std::string& out, const cache::Manifest& manifest) {
  std::vector<std::string> fields;
  for (const auto& f : cache::provenance_fields())
    if (f != "num_clips") fields.push_back(f);
  cache::Manifest mine = manifest;
  mine.shards.clear();
  const fs::path prov = fs::path(out) / "provenance.json";
  FileLock lock((fs::path(out) / ".manifest.lock").string());
  for (const fs::path& p : {prov, fs::path(out) / "manifest.json"}) {
    std::error_code ec;
    if (!fs::exists(p, ec)) continue;
    const cache::Manifest existing = cache::Manifest::from_json(read_file(p.string()), p.string());
    try {
      cache::check_matches(existing, mine, p.string(), fields);
    } catch (const Error& e) {
      EVL_THROW(UsageError, "--out '", out,
                "' holds a cache extracted with other settings: ", e.what(),
                " (this run's value first); resume with that cache's settings, or ",
                "choose another --out");
    }
  }
  if (!fs::exists(prov)) write_file_atomic(prov.string(), mine.to_json());
}

}  // namespace

ExtractionJob::ExtractionJob(const ExtractConfig& cfg)
    : cfg_(cfg), start_(std::chrono::steady_clock::now()) {
  validate(cfg_);
  std::tie(shard_index_, num_shards_) = resolve_shard(cfg_.shard_index, cfg_.num_shards);
  threads_ = cfg_.threads > 0 ? cfg_.threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads_);

  // The list and this task's slice of it, in whole groups (see the header).
  entries_ = read_dataset_list(
      cfg_.list, cfg_.labels.empty() ? std::vector<std::string>{} : read_label_map(cfg_.labels));
  if (cfg_.limit > 0 && static_cast<int64_t>(entries_.size()) > cfg_.limit)
    entries_.resize(static_cast<size_t>(cfg_.limit));
  views_per_clip_ = cfg_.views.views_per_clip();
  group_ = std::max<int64_t>(1, cfg_.batch_size / views_per_clip_);
  const int64_t num_clips = static_cast<int64_t>(entries_.size());
  const auto [group_begin, group_end] =
      shard_slice((num_clips + group_ - 1) / group_, shard_index_, num_shards_);
  const int64_t begin = std::min(num_clips, group_begin * group_);
  const int64_t end = std::min(num_clips, group_end * group_);

  // The backbone and the blocks to store.
  const torch::Device device = parse_device(cfg_.device);
  BackboneOptions bopts;
  bopts.input_size = cfg_.views.input_size;
  bopts.device = device;
  bopts.precision = resolve_precision(cfg_.views.precision, PrecisionUse::kBackbone,
                                      device.is_cuda(), "--precision");
  backbone_ = load_backbone(cfg_.backbone, bopts);
  const VitArch& arch = backbone_.arch;
  layers_ = resolve_blocks(cfg_.views.layers, arch.depth);
  storage_ = cache::parse_storage_mode(cfg_.store);
  dtype_ = cache::parse_dtype(cfg_.views.dtype);
  stored_blocks_ = layers_;  // blocks whose X is stored
  if (storage_ == cache::StorageMode::kCompact) {
    for (size_t i = 1; i < layers_.size(); ++i)
      EVL_CHECK_USAGE(layers_[i] == layers_[i - 1] + 1,
                      "--store compact needs consecutive --layers, got '", cfg_.views.layers, "'");
    EVL_CHECK_USAGE(layers_.front() >= 1, "--store compact needs the output of block ",
                    layers_.front() - 1,
                    ", which does not exist; use --store qk with layers starting at block 0");
    stored_blocks_.insert(stored_blocks_.begin(), layers_.front() - 1);
  }
  manifest_ = make_manifest(cfg_, backbone_, num_clips);
  sampling_ = sampling_config(cfg_.views, cfg_.seed, manifest_.backbone.input_size);
  sampling_.max_decoded_bytes = cfg_.max_decoded_mib << 20;
  EVL_CHECK(manifest_.views_per_clip() == views_per_clip_, "internal: views per clip mismatch");

  // Refuse to mix features into a cache made differently.
  fs::create_directories(cfg_.out);
  check_and_record_provenance(cfg_.out, manifest_);
  if (storage_ == cache::StorageMode::kCompact) {
    cache::Record w;
    w.key = "qk_weights";
    for (const int64_t b : layers_) {
      const auto qk = backbone_.model->qk_weights(b);
      const std::string s = "." + std::to_string(b);
      w.arrays.emplace_back("ln_1.weight" + s, to_array(qk.ln_weight, cache::DType::kF32));
      w.arrays.emplace_back("ln_1.bias" + s, to_array(qk.ln_bias, cache::DType::kF32));
      w.arrays.emplace_back("q_proj.weight" + s, to_array(qk.q_weight, cache::DType::kF32));
      w.arrays.emplace_back("q_proj.bias" + s, to_array(qk.q_bias, cache::DType::kF32));
      w.arrays.emplace_back("k_proj.weight" + s, to_array(qk.k_weight, cache::DType::kF32));
      w.arrays.emplace_back("k_proj.bias" + s, to_array(qk.k_bias, cache::DType::kF32));
    }
    cache::save_qk_weights(cfg_.out, w);
  }

  summary_.cache_dir = cfg_.out;
  shard_ = cache::shard_name(shard_index_, num_shards_);
  summary_.shard_dir = (fs::path(cfg_.out) / shard_).string();
  summary_.failures_file = !cfg_.failures.empty() ? cfg_.failures
                           : num_shards_ == 1
                               ? (fs::path(cfg_.out) / "failures.tsv").string()
                               : (fs::path(cfg_.out) / ("failures-" + shard_ + ".tsv")).string();
  summary_.clips_in_shard = end - begin;
  writer_ = std::make_unique<cache::ShardWriter>(summary_.shard_dir);

  // Resume: groups whose every view is committed and valid are skipped; a
  // partly written group is redone whole (same batch, same bytes).
  for (int64_t g = begin; g < end; g += group_) {
    const int64_t g_end = std::min(end, g + group_);
    bool present = true;
    for (int64_t c = g; c < g_end && present; ++c)
      for (int32_t v = 0; v < views_per_clip_ && present; ++v)
        present = writer_->contains_valid(cache::make_key(c, v));
    for (int64_t c = g; c < g_end; ++c) {
      if (present)
        ++summary_.clips_skipped;
      else
        todo_.push_back(c);
    }
  }
  if (summary_.clips_skipped > 0)
    log::info("resuming: ", summary_.clips_skipped, " of ", summary_.clips_in_shard,
              " clips already in ", summary_.shard_dir);

  // A rerun retries every clip that failed before (failed clips have no
  // records), so their old rows are dropped now and rewritten if they fail
  // again: the file lists exactly the failures of the latest attempt. Rows of
  // clips outside this task's slice (other tasks sharing the file) stay.
  // Written now, so that an unwritable path fails before any work.
  {
    FileLock lock(summary_.failures_file + ".lock");
    std::set<int64_t> mine;  // list lines of this task's clips
    for (int64_t c = begin; c < end; ++c) mine.insert(entries_[static_cast<size_t>(c)].line);
    std::string kept;
    if (fs::exists(summary_.failures_file)) {
      std::istringstream old(read_file(summary_.failures_file));
      for (std::string row; std::getline(old, row);) {
        const auto a = row.find('\t'), b = row.find('\t', a == std::string::npos ? a : a + 1);
        int64_t line = -1;
        if (b != std::string::npos) {
          try {
            line = std::stoll(row.substr(a + 1, b - a - 1));
          } catch (const std::exception&) {
          }
        }
        if (!row.empty() && !mine.count(line)) kept += row + "\n";
      }
    }
    write_file_atomic(summary_.failures_file, kept);
  }
  if (!cfg_.dump_frames.empty()) fs::create_directories(cfg_.dump_frames);
  progress_ =
      std::make_unique<Progress>("extract " + shard_, static_cast<int64_t>(todo_.size()), "clips");
}

ExtractionJob::~ExtractionJob() = default;

std::unique_ptr<ClipWork> ExtractionJob::emit() {
  if (next_ >= todo_.size()) return nullptr;
  auto w = std::make_unique<ClipWork>();
  w->clip_index = todo_[next_++];
  w->entry = &entries_[static_cast<size_t>(w->clip_index)];
  return w;
}

void ExtractionJob::decode(ClipWork& w) const {
  const std::string path = resolve_video_path(*w.entry, cfg_.root);
  try {
    w.views = load_clip_views(path, *w.entry, sampling_, w.clip_index);
    EVL_CHECK(static_cast<int64_t>(w.views.size()) == views_per_clip_, "video '", path,
              "': expected ", views_per_clip_, " views, got ", w.views.size());
    for (const auto& v : w.views) w.frames_decoded += static_cast<int64_t>(v.frame_indices.size());
    if (!cfg_.dump_frames.empty())
      for (const auto& v : w.views)
        dump_view_png(v, sampling_, cfg_.dump_frames,
                      cache::make_key(w.clip_index, v.view_index).replace(10, 1, "_"));
  } catch (const std::exception& e) {
    w.error = e.what();
    w.views.clear();
  }
}

std::unique_ptr<Batch> ExtractionJob::collect(std::unique_ptr<ClipWork> w) {
  std::unique_ptr<Batch> done;
  if (!pending_.empty() &&
      (!w || w->clip_index / group_ != pending_.front()->clip_index / group_)) {
    done = std::make_unique<Batch>(std::move(pending_));
    pending_.clear();
  }
  if (w) pending_.push_back(std::move(w));
  return done;
}

void ExtractionJob::forward(Batch& batch) {
  std::vector<torch::Tensor> images;  // each (V*T, 3, S, S)
  for (auto& w : batch)
    for (auto& v : w->views) images.push_back(v.pixels);
  if (images.empty()) return;
  const bool qk = storage_ == cache::StorageMode::kQK;  // compact: Q/K are recomputed later
  const ViewFeatures all =
      backbone_features(*backbone_.model, torch::cat(images, 0), cfg_.views.frames, stored_blocks_,
                        qk, cfg_.batch_size);
  int64_t row = 0;
  for (auto& w : batch) {
    if (!w->error.empty()) continue;
    const auto v = static_cast<int64_t>(w->views.size());
    for (size_t i = 0; i < stored_blocks_.size(); ++i) {
      w->features.x.push_back(all.x[i].narrow(0, row, v));
      if (qk) {
        w->features.q.push_back(all.q[i].narrow(0, row, v));
        w->features.k.push_back(all.k[i].narrow(0, row, v));
      }
    }
    row += v;
  }
}

void ExtractionJob::record_failure(const ClipWork& w) {
  // Tasks of one job may share a --failures file: read, append and replace it
  // under a lock, so no task's lines are lost and no reader sees a torn file.
  FileLock lock(summary_.failures_file + ".lock");
  std::string text = fs::exists(summary_.failures_file) ? read_file(summary_.failures_file) : "";
  text += str(w.entry->path, '\t', w.entry->line, '\t', one_line(w.error), '\n');
  write_file_atomic(summary_.failures_file, text);
}

std::string ExtractionJob::write(Batch& batch) {
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  std::string fatal;
  const bool qk = storage_ == cache::StorageMode::kQK;
  auto per_view = [](const std::vector<torch::Tensor>& blocks, int64_t v) {
    std::vector<torch::Tensor> rows;  // (T, L, C) per block
    for (const auto& b : blocks) rows.push_back(b[v]);
    return torch::stack(rows);  // (M, T, L, C)
  };
  for (auto& w : batch) {
    auto tc = std::chrono::steady_clock::now();
    if (w->error.empty()) w->error = storage_problem(w->features, dtype_, stored_blocks_);
    summary_.convert_seconds += since(tc);
    if (!w->error.empty()) {
      ++summary_.clips_failed;
      record_failure(*w);
      log::warn("skipping clip ", w->clip_index, ": ", w->error);
      if (cfg_.max_failures >= 0 && summary_.clips_failed > cfg_.max_failures && fatal.empty())
        fatal = str(summary_.clips_failed, " videos failed, more than --max-failures ",
                    cfg_.max_failures, "; see ", summary_.failures_file);
      progress_->advance();
      continue;
    }
    for (size_t v = 0; v < w->views.size(); ++v) {
      const ClipView& view = w->views[v];
      cache::Record r;
      r.clip_index = w->clip_index;
      r.view_index = view.view_index;
      r.key = cache::make_key(w->clip_index, view.view_index);
      r.video_id = w->entry->id;
      r.label = w->entry->label;
      r.view = view.description;
      const auto vi = static_cast<int64_t>(v);
      tc = std::chrono::steady_clock::now();
      r.arrays.emplace_back("x", to_array(per_view(w->features.x, vi), dtype_));
      if (qk) {
        r.arrays.emplace_back("q", to_array(per_view(w->features.q, vi), dtype_));
        r.arrays.emplace_back("k", to_array(per_view(w->features.k, vi), dtype_));
      }
      summary_.convert_seconds += since(tc);
      if (cfg_.save_inputs)
        r.arrays.emplace_back("inputs", to_array(view.pixels, cache::DType::kF32));
      writer_->put(r);
      ++summary_.views_written;
    }
    summary_.frames_decoded += w->frames_decoded;
    ++summary_.clips_done;
    progress_->advance();
  }
  writer_->commit();
  summary_.write_seconds += since(t0);
  return fatal;
}

void ExtractionJob::abandon() {
  writer_->commit();
  progress_->finish();
}

ExtractSummary ExtractionJob::finish(bool interrupted) {
  writer_->commit();
  progress_->finish();
  summary_.interrupted = interrupted && summary_.clips_done + summary_.clips_failed <
                                            static_cast<int64_t>(todo_.size());
  summary_.bytes_written = writer_->bytes_written();
  if (!summary_.interrupted) {
    cache::Manifest shard_manifest = manifest_;
    shard_manifest.shards = {{shard_, writer_->committed_records()}};
    publish_manifest(cfg_.out, shard_manifest, shard_, num_shards_);
  }
  summary_.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return summary_;
}

}  // namespace evl
