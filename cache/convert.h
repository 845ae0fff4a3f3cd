// `evl_cache convert`: re-encodes a feature cache into another storage dtype
// (and from compact to qk storage) without re-extracting. Torch-free, part of
// evl_cache. Not here: anything that needs the backbone (a qk cache cannot be
// made compact: it lacks the input of the first decoder block).
//
// Dimension letters as in cache.h: M decoder layers, T frames, L tokens per
// frame, C width.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cache/cache.h"

namespace evl::cache {

struct ConvertOptions {
  std::string in, out;                 // source cache, output directory
  DType dtype = DType::kF16;           // the output's dtype
  std::optional<StorageMode> storage;  // the output's storage (empty: the source's)
  bool force = false;                  // allow a lossy -> wider "upgrade"
  int threads = 0;                     // records converted at once (0: all cores)
};

struct ConvertSummary {
  int64_t records = 0;       // in the source (all shards)
  int64_t converted = 0;     // written by this run
  int64_t skipped = 0;       // already in the output and valid (resume)
  int64_t failed = 0;        // listed in failures_file
  bool interrupted = false;  // stop seen: converted records committed, rerun resumes
  uint64_t bytes_written = 0;
  double seconds = 0;
  std::string failures_file;
};

// How much a dtype can hold, for refusing upgrades: fp8 0 < int8 1 < bf16 = fp16 2 < fp32 3.
int precision_rank(DType dtype);

// Refuses, with evl::UsageError, a conversion of a cache described by `source`
// into (dtype, storage) that cannot or should not be done: qk -> compact (the
// first decoder block's input is not in a qk cache), the same dtype and storage
// ("nothing to convert"), and without `force` a target of higher precision_rank
// than the source (it adds bytes, not precision).
void check_conversion(const Manifest& source, DType dtype, StorageMode storage, bool force);

// The output's manifest: `source` with the new dtype, storage, format version,
// tool version and date, every shard at 0 records (convert_cache sets the
// counts once done), and a Conversion from `source_dir` (absolute) appended.
Manifest converted_manifest(const Manifest& source, const std::string& source_dir, DType dtype,
                            StorageMode storage);

// One record of a cache described by `from` re-encoded as `to` (converted_manifest):
// every array decoded to float32 (to_float32) and encoded with make_array; in
// compact -> qk, x keeps blocks 1..M of the source's (M+1) and q, k of decoder
// layer i are compute_qk(weights, layers[i], source x[i]) (`weights` must then
// be the source's qk_weights.evl, else it may be null). "inputs" is copied as
// it is. Throws evl::Error when the values cannot be stored as `to.dtype`
// (quantization_problem's reason, naming the array and the backbone block) or
// the record lacks an array. Thread-safe: reads its arguments only.
Record convert_record(const RecordView& record, const Manifest& from, const Manifest& to,
                      const Record* weights);

// Converts cache `options.in` into `options.out`, one output shard per source
// shard with the same names. Order of work: refusals (check_conversion, OUT the
// same directory as IN, a source shard holding another count than its
// manifest's), then OUT/manifest.json written (shard counts 0, so that an
// interrupted output is refused by readers) and, compact -> compact, a copy of
// qk_weights.evl; then the records; at the end the shard counts.
//
// Resume: when OUT holds the manifest of a conversion, it must be this one
// (same provenance, dtype, storage, chain of conversions and source directory;
// else evl::UsageError naming the field); records already committed and valid
// are skipped. A source record that fails its checksum or shape check, or
// whose values cannot be stored as the dtype (int8/fp8: NaN, inf, out of
// range), is written to OUT/failures.tsv (`<video id>\t<key>\t<reason>`,
// rewritten by every run: it lists what is still missing) and the work goes on.
//
// `stop` (may be null) is polled between groups of records: once true, what
// was converted is committed and the summary says interrupted (the shard
// counts stay as they were). `on_record(done)` is called after each source
// record has been handled (converted, skipped or failed), from the calling
// thread. Throws evl::UsageError for a refused conversion, evl::Error for I/O.
ConvertSummary convert_cache(const ConvertOptions& options, const std::atomic<bool>* stop = nullptr,
                             const std::function<void(int64_t)>& on_record = {});

}  // namespace evl::cache
