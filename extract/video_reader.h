// Frame-exact video decoding with FFmpeg (libavformat/libavcodec/libswscale).
// A frame's index is its rank in presentation order (the official loader sorts
// decoded frames by pts; files are opened with genpts as PyAV does). Sparse
// reads seek to a keyframe or decode through, whichever costs fewer packets,
// skip non-reference frames nobody asked for, and return exactly the pixels a
// full sequential decode gives. Pixel reference: PyAV's to_ndarray('rgb24')
// (same swscale flags and destination alignment). Does not resample, crop or
// normalise (views.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/check.h"

namespace evl {

// Any failure to read a video. The message names the file and the reason.
class VideoError : public Error {
 public:
  VideoError(const std::string& path, const std::string& reason)
      : Error(str("video '", path, "': ", reason)), path_(path), reason_(reason) {}
  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_;
  std::string reason_;
};

// Thrown by VideoReader::read_frames when decoding found fewer frames than the
// demuxer indexed (an undecodable tail, a skipped packet). info() already holds
// the corrected count when this is thrown; callers resample and read again.
class FrameCountChanged : public VideoError {
 public:
  FrameCountChanged(const std::string& path, int64_t before, int64_t after)
      : VideoError(path, str("decodable frame count is ", after, ", not the ", before,
                             " the container indexed")),
        before_(before),
        after_(after) {}
  int64_t before() const { return before_; }
  int64_t after() const { return after_; }

 private:
  int64_t before_, after_;
};

struct VideoInfo {
  int64_t num_frames = 0;         // frames in presentation order
  int64_t width = 0, height = 0;  // display size, after rotation
  double fps = 0;                 // average rate (frames / duration); informative only
  int rotation = 0;               // clockwise degrees applied to decoded frames: 0/90/180/270
  std::string codec;              // libavcodec decoder name, e.g. "h264"
};

struct VideoReaderOptions {
  int threads = 1;         // libavcodec threads (frame + slice); 0 = libavcodec's choice
  bool allow_seek = true;  // false: always decode through from the start (for tests/bench)
  int64_t max_pixels = int64_t{1} << 26;  // larger frames are rejected as absurd (8192x8192)
};

// One open video. Not thread-safe: use one reader per thread. Move-only.
// Throws VideoError (missing file, not a video, no video stream, still image,
// no decodable frame, absurd dimensions) from the constructor.
class VideoReader {
 public:
  explicit VideoReader(const std::string& path, const VideoReaderOptions& options = {});
  ~VideoReader();
  VideoReader(VideoReader&&) noexcept;
  VideoReader& operator=(VideoReader&&) noexcept;
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  const VideoInfo& info() const;
  const std::string& path() const;

  // Presentation time in seconds of every frame (size num_frames), for trimming.
  const std::vector<double>& frame_times() const;

  // RGB24 frames at the given presentation-order indices (any order, repeats
  // allowed), each a (H, W, 3) uint8 tensor of the display size. Throws
  // VideoError for an index outside [0, num_frames), FrameCountChanged when a
  // requested frame turned out not to be decodable.
  std::vector<torch::Tensor> read_frames(const std::vector<int64_t>& indices);

  // Every frame in presentation order: the official approach (decode all, key
  // by pts with the last frame winning, sort). Independent of the sparse path;
  // used as its oracle and as the baseline. With `keep` non-empty, returns only
  // those indices (in that order), decoding the whole video twice to save memory.
  std::vector<torch::Tensor> read_all_frames(const std::vector<int64_t>& keep = {});

  // Frames the decoder produced since construction (including index building).
  int64_t frames_decoded() const;
  // True when the stream's timestamps could not be trusted for seeking and
  // every read decodes from the start.
  bool sequential() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Frame count of a full sequential decode (no colour conversion), as the
// official loader would see it. For tests and diagnostics.
int64_t count_decodable_frames(const std::string& path);

}  // namespace evl
