// Helpers for the video tests: temp dirs, the ffmpeg CLI and python3-av as
// independent references, small generated videos (made once per process),
// the list of real videos in EVL_SHARED_DIR/data/real/videos, and the
// frame-exactness check of sparse reads against a full sequential decode.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "extract/video_reader.h"
#include "tests/support/test_support.h"

namespace evl::test {

inline std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("evl_video_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

using evl::test::make_video;  // tests/support/test_support.h
using evl::test::sh;

// Small generated videos covering GOP structures and codecs (100 frames of
// 96x64 unless the name says otherwise), made once per process.
inline const std::vector<std::string>& generated_videos() {
  static const std::vector<std::string> videos = [] {
    const std::string d = temp_dir("gen");
    std::vector<std::string> v = {
        make_video(d, "h264_opengop.mp4",
                   "-c:v libx264 -pix_fmt yuv420p -bf 3 "
                   "-x264-params keyint=12:min-keyint=12:open-gop=1:scenecut=0"),
        make_video(d, "h264_opengop.mkv",
                   "-c:v libx264 -pix_fmt yuv420p -bf 3 "
                   "-x264-params keyint=10:min-keyint=10:open-gop=1:scenecut=0"),
        make_video(d, "vp9.webm",
                   "-c:v libvpx-vp9 -pix_fmt yuv420p -b:v 0 -crf 40 -deadline realtime "
                   "-cpu-used 8 -g 10"),
        make_video(d, "mpeg4_bframes.mp4", "-c:v mpeg4 -q:v 5 -bf 2 -g 12"),
        make_video(d, "mpeg4_bframes.avi", "-c:v mpeg4 -q:v 5 -bf 2 -g 12"),
        make_video(d, "yuv444_odd_85x47.mp4", "-c:v libx264 -pix_fmt yuv444p -g 9",
                   "testsrc=duration=2:size=85x47:rate=25"),
        make_video(d, "mjpeg_full.avi", "-c:v mjpeg -pix_fmt yuvj422p -q:v 3"),
        make_video(d, "palette.gif", "-f gif", "testsrc=duration=2:size=96x64:rate=10"),
        make_video(d, "vfr.mp4",
                   "-vf select='lt(n\\,20)+not(mod(n\\,3))' -vsync vfr -c:v libx264 "
                   "-pix_fmt yuv420p -g 8",
                   "testsrc=duration=4:size=96x64:rate=30"),
    };
    return v;
  }();
  return videos;
}

inline std::vector<std::string> real_videos() {
  std::vector<std::string> out;
  for (const char* sub : {"action", "codecs"})
    for (auto& e : std::filesystem::directory_iterator(std::string(EVL_SHARED_DIR) +
                                                       "/data/real/videos/" + sub))
      out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string read_text(const std::string& path) { return evl::test::slurp(path); }

// Runs pyav_frames.py once over `paths` (dumping `dump` indices of each into
// `dump_dir` when given) and returns path -> PyAV frame count.
inline std::map<std::string, int64_t> pyav_counts(const std::vector<std::string>& paths,
                                                  const std::string& dump_dir = "",
                                                  const std::string& dump = "") {
  std::string cmd =
      std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR + "/tests/extract/pyav_frames.py";
  if (!dump_dir.empty()) cmd += " --dump " + dump_dir + " " + dump;
  for (auto& p : paths) cmd += " '" + p + "'";
  std::string out_file = temp_dir("pyav") + "/counts.txt";
  EXPECT_EQ(sh(cmd + " > " + out_file + " 2>/dev/null"), 0) << cmd;
  std::istringstream in(read_text(out_file));
  std::map<std::string, int64_t> counts;
  int64_t count = 0;
  std::string path;
  while (in >> count >> path) counts[path] = count;
  return counts;
}

// Index sets a sampler would ask for: 8x16 / 32x8 test views, random, reversed
// random with repeats, and the frames around every 40th index.
inline std::vector<std::vector<int64_t>> index_sets(int64_t n, uint64_t seed) {
  std::vector<std::vector<int64_t>> sets;
  for (auto [t, s] : {std::pair<int64_t, int64_t>{8, 16}, {32, 8}}) {
    std::vector<int64_t> v;
    int64_t start = std::max<int64_t>(0, n - (t - 1) * s - 1) / 2;
    for (int64_t i = 0; i < t; ++i) v.push_back(std::min(start + i * s, n - 1));
    sets.push_back(v);
  }
  std::mt19937_64 rng(seed);
  std::vector<int64_t> r;
  for (int i = 0; i < 6; ++i) r.push_back(std::uniform_int_distribution<int64_t>(0, n - 1)(rng));
  r.push_back(n - 1);
  r.push_back(r[0]);
  sets.push_back(r);
  sets.push_back(std::vector<int64_t>(r.rbegin(), r.rend()));
  std::vector<int64_t> near;
  for (int64_t i = 0; i < n; i += 40)
    for (int64_t j : {i, i + 1, i + 3}) near.push_back(std::min(j, n - 1));
  sets.push_back(near);
  return sets;
}

// Sparse reads (a fresh reader per set and one reused reader) equal a full
// sequential decode (read_all_frames) at the same indices, and the reader's
// frame count equals the full decode's.
inline void expect_frame_exact(const std::string& path, int threads,
                               std::vector<std::vector<int64_t>> sets = {}) {
  SCOPED_TRACE(path + " threads=" + std::to_string(threads));
  VideoReaderOptions opt;
  opt.threads = threads;
  VideoReader oracle_reader(path, opt);
  const int64_t n = oracle_reader.info().num_frames;
  ASSERT_GT(n, 0);
  if (sets.empty()) sets = index_sets(n, 7);
  std::vector<int64_t> all;
  for (auto& s : sets) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  auto oracle = oracle_reader.read_all_frames(all);
  EXPECT_EQ(count_decodable_frames(path), n)
      << "the full decode's frame count disagrees with the reader's";
  std::map<int64_t, torch::Tensor> want;
  for (size_t i = 0; i < all.size(); ++i) want[all[i]] = oracle[i];
  VideoReader reused(path, opt);
  for (auto& s : sets) {
    VideoReader fresh(path, opt);
    for (VideoReader* r : {&fresh, &reused}) {
      auto got = r->read_frames(s);
      ASSERT_EQ(got.size(), s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        ASSERT_EQ(got[i].sizes(), want[s[i]].sizes()) << "frame " << s[i];
        ASSERT_TRUE(torch::equal(got[i], want[s[i]]))
            << "frame " << s[i] << " differs from the full decode";
      }
    }
  }
}

}  // namespace evl::test
