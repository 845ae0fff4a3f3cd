// Frame-index sampling, exactly as the official EVL dataset code: dense
// T x stride clips (random start for training, evenly spread temporal views for
// testing, last-frame padding for short videos), TSN segments, and trimming to
// a time range. Pure index math: no decoding, no pixels (video_reader.h, views.h).
#pragma once

#include <cstdint>
#include <vector>

#include "common/random.h"

namespace evl {

// Python's round(): half to even (the official code uses it for view starts).
int64_t round_half_even(double x);

// Dense training clip over frames [0, n): start = randint(n - stride*(T-1)),
// indices start + i*stride. Short videos (stride*(T-1)+1 >= n): i*stride while
// < n, then the last valid index repeated. Returns T indices. Throws evl::Error
// when n < 1.
std::vector<int64_t> dense_train_indices(int64_t n, int64_t frames, int64_t stride, rng::Engine& g);

// Start frames of k test temporal views over n frames, for a span of
// (T-1)*stride+1 frames: slide = max(n, span) - span; k == 1: slide/2;
// k > 1: round(slide/(k-1)*i).
std::vector<int64_t> temporal_view_starts(int64_t n, int64_t frames, int64_t stride, int64_t views);

// Indices of the dense test view starting at `start`: start + i*stride, clamped
// to n-1 (the official code pads a short video with its last frame).
std::vector<int64_t> dense_view_indices(int64_t n, int64_t start, int64_t frames, int64_t stride);

// TSN training: seg = (n-1)/T; frame i uniform in [round(seg*i), round(seg*(i+1))].
std::vector<int64_t> tsn_train_indices(int64_t n, int64_t frames, rng::Engine& g);

// TSN test view v of k (not official: the official TSN eval crashes): frame i
// at round(seg*(i + (v+0.5)/k)), so k == 1 takes every segment's centre.
std::vector<int64_t> tsn_test_indices(int64_t n, int64_t frames, int64_t view, int64_t views);

// The frame range [first, first+count) whose times lie in [start_sec, end_sec);
// start_sec < 0 / end_sec < 0 mean "from the start" / "to the end". `times` are
// presentation times of every frame (VideoReader::frame_times). An empty range
// falls back to the single frame nearest start_sec.
struct FrameRange {
  int64_t first = 0;
  int64_t count = 0;
};
FrameRange trim_range(const std::vector<double>& times, double start_sec, double end_sec);

}  // namespace evl
