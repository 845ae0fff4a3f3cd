// Implements ensemble.h. The search is exhaustive over the grid but prunes per
// video: since fused scores are convex combinations, class j can outrank the
// label y for some weights only if p_m[j] >= p_m[y] in some model m, and
// outranks it for all weights if p_m[j] > p_m[y] in every model. Only the
// first kind is scored per point; the second is a constant count.
#include "ensemble/ensemble.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/check.h"
#include "common/log.h"
#include "evl/version.h"

namespace evl {

namespace {

// Margin far above the rounding error of sums of <= M products w*p with p <= 1,
// so pruning never disagrees with the dense computation at near-ties.
constexpr double kPruneEps = 1e-9;

std::string list_ids(const std::vector<std::string>& ids, size_t total) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += str(i ? ", " : "", "'", ids[i], "'");
  if (total > ids.size()) s += str(", ... (", total, " in all)");
  return s;
}

std::vector<std::string> only_in(const ScoreFile& a, const std::unordered_set<std::string>& b,
                                 size_t& total) {
  std::vector<std::string> out;
  total = 0;
  for (const auto& id : a.video_ids)
    if (!b.count(id) && total++ < 5) out.push_back(id);
  return out;
}

// Per video: the label's probabilities and the candidate classes' probabilities.
struct Prepared {
  int64_t m = 0, top = 5, num_labelled = 0;
  std::vector<float> label_vals;    // (V, M) for the V videos that can still hit
  std::vector<int32_t> base;        // (V) classes that outrank the label at every point
  std::vector<int64_t> offsets;     // (V + 1) into cand_vals / M
  std::vector<float> cand_vals;     // (sum candidates, M)
  std::vector<uint8_t> cand_lower;  // (sum candidates) class index < label
};

Prepared prepare(const AlignedScores& s) {
  Prepared p;
  p.m = static_cast<int64_t>(s.probs.size());
  const int64_t k = s.num_classes, n = s.num_videos(), m = p.m;
  p.top = std::min<int64_t>(5, k);
  p.offsets.push_back(0);
  std::vector<float> vals(static_cast<size_t>(m));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = s.labels[i];
    if (y < 0) continue;
    ++p.num_labelled;
    int32_t always = 0;
    const size_t mark = p.cand_vals.size();
    const size_t mark_lower = p.cand_lower.size();
    for (int64_t j = 0; j < k && always < p.top; ++j) {
      if (j == y) continue;
      double dmin = std::numeric_limits<double>::infinity(), dmax = -dmin;
      for (int64_t mm = 0; mm < m; ++mm) {
        const double d = static_cast<double>(s.probs[mm][i * k + j]) - s.probs[mm][i * k + y];
        dmin = std::min(dmin, d);
        dmax = std::max(dmax, d);
      }
      if (dmin > kPruneEps) {
        ++always;
      } else if (dmax >= -kPruneEps) {
        for (int64_t mm = 0; mm < m; ++mm) p.cand_vals.push_back(s.probs[mm][i * k + j]);
        p.cand_lower.push_back(j < y);
      }
    }
    if (always >= p.top) {  // never a hit at any point: drop it
      p.cand_vals.resize(mark);
      p.cand_lower.resize(mark_lower);
      continue;
    }
    for (int64_t mm = 0; mm < m; ++mm) p.label_vals.push_back(s.probs[mm][i * k + y]);
    p.base.push_back(always);
    p.offsets.push_back(static_cast<int64_t>(p.cand_lower.size()));
  }
  return p;
}

PointScore score_point(const Prepared& p, const std::vector<double>& w) {
  PointScore out;
  out.num_labelled = p.num_labelled;
  const int64_t m = p.m, videos = static_cast<int64_t>(p.base.size());
  for (int64_t v = 0; v < videos; ++v) {
    const float* lv = p.label_vals.data() + v * m;
    double fy = 0;
    for (int64_t mm = 0; mm < m; ++mm) fy += w[mm] * lv[mm];
    int64_t count = p.base[v];
    for (int64_t c = p.offsets[v]; c < p.offsets[v + 1] && count < p.top; ++c) {
      const float* cv = p.cand_vals.data() + c * m;
      double fj = 0;
      for (int64_t mm = 0; mm < m; ++mm) fj += w[mm] * cv[mm];
      count += (fj > fy) || (fj == fy && p.cand_lower[c]);
    }
    out.top1_hits += count == 0;
    out.top5_hits += count < p.top;
  }
  return out;
}

