// Implements metrics.h: one pass over the rows with the shared ranking rule
// (no sorting: a label's rank is a count, so top-5 costs O(K) per row).
#include "evaluate/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "common/atomic_file.h"
#include "common/check.h"

namespace evl {

namespace {

template <typename T>
Metrics compute(const T* scores, int64_t n, int64_t k, const std::vector<int64_t>& labels) {
  EVL_CHECK(n >= 0 && k >= 1, "metrics: need K >= 1 classes, got N=", n, " K=", k);
  EVL_CHECK(static_cast<int64_t>(labels.size()) == n, "metrics: ", labels.size(), " labels for ", n,
            " score rows");
  Metrics m;
  m.num_classes = k;
  m.confusion.assign(static_cast<size_t>(k * k), 0);
  m.per_class_count.assign(static_cast<size_t>(k), 0);
  std::vector<int64_t> correct(static_cast<size_t>(k), 0);
  const int64_t top = std::min<int64_t>(5, k);
  int64_t hits1 = 0, hits5 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i];
    if (y == -1) continue;
    EVL_CHECK(y >= 0 && y < k, "metrics: label ", y, " of row ", i, " is outside [-1, ", k, ")");
    const T* row = scores + i * k;
    int64_t argmax = 0;
    for (int64_t j = 1; j < k; ++j)
      if (row[j] > row[argmax]) argmax = j;
    const int64_t rank = label_rank(row, k, y, top);
    hits1 += rank == 0;
    hits5 += rank < top;
    ++m.num_labelled;
    ++m.per_class_count[y];
    correct[y] += argmax == y;
    ++m.confusion[y * k + argmax];
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto denom = static_cast<double>(m.num_labelled);
  m.top1 = m.num_labelled ? hits1 / denom : nan;
  m.top5 = m.num_labelled ? hits5 / denom : nan;
  m.per_class_accuracy.assign(static_cast<size_t>(k), nan);
  double sum = 0;
  int64_t present = 0;
  for (int64_t c = 0; c < k; ++c) {
    if (m.per_class_count[c] == 0) continue;
    m.per_class_accuracy[c] =
        static_cast<double>(correct[c]) / static_cast<double>(m.per_class_count[c]);
    sum += m.per_class_accuracy[c];
    ++present;
  }
  m.mean_class_accuracy = present ? sum / static_cast<double>(present) : nan;
  return m;
}

nlohmann::json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

std::vector<std::string> read_label_names(const std::string& path) {
  std::istringstream in(read_file(path));  // names the file if missing or not a file
  std::vector<std::string> names;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
    EVL_CHECK(b != std::string::npos, "label names '", path, "' line ", n, ": empty class name");
    names.push_back(line.substr(b, e - b + 1));
  }
  return names;
}

Metrics compute_metrics(const float* scores, int64_t n, int64_t k,
                        const std::vector<int64_t>& labels) {
  return compute(scores, n, k, labels);
}

Metrics compute_metrics(const double* scores, int64_t n, int64_t k,
                        const std::vector<int64_t>& labels) {
  return compute(scores, n, k, labels);
}

nlohmann::json metrics_to_json(const Metrics& m, const std::vector<std::string>& class_names) {
  nlohmann::json j;
  j["top1"] = number_or_null(m.top1);
  j["top5"] = number_or_null(m.top5);
  j["mean_class_accuracy"] = number_or_null(m.mean_class_accuracy);
  j["num_labelled"] = m.num_labelled;
  j["num_classes"] = m.num_classes;
  auto per_class = nlohmann::json::array();
  for (double v : m.per_class_accuracy) per_class.push_back(number_or_null(v));
  j["per_class_accuracy"] = per_class;
  j["per_class_count"] = m.per_class_count;
  auto confusion = nlohmann::json::array();
  for (int64_t r = 0; r < m.num_classes; ++r)
    confusion.push_back(std::vector<int64_t>(m.confusion.begin() + r * m.num_classes,
                                             m.confusion.begin() + (r + 1) * m.num_classes));
  j["confusion"] = confusion;
  if (!class_names.empty()) {
    EVL_CHECK(static_cast<int64_t>(class_names.size()) == m.num_classes,
              "metrics: ", class_names.size(), " class names for ", m.num_classes, " classes");
    j["class_names"] = class_names;
  }
  return j;
}

}  // namespace evl
