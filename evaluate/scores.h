// The HDF5 score file: per-video class scores of one model on one split, the
// exchange format between evl_eval, evl_ensemble and other people's models.
// Schema (evaluate/SCORES.md): datasets `scores` float32 (N, K), `labels` int64
// (N,), `video_ids` strings (N,); attributes `kind`, `num_views`, `model`,
// `evl_version`, `format_version`. Readable/writable with Python's h5py.
// Deliberately no LibTorch and no metrics here (see metrics.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace evl {

// Dimension letters: N videos, K classes.

// Format version written into every file; readers refuse newer ones.
inline constexpr int64_t kScoresFormatVersion = 1;

// What the numbers in `scores` are: per-class probabilities (each row sums to ~1,
// e.g. the mean of per-view softmax probabilities) or unnormalised logits.
enum class ScoreKind { kProbabilities, kLogits };

// "probabilities" / "logits".
const char* to_string(ScoreKind kind);
// Parses "probabilities" or "logits" (also "probs"); throws evl::Error otherwise.
ScoreKind parse_score_kind(const std::string& text);

struct ScoreFile {
  int64_t num_videos() const { return static_cast<int64_t>(video_ids.size()); }
  // K, derived from scores.size() / N; 0 when there are no videos.
  int64_t num_classes() const;

  std::vector<float> scores;           // (N, K) row-major
  std::vector<int64_t> labels;         // (N) ground-truth class, -1 when unknown
  std::vector<std::string> video_ids;  // (N) unique, non-empty
  ScoreKind kind = ScoreKind::kProbabilities;
  int64_t num_views = 1;    // views fused into each row (informational)
  std::string model;        // free-text model name ("evl-b16-8x16", "tsm-r50")
  std::string evl_version;  // version of the writer; empty for foreign files
};

// Checks a ScoreFile's invariants: N >= 1, K >= 1, scores.size() == N*K,
// labels.size() == N, labels in [-1, K), finite scores (probabilities in
// [0, 1]), unique non-empty ids. Throws evl::Error whose message starts with
// `what` (e.g. "score file 'a.h5'") and names the dataset and first bad row.
void validate_scores(const ScoreFile& file, const std::string& what);

// Writes `file` to `path` atomically and durably (common/atomic_file.h), so a
// reader never sees a half-written file. Validates first
// (validate_scores). Fills `evl_version` with this build's version when empty.
// Throws evl::Error naming the path and the HDF5 error.
void write_scores(const std::string& path, const ScoreFile& file);

// Reads and validates a score file written by evl or by h5py. Accepts float32 or
// float64 scores, any integer type for labels, variable- or fixed-length string
// ids, `kind` as a variable- or fixed-length string attribute. `num_views`,
// `model` (default: the file's stem), `evl_version` and `format_version` are
// optional. Throws evl::Error naming the file and dataset/attribute for: a
// missing or non-HDF5 file, a missing dataset or `kind`, wrong rank/type/length,
// NaN/Inf, labels out of range, duplicate ids, a newer format version.
ScoreFile read_scores(const std::string& path);

// The scores as probabilities (N, K): a copy when kind is probabilities, the
// row-wise softmax (max-subtracted, accumulated in double) when logits.
std::vector<float> to_probabilities(const ScoreFile& file);

// HDF5's C library (Debian's serial build) is not thread-safe; write_scores and
// read_scores hold h5::lock() (common/h5.h), the process-wide HDF5 lock, so they
// may be called from several threads but never run concurrently.

}  // namespace evl
