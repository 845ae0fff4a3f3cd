// Helpers every evl test suite shares: temporary folders, shell commands and
// their output, the built tools, the fixture files, generated videos. No
// LibTorch here (torch_support.h adds the tensor helpers); header-only.
//
// Paths come from compile definitions that tests/CMakeLists.txt sets on every
// test: EVL_SOURCE_DIR, EVL_TOOLS_DIR (bin/), EVL_SHARED_DIR (../shared, the real
// test videos), EVL_PYTHON (/usr/bin/python3, which has torch, numpy, h5py, av).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "common/check.h"

namespace evl::test {

namespace fs = std::filesystem;

// A fresh folder under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& name = "test") {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("evl_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// Runs `cmd` with /bin/sh; returns its exit status (-1 if it did not exit).
inline int sh(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A whole file as a string ("" when it cannot be read).
inline std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A command's exit status and what it printed.
struct Exec {
  int code = -1;
  std::string out, err;
};

// Runs `cmd` with stdout and stderr captured into files in `scratch`.
inline Exec run(const std::string& cmd, const fs::path& scratch) {
  static std::atomic<int> n{0};
  const std::string id = std::to_string(::getpid()) + "_" + std::to_string(n++);
  const fs::path out = scratch / ("stdout_" + id), err = scratch / ("stderr_" + id);
  Exec r;
  r.code = sh(cmd + " >'" + out.string() + "' 2>'" + err.string() + "' </dev/null");
  r.out = slurp(out);
  r.err = slurp(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

// The message of the evl::Error `fn` throws, "<no error>" when it throws
// nothing. Any other exception propagates (a test failure: evl reports bad
// input as evl::Error).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#ifdef EVL_TOOLS_DIR
// An evl executable in the build's bin/.
inline std::string tool(const std::string& name) { return std::string(EVL_TOOLS_DIR) + "/" + name; }
#endif
#ifdef EVL_PYTHON
inline std::string python() { return EVL_PYTHON; }
#endif
#ifdef EVL_SOURCE_DIR
inline std::string source_path(const std::string& rel) {
  return std::string(EVL_SOURCE_DIR) + "/" + rel;
}
// The tiny CLIP-shaped backbone fixtures (tests/fixtures/backbone/make_tiny_clip.py):
// width 32, 3 blocks, 2 heads, patch 8, 32 px input.
inline std::string tiny_backbone() {
  return source_path("tests/fixtures/backbone/tiny_clip_openai.pt");
}
inline std::string tiny_backbone_hf() {
  return source_path("tests/fixtures/backbone/tiny_clip_hf.safetensors");
}
#endif
#ifdef EVL_SHARED_DIR
// A file of the real test material in ../shared/data/real (see its README).
inline std::string real_data(const std::string& rel) {
  return std::string(EVL_SHARED_DIR) + "/data/real/" + rel;
}
#endif

// Generates `dir`/`name` with the ffmpeg CLI from a lavfi source (once: an existing
// file is kept); returns its path, "" when ffmpeg fails.
inline std::string make_video(const std::string& dir, const std::string& name,
                              const std::string& args,
                              const std::string& src = "testsrc=duration=4:size=96x64:rate=25") {
  const std::string path = dir + "/" + name;
  if (!fs::exists(path) && sh("ffmpeg -hide_banner -loglevel error -y -f lavfi -i " + src + " " +
                              args + " '" + path + "'") != 0)
    return "";
  return path;
}

// A lossless RGB video (FFV1, no YUV conversion): its decoded pixels are exactly
// the generator's on any CPU.
inline std::string make_lossless_video(const std::string& dir, const std::string& name,
                                       const std::string& src) {
  return make_video(dir, name, "-c:v ffv1 -pix_fmt bgr0", src);
}

}  // namespace evl::test
