// Index math of the official EVL sampler (video_dataset/dataset.py:155-170 and
// its test-view helpers); see sampling.h for the rules.
#include "extract/sampling.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace evl {

int64_t round_half_even(double x) {
  double r = std::round(x);  // half away from zero
  if (std::abs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
  return static_cast<int64_t>(r);
}

namespace {
void check_args(int64_t n, int64_t frames, int64_t stride) {
  EVL_CHECK(n >= 1, "sampling: the video has no frames");
  EVL_CHECK(frames >= 1, "sampling: frames must be >= 1, got ", frames);
  EVL_CHECK(stride >= 1, "sampling: stride must be >= 1, got ", stride);
}
}  // namespace

std::vector<int64_t> dense_train_indices(int64_t n, int64_t frames, int64_t stride,
                                         rng::Engine& g) {
  check_args(n, frames, stride);
  if (stride * (frames - 1) + 1 >= n) {
    // i*stride while < n, then the last valid index repeated (not n-1).
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < frames; ++i) idx.push_back(i * stride < n ? i * stride : idx.back());
    return idx;
  }
  return dense_view_indices(n, rng::uniform_int(g, 0, n - stride * (frames - 1) - 1), frames,
                            stride);
}

std::vector<int64_t> temporal_view_starts(int64_t n, int64_t frames, int64_t stride,
                                          int64_t views) {
  check_args(n, frames, stride);
  EVL_CHECK(views >= 1, "sampling: temporal views must be >= 1, got ", views);
  int64_t span = (frames - 1) * stride + 1;
  int64_t slide = std::max(n, span) - span;
  std::vector<int64_t> starts;
  if (views == 1) return {slide / 2};
  for (int64_t i = 0; i < views; ++i)
    starts.push_back(round_half_even(static_cast<double>(slide) / static_cast<double>(views - 1) *
                                     static_cast<double>(i)));
  return starts;
}

std::vector<int64_t> dense_view_indices(int64_t n, int64_t start, int64_t frames, int64_t stride) {
  check_args(n, frames, stride);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < frames; ++i) idx.push_back(std::min(start + i * stride, n - 1));
  return idx;
}

std::vector<int64_t> tsn_train_indices(int64_t n, int64_t frames, rng::Engine& g) {
  check_args(n, frames, 1);
  double seg = static_cast<double>(n - 1) / static_cast<double>(frames);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < frames; ++i) {
    int64_t lo = round_half_even(seg * static_cast<double>(i));
    int64_t hi = round_half_even(seg * static_cast<double>(i + 1));
    idx.push_back(rng::uniform_int(g, lo, std::max(lo, hi)));
  }
  return idx;
}

std::vector<int64_t> tsn_test_indices(int64_t n, int64_t frames, int64_t view, int64_t views) {
  check_args(n, frames, 1);
  EVL_CHECK(views >= 1 && view >= 0 && view < views, "sampling: TSN view ", view, " of ", views);
  double seg = static_cast<double>(n - 1) / static_cast<double>(frames);
  double off = (static_cast<double>(view) + 0.5) / static_cast<double>(views);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < frames; ++i)
    idx.push_back(
        std::clamp<int64_t>(round_half_even(seg * (static_cast<double>(i) + off)), 0, n - 1));
  return idx;
}

FrameRange trim_range(const std::vector<double>& times, double start_sec, double end_sec) {
  const int64_t n = static_cast<int64_t>(times.size());
  EVL_CHECK(n >= 1, "trim: the video has no frames");
  if (start_sec < 0 && end_sec < 0) return {0, n};
  EVL_CHECK(end_sec < 0 || start_sec < 0 || end_sec > start_sec, "trim: end ", end_sec,
            " s is not after start ", start_sec, " s");
  // A window that starts after the last frame has ended is a wrong list line
  // (other units, another video), not a clip: refused instead of sampling the
  // last frame. One frame duration of slack covers the last frame's display.
  const double frame_dt = n >= 2 ? times[n - 1] - times[n - 2] : 0.0;
  EVL_CHECK(start_sec < 0 || start_sec <= times.back() + frame_dt, "trim window starts at ",
            start_sec, " s, after the end of the video (", n, " frames, the last at ", times.back(),
            " s)");
  auto lo = start_sec < 0 ? times.begin() : std::lower_bound(times.begin(), times.end(), start_sec);
  auto hi = end_sec < 0 ? times.end() : std::lower_bound(times.begin(), times.end(), end_sec);
  if (lo < hi) return {lo - times.begin(), hi - lo};
  // Nothing inside the range (past the end, or between two frames): nearest frame.
  int64_t at = std::min<int64_t>(lo - times.begin(), n - 1);
  return {at, 1};
}

}  // namespace evl
