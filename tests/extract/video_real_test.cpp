// Integration checks of VideoReader on every real video in
// EVL_SHARED_DIR/data/real/videos: sparse reads frame-exact against a full
// sequential decode (1 and 2 decoder threads), frame counts against python3-av
// (the official loader's view), and pixels against PyAV's to_ndarray('rgb24').
#include <gtest/gtest.h>

#include "extract/video_reader.h"
#include "tests/extract/video_test_util.h"

namespace evl {
namespace {

// Indices the earlier reader got wrong are included in every set.
std::vector<std::vector<int64_t>> sets_for(int64_t n) {
  auto sets = test::index_sets(n, 7);
  std::vector<int64_t> extra;
  for (int64_t i : {17, 40, 83, 93})
    if (i < n) extra.push_back(i);
  if (!extra.empty()) sets.push_back(extra);
  return sets;
}

TEST(RealVideos, FrameExactAgainstFullDecode) {
  for (const auto& path : test::real_videos()) {
    VideoReader probe(path);
    auto sets = sets_for(probe.info().num_frames);
    test::expect_frame_exact(path, 1, sets);
    test::expect_frame_exact(path, 2, sets);
  }
}

TEST(RealVideos, CountsAndPixelsMatchPyAV) {
  const std::string dir = test::temp_dir("pyavreal");
  auto counts = test::pyav_counts(test::real_videos(), dir, "0,17,40,83");
  EXPECT_EQ(counts.size(), test::real_videos().size());
  for (const auto& path : test::real_videos()) {
    ASSERT_TRUE(counts.count(path)) << path;
    VideoReader r(path);
    EXPECT_EQ(r.info().num_frames, counts.at(path)) << path;
    std::string base = std::filesystem::path(path).filename().string();
    for (int64_t i : {0, 17, 40, 83}) {
      if (i >= r.info().num_frames) continue;
      std::string bytes = test::read_text(dir + "/" + base + "." + std::to_string(i) + ".rgb");
      auto got = r.read_frames({i})[0];
      ASSERT_EQ(static_cast<int64_t>(bytes.size()), got.numel()) << base << " frame " << i;
      EXPECT_EQ(0, std::memcmp(bytes.data(), got.data_ptr<uint8_t>(), bytes.size()))
          << base << " frame " << i << " differs from PyAV";
    }
  }
}

}  // namespace
}  // namespace evl
