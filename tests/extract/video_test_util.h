// Helpers for the video tests: a temp dir, running the ffmpeg CLI / python3,
// and the list of real videos in EVL_SHARED_DIR/data/real/videos.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace evl::test {

inline std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("evl_video_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

inline int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

// Generates a video with the ffmpeg CLI from lavfi testsrc; returns its path.
inline std::string make_video(const std::string& dir, const std::string& name,
                              const std::string& args,
                              const std::string& src = "testsrc=duration=4:size=160x120:rate=25") {
  std::string path = dir + "/" + name;
  if (!std::filesystem::exists(path)) {
    std::string cmd =
        "ffmpeg -hide_banner -loglevel error -y -f lavfi -i " + src + " " + args + " " + path;
    if (sh(cmd) != 0) return "";
  }
  return path;
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

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace evl::test
