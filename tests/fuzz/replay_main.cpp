// The normal (gcc) build's driver for the fuzz targets: feeds every file of the
// directories (or files) named on the command line to LLVMFuzzerTestOneInput,
// the way libFuzzer replays a corpus. CTest runs it over tests/fuzz/corpus/<t>/
// and tests/fuzz/crashers/<t>/, so every saved input stays fixed without clang.
// A finding aborts (uncaught exception, crash) and fails the test.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path p(argv[i]);
    if (fs::is_directory(p)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && e.path().filename().string()[0] != '.')
          files.push_back(e.path());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else if (!fs::exists(p)) {
      // crashers/<t>/ exists only once a target has found something (git
      // keeps no empty folders).
      std::fprintf(stderr, "fuzz replay: no '%s' (nothing saved there yet)\n", argv[i]);
    } else {
      std::fprintf(stderr, "fuzz replay: '%s' is not a file or directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay %s (%zu bytes)\n", f.c_str(), bytes.size());
    // A copy of exactly `size` bytes, so reading past the input is visible
    // under AddressSanitizer builds of the replay too.
    std::vector<uint8_t> data(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(data.empty() ? nullptr : data.data(), data.size());
  }
  std::printf("fuzz replay: %zu inputs, no finding\n", files.size());
  return 0;
}
