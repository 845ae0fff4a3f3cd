// Classification metrics over per-video scores: top-1, top-5, mean class
// accuracy, per-class accuracy and the confusion matrix, plus their JSON form
// (the `metrics` object of evl_eval's and evl_ensemble's reports).
// No LibTorch; scores are plain arrays. The only file read here is a label-name list.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace evl {

// Dimension letters: N videos, K classes.

// Ranking rule used everywhere in evl (and by the numpy references in tests):
// class j outranks the label y when s[j] > s[y], or s[j] == s[y] and j < y,
// i.e. ties go to the lower class index, like numpy/torch argmax. A video is a
// top-k hit when fewer than k classes outrank its label.

struct Metrics {
  double top1 = 0;                         // fraction of labelled videos, in [0, 1]
  double top5 = 0;                         // top-min(5, K)
  double mean_class_accuracy = 0;          // mean of per_class_accuracy over classes with samples
  std::vector<double> per_class_accuracy;  // (K) top-1 per true class; NaN for absent classes
  std::vector<int64_t> per_class_count;    // (K) labelled videos per true class
  std::vector<int64_t> confusion;          // (K, K) row-major, row = true, column = argmax
  int64_t num_labelled = 0;                // videos with label >= 0; others are ignored
  int64_t num_classes = 0;                 // K
};

// The number of classes that outrank `label` in `row` (K): 0 means top-1 hit.
// Stops counting at `cap` (pass K for the exact rank).
template <typename T>
int64_t label_rank(const T* row, int64_t k, int64_t label, int64_t cap) {
  const T sy = row[label];
  int64_t r = 0;
  for (int64_t j = 0; j < k && r < cap; ++j) r += (row[j] > sy) || (row[j] == sy && j < label);
  return r;
}

// A label-name file: one class name per line, class i on line i+1 (the files in
// evl's README and the official repo). Surrounding whitespace is trimmed; an
// empty line is an error. Throws evl::Error naming the file and line.
std::vector<std::string> read_label_names(const std::string& path);

// Metrics of `scores` (N, K), row-major, against `labels` (N): rows with label
// -1 are ignored. With no labelled row, the accuracies are NaN and
// num_labelled is 0. Throws evl::Error when labels.size() != n or a label is
// outside [-1, K). Works on probabilities or logits alike (rank-based).
Metrics compute_metrics(const float* scores, int64_t n, int64_t k,
                        const std::vector<int64_t>& labels);
Metrics compute_metrics(const double* scores, int64_t n, int64_t k,
                        const std::vector<int64_t>& labels);

// {"top1", "top5", "mean_class_accuracy", "num_labelled", "num_classes",
//  "per_class_accuracy": [K] (null for absent classes), "per_class_count": [K],
//  "confusion": [[K] x K] (row = true class)}; "class_names" when given (size K).
nlohmann::json metrics_to_json(const Metrics& m, const std::vector<std::string>& class_names = {});

}  // namespace evl
