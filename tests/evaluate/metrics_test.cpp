// Tests metrics against naive loops: a stable sort for top-k, explicit argmax,
// per-class tallies, on random scores with many exact ties.
#include "evaluate/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "common/check.h"

namespace {

// Position of `y` after sorting classes by (score desc, index asc).
int64_t naive_position(const std::vector<float>& row, int64_t y) {
  std::vector<int64_t> idx(row.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
  return std::find(idx.begin(), idx.end(), y) - idx.begin();
}

}  // namespace

TEST(Metrics, MatchesNaiveLoopsWithTies) {
  for (int64_t k : {1, 3, 5, 17}) {
    SCOPED_TRACE(k);
    std::mt19937 rng(static_cast<uint32_t>(k));
    const int64_t n = 500;
    std::vector<float> s(n * k);
    for (auto& v : s) v = static_cast<float>(rng() % 4);  // coarse values: lots of ties
    std::vector<int64_t> labels(n);
    for (auto& y : labels) y = rng() % 7 == 0 ? -1 : static_cast<int64_t>(rng() % k);
    const evl::Metrics m = evl::compute_metrics(s.data(), n, k, labels);

    int64_t labelled = 0, h1 = 0, h5 = 0;
    std::vector<int64_t> conf(k * k, 0), count(k, 0), correct(k, 0);
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < 0) continue;
      std::vector<float> row(s.begin() + i * k, s.begin() + (i + 1) * k);
      const int64_t pos = naive_position(row, labels[i]);
      int64_t am = 0;
      for (int64_t j = 0; j < k; ++j)
        if (row[j] > row[am]) am = j;
      ++labelled;
      h1 += pos == 0;
      h5 += pos < 5;
      ++conf[labels[i] * k + am];
      ++count[labels[i]];
      correct[labels[i]] += am == labels[i];
    }
    EXPECT_EQ(m.num_labelled, labelled);
    EXPECT_DOUBLE_EQ(m.top1, static_cast<double>(h1) / labelled);
    EXPECT_DOUBLE_EQ(m.top5, static_cast<double>(h5) / labelled);
    EXPECT_EQ(m.confusion, conf);
    EXPECT_EQ(m.per_class_count, count);
    double sum = 0;
    int64_t present = 0;
    for (int64_t c = 0; c < k; ++c) {
      if (!count[c]) {
        EXPECT_TRUE(std::isnan(m.per_class_accuracy[c]));
        continue;
      }
      EXPECT_DOUBLE_EQ(m.per_class_accuracy[c], static_cast<double>(correct[c]) / count[c]);
      sum += static_cast<double>(correct[c]) / count[c];
      ++present;
    }
    EXPECT_NEAR(m.mean_class_accuracy, sum / present, 1e-12);
    // The double overload agrees with the float one.
    std::vector<double> sd(s.begin(), s.end());
    const evl::Metrics md = evl::compute_metrics(sd.data(), n, k, labels);
    EXPECT_EQ(md.confusion, m.confusion);
    EXPECT_DOUBLE_EQ(md.top5, m.top5);
  }
}

TEST(Metrics, HandWorkedExample) {
  // 3 videos, 6 classes. Video 0: label 2 is argmax. Video 1: label 0 ties with
  // class 3 for first place and wins on the lower index. Video 2: label 5 ranks
  // 6th (outside top-5). Video 3 is unlabelled.
  const std::vector<float> s = {0.1f, 0.2f, 0.9f, 0.0f, 0.0f, 0.0f,  //
                                0.5f, 0.1f, 0.1f, 0.5f, 0.0f, 0.0f,  //
                                0.5f, 0.4f, 0.3f, 0.2f, 0.1f, 0.0f,  //
                                1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  const evl::Metrics m = evl::compute_metrics(s.data(), 4, 6, {2, 0, 5, -1});
  EXPECT_EQ(m.num_labelled, 3);
  EXPECT_DOUBLE_EQ(m.top1, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.top5, 2.0 / 3.0);
  EXPECT_EQ(m.confusion[2 * 6 + 2], 1);
  EXPECT_EQ(m.confusion[0 * 6 + 0], 1);
  EXPECT_EQ(m.confusion[5 * 6 + 0], 1);
  EXPECT_DOUBLE_EQ(m.mean_class_accuracy, 2.0 / 3.0);  // classes 0, 2, 5 present
  const auto j = evl::metrics_to_json(m);
  EXPECT_TRUE(j["per_class_accuracy"][1].is_null());
  EXPECT_EQ(j["confusion"][5][0], 1);
}

TEST(Metrics, BadLabelsAndEmptyInput) {
  const std::vector<float> s = {0.1f, 0.9f};
  EXPECT_THROW(evl::compute_metrics(s.data(), 1, 2, {2}), evl::Error);
  EXPECT_THROW(evl::compute_metrics(s.data(), 1, 2, {0, 1}), evl::Error);
  const evl::Metrics m = evl::compute_metrics(s.data(), 1, 2, {-1});
  EXPECT_EQ(m.num_labelled, 0);
  EXPECT_TRUE(std::isnan(m.top1));
  EXPECT_TRUE(evl::metrics_to_json(m)["top1"].is_null());
}

TEST(LabelNames, RealKineticsFileAndErrors) {
  auto names =
      evl::read_label_names(std::string(EVL_SHARED_DIR) + "/data/real/labels/kinetics400.txt");
  ASSERT_EQ(names.size(), 400u);
  EXPECT_EQ(names[6], "arm wrestling");  // 0-based line numbers (the data README)
  EXPECT_THROW(evl::read_label_names("/nonexistent/labels.txt"), evl::Error);
  EXPECT_THROW(evl::read_label_names("/tmp"), evl::Error);  // a directory is not a label file
}
