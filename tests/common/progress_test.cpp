// Tests the progress reporter's plain-line mode and duration formatting.
#include "common/progress.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>
#include <vector>

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(evl::format_duration(0), "0:00");
  EXPECT_EQ(evl::format_duration(75), "1:15");
  EXPECT_EQ(evl::format_duration(3725), "1:02:05");
  EXPECT_EQ(evl::format_duration(-1), "?");
}

TEST(Progress, CountsFromManyThreadsAndPrintsOneFinalLine) {
  setenv("EVL_PROGRESS", "1", 1);
  setenv("EVL_PROGRESS_INTERVAL", "1000", 1);
  testing::internal::CaptureStderr();
  {
    evl::Progress p("extract", 400, "clips");
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 100; ++i) p.advance();
      });
    for (auto& th : threads) th.join();
    EXPECT_EQ(p.done(), 400);
  }
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("extract 400/400 clips (100%)"), std::string::npos) << out;
  EXPECT_NE(out.find("took"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}
