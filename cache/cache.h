// Public API of the evl feature cache (library evl_cache, no LibTorch).
//
// A cache directory holds `manifest.json` (provenance, see Manifest) and one or
// more LMDB shards `features-00003-of-00016/`. Each record is one clip-view:
// a header, named typed arrays, and a checksum (layout in cache/FORMAT.md).
//
// Dimension letters: M decoder layers, T frames, L tokens per frame (with CLS),
// C width, H/W input height/width.
//   storage kQK:      "x", "q", "k"    each (M, T, L, C)
//   storage kCompact: "x"              (M+1, T, L, C)  blocks first-1 .. last;
//                     Q/K are recomputed from x[i] (the input of block i+1) with
//                     the frozen ln_1 + q/k in-projection weights stored beside
//                     the manifest in `qk_weights.evl` (see save_qk_weights).
//                     Compact mode needs contiguous `layers` (l0, l0+1, ..).
//   optional "inputs" (T, 3, H, W) float32: the preprocessed frames fed to the ViT.
//
// Keys are "<clip index, 10 digits>/<view index, 3 digits>", so every view of a
// clip sits together and LMDB's byte order is the list order.
//
// Threading (LMDB's rules, which this API inherits):
//  - One ShardWriter per shard directory at a time (LMDB allows one write txn
//    per environment; a second writer process blocks on LMDB's lock).
//  - A ShardWriter is used from one thread at a time (LMDB write txns are tied
//    to their thread).
//  - CacheReader is safe to use from many threads at once: shards are opened
//    read-only with MDB_NOTLS and each call runs its own read-only transaction.
//    Many processes may read concurrently, also while a writer appends.
//  - LMDB memory (MDB_val, RecordView pointers) is valid only inside its read
//    transaction, i.e. during the with_record callback; copy (to_record) to keep.
//  - LMDB forbids opening the same environment twice in one process: do not keep
//    a ShardWriter and a CacheReader on the same shard open at the same time.
// Errors: evl::Error (common/check.h) naming the shard directory and the key.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace evl::cache {

class ChecksumPass;  // cache/checksum.h

// Version 2 added the quantized dtypes (int8, fp8: codes 4, 5); version 3 their
// outlier channels (codes 6, 7); version 4 a zero point (fp16 center) per
// outlier channel (codes 8, 9, which evl writes since). Records and manifests of
// versions 1 to 3 still read.
inline constexpr uint32_t kFormatVersion = 4;

// Storage dtypes (the record's dtype codes). kI8 and kFP8 are group-quantized:
// 1-byte codes, fp16 scales per 64 channels of the last axis and, per outlier
// channel, an fp16 column scale and center, in one payload (cache/quantize.h,
// FORMAT.md "Quantized arrays"). Read only, never written: kI8V3 and kFP8V3
// (format version 3: column scales without centers) and kI8V2 and kFP8V2
// (version 2: no outlier channels). Read any of them with to_float32.
enum class DType : uint8_t {
  kF16 = 1,
  kBF16 = 2,
  kF32 = 3,
  kI8V2 = 4,
  kFP8V2 = 5,
  kI8V3 = 6,
  kFP8V3 = 7,
  kI8 = 8,
  kFP8 = 9
};
enum class StorageMode { kQK, kCompact };

size_t dtype_size(DType dtype);              // bytes per element (per code): 2, 2, 4, then 1;
                                             // throws evl::Error for an unknown code
std::string to_string(DType dtype);          // "fp16" | "bf16" | "fp32" | "int8" | "fp8"
DType parse_dtype(const std::string& name);  // kI8/kFP8 for int8/fp8; throws evl::UsageError
// Payload bytes of an array: numel * dtype_size, or for a quantized dtype the
// codes, their padding to 64 bytes, the fp16 scales and the column scales
// and centers (quant_layout). Throws
// evl::Error for a quantized shape without a channel axis.
size_t array_bytes(DType dtype, const std::vector<int64_t>& shape);
std::string to_string(StorageMode mode);  // "qk" | "compact"
StorageMode parse_storage_mode(const std::string& name);

