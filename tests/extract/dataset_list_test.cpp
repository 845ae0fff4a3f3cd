// Dataset list and Kinetics CSV parsing, including the malformed-line catalogue.
#include "extract/dataset_list.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/check.h"
#include "tests/extract/video_test_util.h"

namespace evl {
namespace {

std::string write_list(const std::string& name, const std::string& text) {
  std::string path = test::temp_dir("lists") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

void expect_error(const std::string& text, const std::string& needle) {
  std::string path = write_list("bad.txt", text);
  try {
    read_dataset_list(path);
    FAIL() << "no error for: " << text;
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(DatasetList, PlainListWithTrimAndRoot) {
  auto list = read_dataset_list(
      write_list("ok.txt", "# comment\na/x.mp4 3\n\nb/y.avi 0 1.5 4.25\n/abs/z.mkv 7\n"));
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].path, "a/x.mp4");
  EXPECT_EQ(list[0].label, 3);
  EXPECT_EQ(list[0].line, 2);
  EXPECT_EQ(list[1].start_sec, 1.5);
  EXPECT_EQ(list[1].end_sec, 4.25);
  EXPECT_EQ(list[1].line, 4);
  EXPECT_EQ(resolve_video_path(list[0], "/data/k400"), "/data/k400/a/x.mp4");
  EXPECT_EQ(resolve_video_path(list[2], "/data/k400"), "/abs/z.mkv");
  EXPECT_EQ(resolve_video_path(list[0], ""), "a/x.mp4");
}

TEST(DatasetList, MalformedLinesNameTheLine) {
  expect_error("a.mp4 1\nb.mp4 x\n", "line 2");
  expect_error("a.mp4 1 2\n", "line 1");
  expect_error("a.mp4 1\nb.mp4 -3\n", "line 2");
  expect_error("a.mp4 1 5 2\n", "bad trim");
  expect_error("a.mp4 1\nc.mp4 2\na.mp4 1\n", "line 3: duplicate of line 1");
  expect_error("a.mp4 1 2 3 4\n", "line 1");
}

TEST(DatasetList, LabelsBeyondNamesAreErrors) {
  std::string path = write_list("n.txt", "a.mp4 5\n");
  EXPECT_THROW(read_dataset_list(path, {"x", "y"}), Error);
}

TEST(DatasetList, KineticsCsv) {
  std::string csv = write_list("k.csv",
                               "label,youtube_id,time_start,time_end,split\n"
                               "\"arm wrestling\",abc123,10,20,val\n"
                               "abseiling,zzz,0,10,val\n");
  auto list = read_dataset_list(csv, {"abseiling", "air_drumming", "answering questions",
                                      "applauding", "applying cream", "archery", "arm wrestling"});
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].path, "abc123_000010_000020.mp4");
  EXPECT_EQ(list[0].label, 6);
  EXPECT_EQ(list[0].line, 2);
  EXPECT_EQ(list[1].label, 0);
  // Without names: sorted set of the file's classes.
  auto alpha = read_dataset_list(csv);
  EXPECT_EQ(alpha[0].label, 1);
  EXPECT_EQ(alpha[1].label, 0);
  std::string bad =
      write_list("kb.csv", "label,youtube_id,time_start,time_end,split\nx,id,a,b,val\n");
  EXPECT_THROW(read_dataset_list(bad), Error);
  std::string dup = write_list(
      "kd.csv", "label,youtube_id,time_start,time_end,split\nx,id,1,2,val\nx,id,1,2,val\n");
  EXPECT_THROW(read_dataset_list(dup), Error);
}

}  // namespace
}  // namespace evl
