// VideoReader against independent oracles on small generated videos (made once
// per process): a full sequential decode for frame-exactness of sparse reads,
// python3-av for frame counts and pixels, the ffmpeg CLI for rotation. The
// exhaustive checks on the real videos are in video_real_test.cpp.
#include "extract/video_reader.h"

#include <gtest/gtest.h>

#include "tests/extract/video_test_util.h"

namespace evl {
namespace {

class Generated : public ::testing::Test {
 protected:
  // PyAV counts and frames 0, 5, 37, 60, 99 of every generated video, once.
  static void SetUpTestSuite() {
    dump_dir_ = new std::string(test::temp_dir("pyavgen"));
    counts_ = new std::map<std::string, int64_t>(
        test::pyav_counts(test::generated_videos(), *dump_dir_, "0,5,37,60,99"));
  }
  static void TearDownTestSuite() {
    delete counts_;
    delete dump_dir_;
  }
  static std::map<std::string, int64_t>* counts_;
  static std::string* dump_dir_;
};
std::map<std::string, int64_t>* Generated::counts_ = nullptr;
std::string* Generated::dump_dir_ = nullptr;

TEST_F(Generated, AllVideosWereMade) {
  for (const auto& p : test::generated_videos()) EXPECT_FALSE(p.empty()) << "ffmpeg failed";
}

TEST_F(Generated, FrameExactAgainstFullDecode) {
  for (const auto& path : test::generated_videos()) {
    if (path.empty()) continue;
    test::expect_frame_exact(path, 1);
    test::expect_frame_exact(path, 2);
  }
}

TEST_F(Generated, FrameCountsMatchPyAV) {
  for (const auto& path : test::generated_videos()) {
    if (path.empty()) continue;
    ASSERT_TRUE(counts_->count(path)) << path;
    VideoReader r(path);
    EXPECT_EQ(r.info().num_frames, counts_->at(path)) << path;
  }
}

// Pixels equal PyAV's to_ndarray('rgb24'), i.e. what the official loader sees.
TEST_F(Generated, PixelsMatchPyAV) {
  for (const auto& path : test::generated_videos()) {
    if (path.empty()) continue;
    VideoReader r(path);
    std::string base = std::filesystem::path(path).filename().string();
    for (int64_t i : {0, 5, 37, 60, 99}) {
      if (i >= r.info().num_frames) continue;
      std::string bytes =
          test::read_text(*dump_dir_ + "/" + base + "." + std::to_string(i) + ".rgb");
      auto got = r.read_frames({i})[0];
      ASSERT_EQ(static_cast<int64_t>(bytes.size()), got.numel()) << base << " frame " << i;
      EXPECT_EQ(0, std::memcmp(bytes.data(), got.data_ptr<uint8_t>(), bytes.size()))
          << base << " frame " << i << " differs from PyAV";
    }
  }
}

TEST_F(Generated, VfrTimesFollowTimestamps) {
  VideoReader r(test::generated_videos().back());
  const auto& t = r.frame_times();
  ASSERT_EQ(static_cast<int64_t>(t.size()), r.info().num_frames);
  // First 20 frames at 1/30 s, then every third source frame (0.1 s apart).
  EXPECT_NEAR(t[1] - t[0], 1.0 / 30, 1e-3);
  EXPECT_NEAR(t.back() - t[t.size() - 2], 0.1, 1e-3);
}

TEST(VideoReader, SparseReadDecodesFewerFrames) {
  std::string path =
      test::make_video(test::temp_dir("gen"), "long_g25.mp4", "-c:v libx264 -pix_fmt yuv420p -g 25",
                       "testsrc=duration=20:size=64x48:rate=25");
  VideoReader r(path);
  ASSERT_EQ(r.info().num_frames, 500);
  int64_t before = r.frames_decoded();
  r.read_frames({100, 300, 450});
  // Each target needs at most its GOP (25 frames) plus decoder reorder delay.
  EXPECT_LT(r.frames_decoded() - before, 3 * 25 + 30);
  EXPECT_FALSE(r.sequential());
  test::expect_frame_exact(path, 1, {{100, 300, 450}, {499, 0, 250, 251, 275}});
}

TEST(VideoReader, RotationMetadataIsHonoured) {
  const std::string d = test::temp_dir("gen");
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
