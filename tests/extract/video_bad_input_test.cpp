// The bad-input catalogue: each input must raise a VideoError naming the file
// and the reason (never a crash, hang or garbage), except a truncated video,
// which is read as a shorter one.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <random>

#include "extract/video_reader.h"
#include "extract/views.h"
#include "tests/extract/video_test_util.h"

namespace evl {
namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Expects VideoReader(path) (and a read of frame 0) to throw VideoError whose
// message names the file and contains `reason`.
void expect_video_error(const std::string& path, const std::string& reason) {
  try {
    VideoReader r(path);
    r.read_frames({0});
    FAIL() << "no error for " << path;
  } catch (const VideoError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(reason), std::string::npos) << what;
  }
}

class BadInput : public ::testing::Test {
 protected:
  std::string dir = test::temp_dir("bad");
};

TEST_F(BadInput, MissingFile) { expect_video_error(dir + "/nope.mp4", "no such file"); }
TEST_F(BadInput, Directory) { expect_video_error(dir, "is a directory"); }

TEST_F(BadInput, FifoIsRefusedWithoutBlocking) {
  // Opening a FIFO for reading blocks until a writer comes: it must be refused
  // before FFmpeg opens it (this test would hang otherwise).
  const std::string fifo = dir + "/x.mp4";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_video_error(fifo, "is not a regular file");
  expect_video_error("/dev/null", "is not a regular file");
}

TEST_F(BadInput, ZeroBytes) {
  write_bytes(dir + "/empty.mp4", "");
  expect_video_error(dir + "/empty.mp4", "empty (0 bytes)");
}

TEST_F(BadInput, RandomBytesNamedMp4) {
  std::mt19937 rng(3);
  std::string junk(64 * 1024, '\0');
  for (auto& c : junk) c = static_cast<char>(rng());
  write_bytes(dir + "/random.mp4", junk);
  expect_video_error(dir + "/random.mp4", "cannot open");
}

TEST_F(BadInput, AudioOnly) {
  ASSERT_EQ(test::sh("ffmpeg -hide_banner -loglevel error -y -f lavfi -i sine=duration=1 " + dir +
                     "/a.m4a"),
            0);
  expect_video_error(dir + "/a.m4a", "no video stream");
}

TEST_F(BadInput, StillImage) {
  std::string png = test::make_video(dir, "still.png", "-frames:v 1");
  expect_video_error(png, "still image");
}

TEST_F(BadInput, AbsurdDimensions) {
  // A y4m header claiming 100000x100000 followed by a few bytes.
  write_bytes(dir + "/huge.y4m", "YUV4MPEG2 W100000 H100000 F25:1 Ip A1:1 C420jpeg\nFRAME\nabcdef");
  try {
    VideoReader r(dir + "/huge.y4m");
    FAIL() << "no error";
  } catch (const VideoError& e) {
    EXPECT_NE(std::string(e.what()).find("huge.y4m"), std::string::npos) << e.what();
  }
}

// Zeroes the payload of every chunk in an AVI's movi list: the container stays
// valid, but no packet decodes.
TEST_F(BadInput, ZeroDecodableFrames) {
  std::string path = test::make_video(dir, "mjpeg.avi", "-c:v mjpeg -q:v 5",
                                      "testsrc=duration=1:size=64x48:rate=10");
  std::string b = test::read_text(path);
  size_t movi = b.find("movi");
  size_t idx1 = b.find("idx1", movi);
  ASSERT_NE(movi, std::string::npos);
  for (size_t p = movi + 4; p + 8 <= idx1;) {
    uint32_t size = static_cast<uint8_t>(b[p + 4]) | static_cast<uint8_t>(b[p + 5]) << 8 |
                    static_cast<uint8_t>(b[p + 6]) << 16 |
                    static_cast<uint32_t>(static_cast<uint8_t>(b[p + 7])) << 24;
    if (b.compare(p + 2, 2, "dc") == 0)
      std::fill(b.begin() + p + 8, b.begin() + p + 8 + size, '\0');
    p += 8 + size + (size & 1);
  }
  write_bytes(dir + "/dead.avi", b);
  expect_video_error(dir + "/dead.avi", "no decodable video frames");
}

// An AVI header that declares a million frames: the count comes from the stream.
TEST_F(BadInput, LyingFrameCount) {
  std::string path = test::make_video(dir, "mpeg4.avi", "-c:v mpeg4 -g 5",
                                      "testsrc=duration=2:size=64x48:rate=10");
  std::string b = test::read_text(path);
  ASSERT_EQ(b.compare(32 - 8, 4, "avih"), 0);
  uint32_t lie = 1000000;
  std::memcpy(&b[32 + 16], &lie, 4);  // avih.dwTotalFrames
  size_t strh = b.find("strh");
  std::memcpy(&b[strh + 8 + 32], &lie, 4);  // strh.dwLength
  write_bytes(dir + "/lying.avi", b);
  VideoReader r(dir + "/lying.avi");
  EXPECT_EQ(r.info().num_frames, 20);
  EXPECT_EQ(r.read_frames({19})[0].size(0), 48);
}

// A stream cut mid-way: read as a shorter video (sampling pads from the last
// decodable frame), never garbage past the cut.
TEST_F(BadInput, TruncatedMidStream) {
  for (std::string name : {"cut.mkv", "cut.mp4"}) {
    std::string args = "-c:v libx264 -pix_fmt yuv420p -g 10";
    if (name == "cut.mp4") args += " -movflags +faststart";
    std::string path = test::make_video(dir, name, args, "testsrc=duration=4:size=160x120:rate=25");
    std::string b = test::read_text(path);
    std::string cut = dir + "/short_" + name;
    write_bytes(cut, b.substr(0, b.size() * 6 / 10));
    VideoReader r(cut);
    const int64_t n = r.info().num_frames;
    EXPECT_GT(n, 10) << name;
    EXPECT_LT(n, 100) << name;
    SamplingConfig cfg;
    cfg.frames = 8;
    cfg.stride = 16;
    auto views = load_clip_views(cut, ClipEntry{}, cfg, 0);
    ASSERT_EQ(views.size(), 1u);
    int64_t final_n = VideoReader(cut).info().num_frames;
    for (int64_t i : views[0].frame_indices) EXPECT_LT(i, final_n + 0) << name;
    // Every frame the reader returns equals a full decode of the cut file.
    VideoReader oracle(cut);
    auto all = oracle.read_all_frames();
    VideoReader sparse(cut);
    int64_t m = std::min<int64_t>(sparse.info().num_frames, static_cast<int64_t>(all.size()));
    try {
      auto f = sparse.read_frames({m - 1});
      EXPECT_TRUE(torch::equal(f[0], all[m - 1])) << name;
    } catch (const FrameCountChanged& e) {
      EXPECT_EQ(e.after(), static_cast<int64_t>(all.size())) << name;
    }
  }
}

}  // namespace
}  // namespace evl
