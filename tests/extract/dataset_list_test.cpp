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
  // Without names a class name is an error naming the line and --labels: the
  // sorted set of the file's own names would shift indices for a subset.
  try {
    read_dataset_list(csv);
    FAIL() << "class names without a label map";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2: label '\"arm wrestling\"' is a class name; "
                                         "pass --labels FILE"),
              std::string::npos)
        << e.what();
  }
  std::string bad =
      write_list("kb.csv", "label,youtube_id,time_start,time_end,split\nx,id,a,b,val\n");
  EXPECT_THROW(read_dataset_list(bad), Error);
  std::string dup = write_list(
      "kd.csv", "label,youtube_id,time_start,time_end,split\nx,id,1,2,val\nx,id,1,2,val\n");
  EXPECT_THROW(read_dataset_list(dup), Error);
}

TEST(DatasetList, ClassNameLabelsMapThroughTheLabelMap) {
  const std::vector<std::string> names = {"abseiling", "air drumming", "arm wrestling"};
  auto list = read_dataset_list(write_list("names.txt", "a.mp4 arm_wrestling\nb.mp4 0\n"), names);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].label, 2);  // underscores stand for spaces
  EXPECT_EQ(list[1].label, 0);  // indices still read as indices
  expect_error("a.mp4 archery\n", "line 1: label 'archery' is a class name; pass --labels");
  try {
    read_dataset_list(write_list("unknown.txt", "a.mp4 archery\n"), names);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 1: class 'archery' is not in the label map"),
              std::string::npos)
        << e.what();
  }
}

TEST(DatasetList, LabelMapFormats) {
  const auto plain = read_label_map(write_list("k.txt", "abseiling\nair drumming\n"));
  EXPECT_EQ(plain, (std::vector<std::string>{"abseiling", "air drumming"}));
  const auto ava = read_label_map(write_list("ava.txt", "1: bend/bow\n3: crouch\n"));
  EXPECT_EQ(ava, (std::vector<std::string>{"", "bend/bow", "", "crouch"}));
  const auto csv = read_label_map(write_list("m.csv", "id,name\n0,run\n1,walk\n"));
  EXPECT_EQ(csv, (std::vector<std::string>{"run", "walk"}));
  for (const auto& [text, needle] : std::vector<std::pair<std::string, std::string>>{
           {"a\n\nb\n", "line 2: empty line"},
           {"a\nb\na\n", "line 3: class 'a' is also on line 1"},
           {"0: a\n0: b\n", "line 2: class id 0 given twice"},
           {"0: a\nb\n", "line 2: mixes"},
           {"", "no class names"}}) {
    const std::string path = write_list("bad_map.txt", text);
    try {
      read_label_map(path);
      FAIL() << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

TEST(DatasetList, OnePathWithSeveralWindowsGetsOneIdPerWindow) {
  auto list = read_dataset_list(
      write_list("w.txt", "long.mp4 0 0 5\nlong.mp4 1 5 10.5\nother.mp4 2 1 2\nlong.mp4 0\n"));
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(list[0].id, "long.mp4@0-5");
  EXPECT_EQ(list[1].id, "long.mp4@5-10.5");
  EXPECT_EQ(list[2].id, "other.mp4");  // listed once: its id is its path
  EXPECT_EQ(list[3].id, "long.mp4");   // the whole video
  expect_error("long.mp4 0 0 5\nlong.mp4 1 0.0 5.0\n",
               "line 2: duplicate of line 1 ('long.mp4' with the same trimming window)");
}

}  // namespace
}  // namespace evl
