// Reads every record of an evl cache through the installed evl_cache library
// and prints, as JSON, what install_test.py compares with h5py's reading of
// `evl_cache export --h5`: per record its key, label, video id and the sum of
// its X as float64 (dequantized / converted to float32 first).
#include <evl/cache/cache.h>

#include <cstdio>
#include <exception>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: read_cache CACHE_DIR\n");
    return 2;
  }
  try {
    const evl::cache::CacheReader reader(argv[1]);
    std::printf("{\"storage\": \"%s\", \"dtype\": \"%s\", \"records\": [",
                evl::cache::to_string(reader.manifest().storage).c_str(),
                evl::cache::to_string(reader.manifest().dtype).c_str());
    for (int64_t i = 0; i < reader.size(); ++i) {
      const evl::cache::Record r = reader.get(i);
      const evl::cache::Array& x = r.array("x");
      std::vector<float> f(static_cast<size_t>(x.numel()));
      evl::cache::to_float32(evl::cache::ArrayView{x.dtype, x.shape, x.bytes.data()}, f.data());
      double sum = 0;
      for (const float v : f) sum += v;
      std::printf("%s{\"key\": \"%s\", \"label\": %lld, \"video_id\": \"%s\", \"x_sum\": %.17g}",
                  i ? ", " : "", r.key.c_str(), static_cast<long long>(r.label), r.video_id.c_str(),
                  sum);
    }
    std::printf("]}\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