double ratio(int64_t hits, int64_t n) {
  return n ? static_cast<double>(hits) / static_cast<double>(n)
           : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

double PointScore::top1() const { return ratio(top1_hits, num_labelled); }
double PointScore::top5() const { return ratio(top5_hits, num_labelled); }

AlignedScores align_scores(const std::vector<ScoreFile>& files,
                           const std::vector<std::string>& paths, bool intersect) {
  EVL_CHECK(!files.empty() && files.size() == paths.size(), "align_scores: ", files.size(),
            " files for ", paths.size(), " paths");
  const ScoreFile& first = files[0];
  AlignedScores out;
  out.num_classes = first.num_classes();
  out.num_views = first.num_views;
  std::vector<std::unordered_map<std::string, int64_t>> rows(files.size());
  for (size_t f = 0; f < files.size(); ++f) {
    EVL_CHECK(files[f].num_classes() == out.num_classes, "score files '", paths[0], "' and '",
              paths[f], "' have different class counts (", out.num_classes, " vs ",
              files[f].num_classes(), ")");
    if (files[f].num_views != out.num_views) out.num_views = 1;
    for (int64_t i = 0; i < files[f].num_videos(); ++i) rows[f].emplace(files[f].video_ids[i], i);
  }
  if (!intersect) {
    for (size_t f = 1; f < files.size(); ++f) {
      std::unordered_set<std::string> a(first.video_ids.begin(), first.video_ids.end());
      std::unordered_set<std::string> b(files[f].video_ids.begin(), files[f].video_ids.end());
      size_t na = 0, nb = 0;
      const auto missing_b = only_in(first, b, na), missing_a = only_in(files[f], a, nb);
      if (na || nb)
        EVL_THROW(Error, "score files '", paths[0], "' and '", paths[f],
                  "' cover different videos: ", na, " only in the first (", list_ids(missing_b, na),
                  "), ", nb, " only in the second (", list_ids(missing_a, nb),
                  "); pass --intersect to use the common videos");
    }
  }
  for (const auto& id : first.video_ids) {
    bool everywhere = true;
    for (size_t f = 1; f < files.size() && everywhere; ++f) everywhere = rows[f].count(id) > 0;
    if (everywhere) out.video_ids.push_back(id);
  }
  EVL_CHECK(!out.video_ids.empty(), "score files '", paths[0],
            "' and the others have no video id "
            "in common");
  if (out.num_videos() < first.num_videos())
    log::warn("--intersect: using ", out.num_videos(), " videos common to all files (", paths[0],
              " has ", first.num_videos(), ")");
  const int64_t n = out.num_videos(), k = out.num_classes;
  out.labels.assign(static_cast<size_t>(n), -1);
  for (size_t f = 0; f < files.size(); ++f) {
    const std::vector<float> probs = to_probabilities(files[f]);
    std::vector<float> aligned(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = rows[f].at(out.video_ids[i]);
      std::copy_n(probs.begin() + r * k, k, aligned.begin() + i * k);
      const int64_t y = files[f].labels[r];
      if (y < 0) continue;
      EVL_CHECK(out.labels[i] < 0 || out.labels[i] == y, "score file '", paths[f], "': video '",
                out.video_ids[i], "' has label ", y, " but an earlier file says ", out.labels[i]);
      out.labels[i] = y;
    }
    out.probs.push_back(std::move(aligned));
    out.models.push_back(files[f].model);
  }
  return out;
}

std::vector<double> WeightGrid::weights(int64_t p) const {
  std::vector<double> w(static_cast<size_t>(num_models));
  for (int64_t m = 0; m < num_models; ++m)
    w[m] = static_cast<double>(counts[p * num_models + m]) / static_cast<double>(steps);
  return w;
}

WeightGrid simplex_grid(int64_t num_models, double step) {
  EVL_CHECK_USAGE(num_models >= 2, "an ensemble needs at least 2 models, got ", num_models);
  EVL_CHECK_USAGE(step > 0 && step <= 1, "--alpha-step ", step, " must be in (0, 1]");
  const double inv = 1.0 / step;
  const auto steps = static_cast<int64_t>(std::llround(inv));
  EVL_CHECK_USAGE(std::fabs(inv - static_cast<double>(steps)) < 1e-6 * inv, "--alpha-step ", step,
                  " must divide 1 (e.g. 0.1, 0.05, 0.25)");
  // P = C(steps + M - 1, M - 1), computed with an overflow-safe early stop.
  double points = 1;
  for (int64_t i = 1; i < num_models; ++i)
    points = points * static_cast<double>(steps + i) / static_cast<double>(i);
  EVL_CHECK_USAGE(points <= static_cast<double>(kMaxGridPoints), "a grid of ", num_models,
                  " models at step ", step, " has ", std::llround(points), " points (limit ",
                  kMaxGridPoints, "); use a coarser --alpha-step");
  WeightGrid g;
  g.num_models = num_models;
  g.steps = steps;
  std::vector<int32_t> c(static_cast<size_t>(num_models), 0);
  // Odometer over counts[0..M-2] ascending; counts[M-1] takes the remainder.
  while (true) {
    int64_t used = 0;
    for (int64_t m = 0; m + 1 < num_models; ++m) used += c[m];
    if (used <= steps) {
      c[num_models - 1] = static_cast<int32_t>(steps - used);
      g.counts.insert(g.counts.end(), c.begin(), c.end());
    }
    int64_t m = num_models - 2;
    while (m >= 0 && ++c[m] > steps) c[m--] = 0;
    if (m < 0) break;
  }
  return g;
}

std::vector<PointScore> evaluate_grid(const AlignedScores& scores, const WeightGrid& grid,
                                      int threads) {
  EVL_CHECK(static_cast<int64_t>(scores.probs.size()) == grid.num_models,
            "evaluate_grid: ", scores.probs.size(), " models but a grid for ", grid.num_models);
  const Prepared prepared = prepare(scores);
  const int64_t points = grid.num_points();
  std::vector<PointScore> out(static_cast<size_t>(points));
  int workers = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  workers = static_cast<int>(std::clamp<int64_t>(workers, 1, points));
  auto work = [&](int t) {
    for (int64_t p = t; p < points; p += workers) out[p] = score_point(prepared, grid.weights(p));
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < workers; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  return out;
}

std::vector<double> fuse(const AlignedScores& scores, const std::vector<double>& weights) {
  EVL_CHECK(weights.size() == scores.probs.size(), "fuse: ", weights.size(), " weights for ",
            scores.probs.size(), " models");
  const size_t size = static_cast<size_t>(scores.num_videos() * scores.num_classes);
  std::vector<double> out(size, 0.0);
  for (size_t m = 0; m < weights.size(); ++m)
    for (size_t e = 0; e < size; ++e) out[e] += weights[m] * scores.probs[m][e];
  return out;
}

int64_t choose_best(const WeightGrid& grid, const std::vector<PointScore>& val) {
  EVL_CHECK(!val.empty() && static_cast<int64_t>(val.size()) == grid.num_points(),
            "choose_best: ", val.size(), " scores for ", grid.num_points(), " points");
  auto spread = [&](int64_t p) {  // M^2 * sum (w_m - 1/M)^2 * steps^2, exact in integers
    int64_t s = 0;
    for (int64_t m = 0; m < grid.num_models; ++m) {
      const int64_t d = grid.num_models * grid.counts[p * grid.num_models + m] - grid.steps;
      s += d * d;
    }
    return s;
  };
  int64_t best = 0;
  for (int64_t p = 1; p < grid.num_points(); ++p) {
    const PointScore &a = val[p], &b = val[best];
    if (a.top1_hits != b.top1_hits) {
      if (a.top1_hits > b.top1_hits) best = p;
    } else if (a.top5_hits != b.top5_hits) {
      if (a.top5_hits > b.top5_hits) best = p;
    } else if (spread(p) < spread(best)) {
      best = p;
    }
  }
  return best;
}

}  // namespace evl
