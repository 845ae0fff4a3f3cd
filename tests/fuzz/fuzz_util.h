// Shared by the fuzz targets (tests/fuzz/*_fuzz.cpp): the expected-error
// wrapper and a scratch file for readers that take a path. Each target defines
// LLVMFuzzerTestOneInput; libFuzzer (EVL_BUILD_FUZZERS, clang) or replay_main.cpp
// (the normal build's CTest case) calls it. A reader may only answer bad bytes
// with evl::Error (UsageError included): any other exception escapes and is a
// finding, as are crashes, sanitizer reports, hangs and huge allocations.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/check.h"

namespace evl::fuzz {

// A directory private to this process, created on first use and removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/evl_fuzz_XXXXXX";
    if (!::mkdtemp(templ.data())) std::abort();
    static struct Remover {
      std::string d;
      ~Remover() {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      }
    } remover{templ};
    return templ;
  }();
  return dir;
}

// Writes `data` to <scratch_dir>/<name> (replacing it) and returns the path.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) std::abort();  // the harness, not the reader, failed
  return path;
}

}  // namespace evl::fuzz

// Runs `body`; the reader's documented answer to bad bytes (evl::Error) is swallowed.
#define EVL_FUZZ_EXPECT_ERRORS(...) \
  try {                             \
    __VA_ARGS__;                    \
  } catch (const ::evl::Error&) {   \
  }