// A typed n-d array that owns its bytes (row-major, little-endian; for int8/fp8
// the whole quantized payload: codes, padding, scales, column scales).
struct Array {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
};

// A non-owning view of an array inside a memory map or a caller's buffer.
struct ArrayView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;

  int64_t numel() const;
  size_t nbytes() const { return array_bytes(dtype, shape); }  // the payload, scales included
};

// One clip-view.
struct Record {
  std::string key;         // make_key(clip_index, view_index)
  std::string video_id;    // the list's path for this clip (relative to --root)
  int64_t label = -1;      // -1 when unknown
  int64_t clip_index = 0;  // line order in the dataset list (0-based, comments skipped)
  int32_t view_index = 0;  // index among this clip's views
  std::string view;        // human description, e.g. "t1/3 s0/1 start=94" or "train 3 crop=..."
  std::vector<std::pair<std::string, Array>> arrays;  // names: x, q, k, inputs

  const Array& array(const std::string& name) const;  // throws if absent
  const Array* find(const std::string& name) const;
};

// Same fields as Record, with arrays pointing into LMDB's memory map.
struct RecordView {
  std::string key, video_id, view;
  int64_t label = -1, clip_index = 0;
  int32_t view_index = 0;
  std::vector<std::pair<std::string, ArrayView>> arrays;

  const ArrayView& array(const std::string& name) const;
  const ArrayView* find(const std::string& name) const;
  Record to_record() const;  // deep copy
};

std::string make_key(int64_t clip_index, int32_t view_index);

// Shard directory name: shard_name(3, 16) == "features-00003-of-00016".
std::string shard_name(int index, int count);

// Serialises a record (header + arrays + checksum) and back. parse verifies
// magic, version, sizes and the checksum; `where` names shard/key in errors.
// decode_record's view points into `data` (no copy); with verify_checksum=false
// the checksum pass is skipped (sizes and structure are still checked).
std::vector<uint8_t> encode_record(const Record& record);
void encode_record_into(const Record& record, std::vector<uint8_t>& out);  // reuses capacity
RecordView decode_record(const void* data, size_t size, const std::string& where,
                         bool verify_checksum = true);

// Scalar conversions (round to nearest even; NaN stays NaN, overflow -> inf).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);
// `n` floats -> an Array of `dtype` with `shape` (numel must equal n). int8/fp8
// quantize (cache/quantize.h) and throw evl::Error for NaN/inf or out-of-range values.
Array make_array(DType dtype, std::vector<int64_t> shape, const float* values, size_t n);
// Any array -> float32 (dequantized for int8/fp8), `out` holds view.numel() floats.
void to_float32(const ArrayView& view, float* out);

// Provenance of a cache. Readers compare the fields that matter to them and
// refuse a mismatch naming the field (check_matches).
struct BackboneInfo {
  std::string file;    // file name as given
  std::string hash;    // xxh64 of the file's bytes, hex
  std::string format;  // "openai-torchscript" | "hf-safetensors"
  int64_t width = 0, depth = 0, heads = 0, patch = 0,
          grid = 0;  // grid: tokens per side at input_size
  int64_t input_size = 224;
};

