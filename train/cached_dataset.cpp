// Cache records -> float tensors, and the deterministic sampler. Compact mode
// recomputes q = layer_norm(x_in) @ Wq^T + bq exactly as the backbone did
// (docs/OFFICIAL_EVL.md §2.3: q/k of block b come from ln_1 of block b's input).
// int8/fp8 records are dequantized straight into the float32 batch. The loader
// verifies each record's checksum in the same pass that converts it.
#include "train/cached_dataset.h"

#include "cache/checksum.h"
#include "cache/quantize.h"
#include "cache/torch_interop.h"
#include "common/check.h"
#include "common/random.h"

namespace evl {

FeatureConverter::FeatureConverter(const cache::Manifest& manifest, const std::string& cache_dir,
                                   int64_t decoder_layers)
    : manifest_(manifest), where_("cache '" + cache_dir + "'") {
  const auto available = static_cast<int64_t>(manifest.layers.size());
  layers_ = decoder_layers > 0 ? decoder_layers : available;
  EVL_CHECK(available > 0 && layers_ <= available, where_, " holds ", available,
            " decoder layers, the head needs ", layers_,
            " (re-extract with more --layers or pass --decoder-layers <= ", available, ")");
  offset_ = available - layers_;  // the head uses the last M blocks, as the official code
  frames_ = manifest.frames;
  tokens_ = 1 + manifest.backbone.grid * manifest.backbone.grid;
  width_ = manifest.backbone.width;
  if (manifest.storage == cache::StorageMode::kCompact) {
    const auto w = cache::load_qk_weights(cache_dir);
    auto t = [&](const std::string& name) {
      return torch::from_blob(const_cast<uint8_t*>(w.array(name).bytes.data()), w.array(name).shape,
                              torch::kFloat)
          .clone();
    };
    for (int64_t i = 0; i < layers_; ++i) {
      const auto b = std::to_string(manifest.layers[static_cast<size_t>(offset_ + i)]);
      qk_.push_back({t("ln_1.weight." + b), t("ln_1.bias." + b), t("q_proj.weight." + b),
                     t("q_proj.bias." + b), t("k_proj.weight." + b), t("k_proj.bias." + b)});
    }
  }
}

FeatureBatch FeatureConverter::allocate(int64_t batch) const {
  FeatureBatch out;
  for (int64_t i = 0; i < layers_; ++i) {
    out.x.push_back(torch::empty({batch, frames_, tokens_, width_}));
    out.q.push_back(torch::empty({batch, frames_, tokens_, width_}));
    out.k.push_back(torch::empty({batch, frames_, tokens_, width_}));
  }
  out.labels = torch::full({batch}, -1, torch::kLong);
  out.clip_index.assign(static_cast<size_t>(batch), -1);
  return out;
}

void FeatureConverter::fill(const cache::RecordView& record, int64_t row, FeatureBatch& batch,
                            cache::ChecksumPass* pass) const {
  const auto available = static_cast<int64_t>(manifest_.layers.size());
  const bool compact = manifest_.storage == cache::StorageMode::kCompact;
  const std::vector<int64_t> want = {available + (compact ? 1 : 0), frames_, tokens_, width_};
  auto find = [&](const char* name) -> const cache::ArrayView& {
    const auto* a = record.find(name);
    EVL_CHECK(a, where_, ": record '", record.key, "' has no array '", name, "'");
    EVL_CHECK(a->shape == want, where_, ": record '", record.key, "': array '", name,
              "' has shape ", c10::IntArrayRef(a->shape), ", expected ", c10::IntArrayRef(want));
    return *a;
  };
  // Blocks are converted in address order (compact: x[i] and x[i+1] per layer;
  // qk: every block of x, then of q, then of k), which lets `pass` hash the
  // record as the conversion walks it.
  const cache::ArrayView& x = find("x");
  if (compact) {
    torch::Tensor x_in = torch::empty({frames_, tokens_, width_});
    convert_block(x, offset_, x_in, pass);
    for (int64_t i = 0; i < layers_; ++i) {
      if (i > 0) x_in = batch.x[i - 1][row];
      convert_block(x, offset_ + i + 1, batch.x[i][row], pass);
      const auto& w = qk_[static_cast<size_t>(i)];
      auto ln = torch::layer_norm(x_in, {width_}, w[0], w[1], 1e-5);
      batch.q[i][row].copy_(torch::linear(ln, w[2], w[3]));
      batch.k[i][row].copy_(torch::linear(ln, w[4], w[5]));
    }
  } else {
    for (auto [name, out] :
         {std::pair{"x", &batch.x}, std::pair{"q", &batch.q}, std::pair{"k", &batch.k}}) {
      const cache::ArrayView& a = find(name);
      for (int64_t i = 0; i < layers_; ++i) convert_block(a, offset_ + i, (*out)[i][row], pass);
    }
  }
  batch.labels[row] = record.label;
  batch.clip_index[static_cast<size_t>(row)] = record.clip_index;
}

// One frame at a time: a frame of ViT-B/16 features is 0.3 MiB in fp16, so the
// bytes `pass` has just hashed are still in L2 when they are converted. int8/fp8
// are dequantized straight into the batch; their scales (after all the codes)
// are hashed when the pass finishes.
void FeatureConverter::convert_block(const cache::ArrayView& a, int64_t block, torch::Tensor dst,
                                     cache::ChecksumPass* pass) const {
  EVL_CHECK(dst.is_contiguous() && dst.scalar_type() == torch::kFloat,
            "internal: batch rows must be contiguous float32");
  const bool quantized = cache::is_quantized(a.dtype);
  const size_t code_bytes = quantized ? 1 : cache::dtype_size(a.dtype);
  const auto* codes = static_cast<const uint8_t*>(a.data);
  const torch::Tensor src = quantized ? torch::Tensor() : cache::as_tensor(a)[block];
  float* out = dst.data_ptr<float>();
  for (int64_t t = 0; t < frames_; ++t) {
    const int64_t first = (block * frames_ + t) * tokens_;  // the frame's first row (token)
    if (pass) pass->hash_to(codes + static_cast<size_t>((first + tokens_) * width_) * code_bytes);
    if (quantized)
      cache::dequantize_rows(a, first, tokens_, out + t * tokens_ * width_);
    else
      dst[t].copy_(src[t]);
  }
}

FeatureBatch FeatureConverter::convert(const std::vector<cache::Record>& records) const {
  auto batch = allocate(static_cast<int64_t>(records.size()));
  for (size_t r = 0; r < records.size(); ++r) {
    const auto& rec = records[r];
    cache::RecordView view;
    view.key = rec.key, view.video_id = rec.video_id, view.view = rec.view;
    view.label = rec.label, view.clip_index = rec.clip_index, view.view_index = rec.view_index;
    for (const auto& [name, a] : rec.arrays)
      view.arrays.emplace_back(name, cache::ArrayView{a.dtype, a.shape, a.bytes.data()});
    fill(view, static_cast<int64_t>(r), batch);
  }
  return batch;
}

namespace {
std::vector<EpochSampler::Clip> sampler_clips(const cache::CacheReader& reader) {
  std::vector<EpochSampler::Clip> out;
  for (const auto& c : reader.clips()) out.push_back({c.clip_index, c.records});
  return out;
}
}  // namespace

CachedDataset::CachedDataset(const std::string& cache_dir, int64_t decoder_layers)
    : dir_(cache_dir),
      reader_(std::make_unique<cache::CacheReader>(cache_dir)),
      converter_(reader_->manifest(), cache_dir, decoder_layers),
      sampler_(sampler_clips(*reader_)) {
  EVL_CHECK(reader_->size() > 0, "cache '", cache_dir, "' holds no records");
}

std::string CachedDataset::item_name(int64_t item) const {
  if (item < 0 || item >= size()) return str("item ", item);
  return str("record '", reader_->keys()[static_cast<size_t>(item)], "'");
}

void to_device(FeatureBatch& b, const torch::Device& device) {
  if (device.is_cpu()) return;
  for (auto* v : {&b.x, &b.q, &b.k})
    for (auto& t : *v) t = t.to(device, /*non_blocking=*/true);
  b.labels = b.labels.to(device);
}

int64_t CachedDataset::max_label() const {
  int64_t m = -1;
  for (const auto& c : reader_->clips()) m = std::max(m, c.label);
  return m;
}

FeatureBatch CachedDataset::take_spare(int64_t batch) const {
  std::lock_guard<std::mutex> lock(spare_mutex_);
  auto unshared = [&](const torch::Tensor& t) {
    return t.defined() && t.size(0) == batch && t.use_count() == 1 && t.storage().use_count() == 1;
  };
  bool reusable = spare_.x.size() == static_cast<size_t>(layers()) && unshared(spare_.labels);
  for (const auto* v : {&spare_.x, &spare_.q, &spare_.k})
    for (const auto& t : *v) reusable = reusable && unshared(t);
  if (!reusable) return converter_.allocate(batch);
  FeatureBatch out = std::move(spare_);  // every row is overwritten by fill()
  spare_ = FeatureBatch();
  return out;
}

FeatureBatch CachedDataset::load(const std::vector<int64_t>& records) const {
  FeatureBatch batch = take_spare(static_cast<int64_t>(records.size()));
  for (size_t r = 0; r < records.size(); ++r)
    reader_->with_record_streamed(records[r],
                                  [&](const cache::RecordView& view, cache::ChecksumPass& pass) {
                                    for (const auto& [name, a] : view.arrays)
                                      bytes_read_ += a.nbytes();
                                    converter_.fill(view, static_cast<int64_t>(r), batch, &pass);
                                  });
  {
    std::lock_guard<std::mutex> lock(spare_mutex_);
    spare_ = batch;  // shares the tensors: reusable once the caller drops them
  }
  return batch;
}

EpochSampler::EpochSampler(std::vector<Clip> clips) : clips_(std::move(clips)) {
  for (const auto& c : clips_)
    EVL_CHECK(!c.items.empty(), "clip ", c.clip_index, " has no views to sample");
}

std::vector<int64_t> EpochSampler::batch(uint64_t seed, int64_t step, int64_t batch) const {
  const auto n = static_cast<int64_t>(clips_.size());
  EVL_CHECK(n > 0, "no clips to sample from");
  std::vector<int64_t> out;
  for (int64_t pos = step * batch; pos < (step + 1) * batch; ++pos) {
    const int64_t epoch = pos / n;
    if (epoch != cached_epoch_) {  // Fisher-Yates from (seed, epoch)
      epoch_perm_.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) epoch_perm_[static_cast<size_t>(i)] = i;
      // (rng::splitmix64 % (i+1): a bias below n / 2^64, kept so runs reproduce.)
      uint64_t s = rng::epoch_state(seed, epoch);
      for (int64_t i = n - 1; i > 0; --i)
        std::swap(epoch_perm_[static_cast<size_t>(i)],
                  epoch_perm_[rng::splitmix64(s) % static_cast<uint64_t>(i + 1)]);
      cached_epoch_ = epoch;
    }
    const auto& clip = clips_[static_cast<size_t>(epoch_perm_[static_cast<size_t>(pos % n)])];
    uint64_t s = rng::view_choice_state(seed, epoch, clip.clip_index);
    out.push_back(clip.items[rng::splitmix64(s) % clip.items.size()]);
  }
  return out;
}

}  // namespace evl
