// VideoReader against independent oracles: a full sequential decode (decode all,
// key by pts, sort) for frame-exactness of sparse reads, PyAV for frame counts
// and pixels, and generated videos covering codecs, GOP structures, rotation, VFR.
#include "extract/video_reader.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <sstream>

#include "tests/extract/video_test_util.h"

namespace evl {
namespace {

// Index sets a sampler would ask for: 8x16 / 32x8 test views, random, reversed, repeats.
std::vector<std::vector<int64_t>> index_sets(int64_t n, uint64_t seed) {
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
  std::vector<int64_t> rev(r.rbegin(), r.rend());
  sets.push_back(rev);
  return sets;
}

// Sparse reads (fresh reader per set and one reused reader) equal the oracle.
void expect_frame_exact(const std::string& path, int threads) {
  SCOPED_TRACE(path + " threads=" + std::to_string(threads));
  VideoReaderOptions opt;
  opt.threads = threads;
  VideoReader oracle_reader(path, opt);
  const int64_t n = oracle_reader.info().num_frames;
  ASSERT_GT(n, 0);
  auto sets = index_sets(n, 7);
  std::vector<int64_t> all;
  for (auto& s : sets) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  auto oracle = oracle_reader.read_all_frames(all);
  EXPECT_EQ(oracle_reader.info().num_frames, n) << "full decode disagrees with the index";
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

TEST(VideoReader, RealVideosFrameExact) {
  for (const auto& path : test::real_videos()) expect_frame_exact(path, 1);
}

TEST(VideoReader, RealVideosFrameExactTwoThreads) {
  for (const auto& path : test::real_videos())
    if (path.find(".mp4") != std::string::npos || path.find(".avi") != std::string::npos)
      expect_frame_exact(path, 2);
}

std::string gen_dir() { return test::temp_dir("gen"); }

std::vector<std::string> generated_videos() {
  const std::string d = gen_dir();
  std::vector<std::string> v = {
      test::make_video(
          d, "h264_opengop.mp4",
          "-c:v libx264 -pix_fmt yuv420p -bf 3 -x264-params keyint=12:min-keyint=12:open-gop=1"),
      test::make_video(
          d, "h264_opengop.mkv",
          "-c:v libx264 -pix_fmt yuv420p -bf 3 -x264-params keyint=10:min-keyint=10:open-gop=1"),
      test::make_video(
          d, "vp9.webm",
          "-c:v libvpx-vp9 -pix_fmt yuv420p -b:v 0 -crf 40 -deadline realtime -cpu-used 8 -g 10"),
      test::make_video(d, "mpeg4_bframes.mp4", "-c:v mpeg4 -q:v 5 -bf 2 -g 12"),
      test::make_video(d, "mpeg4_bframes.avi", "-c:v mpeg4 -q:v 5 -bf 2 -g 12"),
      test::make_video(d, "yuv444_odd.mp4", "-c:v libx264 -pix_fmt yuv444p -g 9",
                       "testsrc=duration=2:size=85x47:rate=25"),
      test::make_video(d, "mjpeg_full.avi", "-c:v mjpeg -pix_fmt yuvj422p -q:v 3"),
      test::make_video(d, "palette.gif", "-f gif", "testsrc=duration=2:size=96x64:rate=10"),
      test::make_video(
          d, "vfr.mp4",
          "-vf select='lt(n\\,20)+not(mod(n\\,3))' -vsync vfr -c:v libx264 -pix_fmt yuv420p -g 8",
          "testsrc=duration=4:size=160x120:rate=30"),
  };
  for (auto& p : v) EXPECT_FALSE(p.empty()) << "ffmpeg failed to generate a test video";
  return v;
}

TEST(VideoReader, GeneratedVideosFrameExact) {
  for (const auto& path : generated_videos()) {
    if (path.empty()) continue;
    expect_frame_exact(path, 1);
    expect_frame_exact(path, 2);
  }
}

TEST(VideoReader, SparseReadDecodesFewerFrames) {
  const std::string d = gen_dir();
  std::string path = test::make_video(d, "long_g25.mp4", "-c:v libx264 -pix_fmt yuv420p -g 25",
                                      "testsrc=duration=20:size=64x48:rate=25");
  VideoReader r(path);
  ASSERT_EQ(r.info().num_frames, 500);
  int64_t before = r.frames_decoded();
  r.read_frames({100, 300, 450});
  // Each target needs at most its GOP (25 frames) plus decoder reorder delay.
  EXPECT_LT(r.frames_decoded() - before, 3 * 25 + 30);
  EXPECT_FALSE(r.sequential());
}

TEST(VideoReader, VfrTimesFollowTimestamps) {
  const std::string d = gen_dir();
  std::string path = generated_videos().back();
  VideoReader r(path);
  const auto& t = r.frame_times();
  ASSERT_EQ(static_cast<int64_t>(t.size()), r.info().num_frames);
  // First 20 frames at 1/30 s, then every third source frame (0.1 s apart).
  EXPECT_NEAR(t[1] - t[0], 1.0 / 30, 1e-3);
  EXPECT_NEAR(t.back() - t[t.size() - 2], 0.1, 1e-3);
}

TEST(VideoReader, FrameCountsMatchPyAV) {
  std::vector<std::string> paths = test::real_videos();
  for (auto& p : generated_videos()) paths.push_back(p);
  std::string cmd =
      std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR + "/tests/extract/pyav_frames.py";
  for (auto& p : paths) cmd += " '" + p + "'";
  std::string out_file = test::temp_dir("pyav") + "/counts.txt";
  ASSERT_EQ(test::sh(cmd + " > " + out_file), 0) << cmd;
  std::istringstream in(test::read_text(out_file));
  int64_t count = 0;
  std::string path;
  size_t checked = 0;
  while (in >> count >> path) {
    VideoReader r(path);
    EXPECT_EQ(r.info().num_frames, count) << path;
    ++checked;
  }
  EXPECT_EQ(checked, paths.size());
}

// Pixels equal PyAV's to_ndarray('rgb24'), i.e. what the official loader sees.
TEST(VideoReader, PixelsMatchPyAV) {
  for (std::string name :
       {"action/k400_arm_wrestling.mp4", "action/k400_archery.avi", "codecs/gem_anim-1_mjpeg.mov",
        "action/ucf101_v_CricketShot_g04_c01_rgb.gif"}) {
    std::string path = std::string(EVL_SHARED_DIR) + "/data/real/videos/" + name;
    std::string dir = test::temp_dir("pyavpix");
    std::vector<int64_t> idx = {0, 17, 40};
    ASSERT_EQ(test::sh(std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                       "/tests/extract/pyav_frames.py --dump " + dir + " 0,17,40 '" + path +
                       "' > /dev/null"),
              0);
    VideoReader r(path);
    auto got = r.read_frames(idx);
    for (size_t i = 0; i < idx.size(); ++i) {
      std::string bytes = test::read_text(dir + "/" + std::to_string(idx[i]) + ".rgb");
      ASSERT_EQ(static_cast<int64_t>(bytes.size()), got[i].numel()) << name;
      EXPECT_EQ(0, std::memcmp(bytes.data(), got[i].data_ptr<uint8_t>(), bytes.size()))
          << name << " frame " << idx[i] << " differs from PyAV";
    }
  }
}

TEST(VideoReader, RotationMetadataIsHonoured) {
  const std::string d = gen_dir();
  std::string plain = test::make_video(d, "rot_src.mp4", "-c:v libx264 -pix_fmt yuv444p -g 10",
                                       "testsrc=duration=1:size=96x64:rate=25");
  std::string rotated = d + "/rot90.mp4";
  ASSERT_EQ(test::sh("ffmpeg -hide_banner -loglevel error -y -i " + plain +
                     " -c copy -metadata:s:v rotate=90 " + rotated),
            0);
  VideoReader a(plain), b(rotated);
  // `rotate=90` is stored as a display matrix; which way it turns is the ffmpeg
  // CLI's call, checked below against its autorotate output.
  ASSERT_TRUE(b.info().rotation == 90 || b.info().rotation == 270) << b.info().rotation;
  EXPECT_EQ(b.info().width, 64);
  EXPECT_EQ(b.info().height, 96);
  auto fa = a.read_frames({5})[0], fb = b.read_frames({5})[0];
  const int64_t k = -b.info().rotation / 90;  // clockwise quarter turns
  EXPECT_TRUE(torch::equal(fb, torch::rot90(fa, k, {0, 1})));
  // Direction agrees with the ffmpeg CLI's autorotate (its scaler differs slightly).
  std::string raw = d + "/rot90.rgb";
  ASSERT_EQ(test::sh("ffmpeg -hide_banner -loglevel error -y -i " + rotated +
                     " -vf select='eq(n\\,5)' -frames:v 1 -f rawvideo -pix_fmt rgb24 " + raw),
            0);
  std::string bytes = test::read_text(raw);
  ASSERT_EQ(static_cast<int64_t>(bytes.size()), fb.numel());
  auto cli = torch::from_blob(bytes.data(), fb.sizes(), torch::kUInt8).to(torch::kFloat);
  double right = (cli - fb.to(torch::kFloat)).abs().mean().item<double>();
  double wrong =
      (cli - torch::rot90(fa, k + 2, {0, 1}).to(torch::kFloat)).abs().mean().item<double>();
  EXPECT_LT(right, 3.0);
  EXPECT_GT(wrong, 10 * right + 5);
}

TEST(VideoReader, IndexOutOfRangeIsAnError) {
  VideoReader r(std::string(EVL_SHARED_DIR) + "/data/real/videos/codecs/sage_example_84x33.mp4");
  EXPECT_THROW(r.read_frames({r.info().num_frames}), VideoError);
  EXPECT_THROW(r.read_frames({-1}), VideoError);
}

}  // namespace
}  // namespace evl