struct Manifest {
  uint32_t format_version = kFormatVersion;
  std::string tool_version;  // EVL_VERSION of the writer
  std::string created;       // ISO-8601 UTC
  BackboneInfo backbone;
  std::vector<int64_t> layers;  // backbone blocks feeding decoder layers (0-based, increasing)
  StorageMode storage = StorageMode::kQK;
  DType dtype = DType::kF16;
  int64_t frames = 8;
  int64_t stride = 16;                            // dense sampling stride; 0 with sampling "tsn"
  std::string sampling = "dense";                 // "dense" | "tsn"
  int64_t temporal_views = 1, spatial_views = 1;  // test views per clip
  int64_t train_views = 0;                        // K augmented views per clip (0: test views)
  // How the views were augmented before the backbone (ViewSettings::augmentation):
  // "none", a RandAugment string like "rand-m7-n4-mstd0.5-inc1", or "ops ...".
  // "none" for manifests written before the field existed (no augmentation then).
  std::string augment = "none";
  std::vector<double> mean, std;  // normalisation, 3 values each
  uint64_t seed = 0;
  bool has_inputs = false;  // records carry "inputs"
  std::string list_file;    // dataset list it was extracted from
  int64_t num_clips = 0;    // clips in the whole list (all shards)
  struct Shard {
    std::string name;
    int64_t records = 0;
  };
  std::vector<Shard> shards;
  // Re-encodings by `evl_cache convert` (cache/convert.h), oldest first; empty
  // for a cache evl_extract wrote (manifest.json then has no "conversions").
  struct Conversion {
    std::string from;  // the source cache directory, absolute
    DType from_dtype = DType::kF16;
    StorageMode from_storage = StorageMode::kQK;
    uint32_t from_format_version = kFormatVersion;
    std::string tool_version, created;  // of the conversion
  };
  std::vector<Conversion> conversions;

  int64_t views_per_clip() const {
    return train_views > 0 ? train_views : temporal_views * spatial_views;
  }
  std::string to_json() const;
  static Manifest from_json(const std::string& text, const std::string& where);
  static Manifest load(const std::string& cache_dir);  // reads <dir>/manifest.json
  void save(const std::string& cache_dir) const;       // atomic (temp + rename)
};

// Throws evl::Error naming the first field where `found` differs from `expected`
// in the provenance that determines features: backbone hash and architecture,
// layers, storage, frames, stride, sampling, views, augment, input size, mean/std.
// `fields` restricts the comparison (empty: all of them). Compared only when
// named: dtype, has_inputs, seed, list_file, num_clips, format_version and
// "conversions" (the chain of from_dtype/from_storage/from_format_version, the
// re-encodings the values went through; not their directories or dates).
// Every field check_matches knows, in manifest order (what merge and a resumed
// convert compare: the features and where they came from).
const std::vector<std::string>& provenance_fields();

void check_matches(const Manifest& expected, const Manifest& found, const std::string& where,
                   const std::vector<std::string>& fields = {});

// The arrays every record of a cache must hold, with their shapes, from the
// manifest: x/q/k (M,T,L,C) or x (M+1,T,L,C), plus inputs (T,3,H,W) when
// has_inputs. L = grid*grid + 1, C = backbone.width, H = W = input_size.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_arrays(const Manifest& m);
// Throws evl::Error `where: array 'x' has shape (..), the manifest says (..)`
// (also for a missing/extra array or a dtype other than the manifest's).
void check_record_shape(const Manifest& m, const RecordView& record, const std::string& where);

// Frozen Q/K weights for compact mode, stored as `qk_weights.evl` beside the
// manifest, encoded like a record (same header, arrays, checksum). Arrays, for
// each backbone block b whose Q/K the decoder needs (float32):
//   "ln_1.weight.<b>" (C), "ln_1.bias.<b>" (C), "q_proj.weight.<b>" (C, C),
//   "q_proj.bias.<b>" (C), "k_proj.weight.<b>" (C, C), "k_proj.bias.<b>" (C)
// so that  q = layer_norm(x_in, eps 1e-5) @ q_proj.weight^T + q_proj.bias,
// with x_in the output of block b-1 (x[i] of a compact record).
void save_qk_weights(const std::string& cache_dir, const Record& weights);  // atomic
Record load_qk_weights(const std::string& cache_dir);  // verifies checksum and shapes

