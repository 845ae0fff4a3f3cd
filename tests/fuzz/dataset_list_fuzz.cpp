// Fuzz target: dataset lists, the plain `<path> <label> [<start> <end>]` format
// and Kinetics CSV (extract/dataset_list.cpp read_dataset_list), from a scratch
// file, without and with label names; every entry read must satisfy the
// documented invariants. The bytes are also read as a --labels map
// (read_label_map).
#include <set>

#include "extract/dataset_list.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void check(const std::vector<evl::ClipEntry>& entries) {
  std::set<std::string> ids;
  for (const auto& e : entries) {
    if (e.path.empty() || e.label < -1 || e.line < 1) std::abort();
    if (!ids.insert(e.id).second || e.id.rfind(e.path, 0) != 0) std::abort();  // unique ids
    if (e.start_sec != -1 && !(e.start_sec >= 0 && e.end_sec > e.start_sec)) std::abort();
    (void)evl::resolve_video_path(e, "/root");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = evl::fuzz::write_scratch("list.txt", data, size);
  EVL_FUZZ_EXPECT_ERRORS(check(evl::read_dataset_list(path)));
  EVL_FUZZ_EXPECT_ERRORS(check(evl::read_dataset_list(path, {"abseiling", "air drumming", "x"})));
  // The same bytes as a --labels file; a map that reads must map its own names.
  EVL_FUZZ_EXPECT_ERRORS({
    const auto names = evl::read_label_map(path);
    if (names.empty()) std::abort();
    const std::string list = "v.mp4 " + names.back() + "\n";
    const std::string lp = evl::fuzz::write_scratch(
        "names_list.txt", reinterpret_cast<const uint8_t*>(list.data()), list.size());
    EVL_FUZZ_EXPECT_ERRORS(check(evl::read_dataset_list(lp, names)));
  });
  return 0;
}