// Compact mode: Q and K of backbone block `block` from its input.
// x_in (R, C) float32 rows (R = T*L), q and k (R, C) float32 outputs.
// Plain C++ (no BLAS), accumulates in float; thread-safe (reads `weights` only).
void compute_qk(const Record& weights, int64_t block, const float* x_in, int64_t rows,
                int64_t width, float* q, float* k);

// Writes records into one shard. Batched write transactions (commit() or every
// `batch_records`), map grown on MDB_MAP_FULL, durable commits (fsync).
// A failed commit (disk full, I/O error) throws evl::Error saying so; records
// committed before stay intact and the writer refuses further use.
class ShardWriter {
 public:
  struct Options {
    size_t batch_records = 16;
    size_t max_batch_bytes = size_t(256) << 20;  // commit earlier when the batch is this big
    size_t initial_map_bytes = size_t(1) << 30;  // grown automatically (doubling)
  };
  explicit ShardWriter(const std::string& shard_dir, size_t batch_records = 16);
  ShardWriter(const std::string& shard_dir, Options options);
  ~ShardWriter();  // commits pending records
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // True when `key` is committed and its checksum verifies (resume).
  bool contains_valid(const std::string& key);
  void put(const Record& record);  // replaces an existing key
  void commit();
  int64_t committed_records();
  uint64_t bytes_written() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a whole cache directory (all shards listed by the manifest).
class CacheReader {
 public:
  struct Options {
    bool no_readahead = false;     // MDB_NORDAHEAD, for random access on big caches
    bool verify_checksums = true;  // the checksum of every record read
  };
  explicit CacheReader(const std::string& cache_dir);
  CacheReader(const std::string& cache_dir, Options options);
  ~CacheReader();

  const Manifest& manifest() const;
  int64_t size() const;                          // records in all shards
  const std::vector<std::string>& keys() const;  // sorted by (clip, view)

  // Copies record i / key out of the map (verifying its checksum).
  Record get(int64_t index) const;
  Record get(const std::string& key) const;
  // As get(i), but reuses `out`'s buffers: no allocation once warm. Fresh
  // multi-MiB allocations page-fault on every call (glibc returns them to the
  // OS), which costs more than the copy itself; loader threads should use this.
  // Verifies the checksum while it copies (with_record_streamed), so the
  // record is read from memory once.
  void get_into(int64_t index, Record& out) const;

  // Zero-copy access: `fn` sees a view valid only during the call, of a record
  // whose checksum was verified before the call (a pass over all its bytes).
  void with_record(int64_t index, const std::function<void(const RecordView&)>& fn) const;
  void with_record(const std::string& key, const std::function<void(const RecordView&)>& fn) const;
  // Zero-copy access with the checksum verified in the same pass over the
  // record that `fn` makes, so that a record of tens of MiB is read from memory
  // once instead of twice. `fn` gets the view (structure, key and shapes
  // checked) and the record's ChecksumPass (cache/checksum.h), on which it
  // calls hash_to(p) just before it reads the bytes below p, or copy(). When
  // `fn` returns or throws, the rest is hashed and a mismatch throws the
  // "checksum mismatch" evl::Error (also in place of what `fn` threw): whatever
  // `fn` made of the bytes must be dropped when this throws. With
  // verify_checksums off, the pass hashes nothing.
  void with_record_streamed(int64_t index,
                            const std::function<void(const RecordView&, ChecksumPass&)>& fn) const;
  int64_t index_of(const std::string& key) const;    // -1 when absent
  const std::string& shard_of(int64_t index) const;  // shard directory name of record i

  // Clips (groups of views) in list order.
  struct Clip {
    int64_t clip_index = 0;
    std::string video_id;
    int64_t label = -1;
    std::vector<int64_t> records;  // indices into keys()
  };
  const std::vector<Clip>& clips() const;

  // A permutation of [0, size()) for `epoch`, reproducible from (seed, epoch).
  std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace evl::cache
