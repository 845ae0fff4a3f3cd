// The cache manifest (manifest.json): JSON encoding with field checks,
// atomic save, provenance comparison, and the per-record shapes it implies.
// Deliberately strict: unknown format versions and missing fields are errors.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "cache/cache.h"
#include "cache/lmdb_env.h"
#include "cache/quantize.h"
#include "common/atomic_file.h"
#include "common/check.h"

namespace evl::cache {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {
constexpr const char* kQuantScheme = "absmax-symmetric";  // manifest "quantization" (FORMAT.md)
constexpr const char* kQuantScaleDType = "fp16";
// manifest "quantization.outlier_channels" (FORMAT.md): since version 4 (dtypes
// 8, 9) the outlier channels have centers; version 3 (dtypes 6, 7) wrote none.
constexpr const char* kOutlierChannels = "median-8x-column-midrange";
constexpr const char* kOutlierChannelsV3 = "median-8x-column-absmax";
}  // namespace

std::string Manifest::to_json() const {
  json shards_json = json::array();
  for (const auto& s : shards) shards_json.push_back({{"name", s.name}, {"records", s.records}});
  json j = {
      {"format", "evl-cache"},
      {"format_version", format_version},
      {"tool_version", tool_version},
      {"created", created},
      {"backbone",
       {{"file", backbone.file},
        {"hash", backbone.hash},
        {"format", backbone.format},
        {"width", backbone.width},
        {"depth", backbone.depth},
        {"heads", backbone.heads},
        {"patch", backbone.patch},
        {"grid", backbone.grid},
        {"input_size", backbone.input_size}}},
      {"layers", layers},
      {"storage", to_string(storage)},
      {"dtype", to_string(dtype)},
      {"frames", frames},
      {"stride", stride},
      {"sampling", sampling},
      {"temporal_views", temporal_views},
      {"spatial_views", spatial_views},
      {"train_views", train_views},
      {"augment", augment},
      {"mean", mean},
      {"std", std},
      {"seed", seed},
      {"has_inputs", has_inputs},
      {"list_file", list_file},
      {"num_clips", num_clips},
      {"shards", shards_json},
  };
  if (!conversions.empty()) {  // absent, not empty, for a cache evl_extract wrote
    json list = json::array();
    for (const auto& c : conversions)
      list.push_back({{"from", c.from},
                      {"from_dtype", to_string(c.from_dtype)},
                      {"from_storage", to_string(c.from_storage)},
                      {"from_format_version", c.from_format_version},
                      {"tool_version", c.tool_version},
                      {"created", c.created}});
    j["conversions"] = list;
  }
  if (is_quantized(dtype)) {  // the scheme the records' codes and scales follow (FORMAT.md)
    j["quantization"] = {
        {"scheme", kQuantScheme}, {"group", kQuantGroup}, {"scale_dtype", kQuantScaleDType}};
    if (has_outlier_channels(dtype))
      j["quantization"]["outlier_channels"] =
          has_column_centers(dtype) ? kOutlierChannels : kOutlierChannelsV3;
  }
  return j.dump(2) + "\n";
}

namespace {

template <typename T>
struct is_int_vector : std::false_type {};
template <typename T>
struct is_int_vector<std::vector<T>> : std::is_integral<T> {};

// nlohmann converts a float to an integer field with a plain cast (undefined
// for 2.2e71): an integer field must hold integers, and in the range of T.
template <typename T>
void check_integers(const json& v, const char* name, const std::string& where) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!v.is_number()) return;  // a string, a bool, ...: get<T>'s type error says so
    EVL_CHECK(v.is_number_integer(), where, ": field '", name, "' is ", v.dump(),
              ", not an integer");
    if (v.is_number_unsigned())
      EVL_CHECK(v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max()), where,
                ": field '", name, "' is ", v.dump(), ", out of range");
    else
      EVL_CHECK(v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                    (std::is_unsigned_v<T> ||
                     v.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<T>::max())),
                where, ": field '", name, "' is ", v.dump(), ", out of range");
  } else if constexpr (is_int_vector<T>::value) {
    if (v.is_array())
      for (const auto& e : v) check_integers<typename T::value_type>(e, name, where);
  }
}

// Reads j[name] into out, with an error naming the file and the field.
template <typename T>
void field(const json& j, const char* name, T& out, const std::string& where) {
  auto it = j.find(name);
  EVL_CHECK(it != j.end(), where, ": missing field '", name, "'");
  check_integers<T>(*it, name, where);
  try {
    out = it->get<T>();
  } catch (const json::exception& e) {
    EVL_THROW(Error, where, ": field '", name, "' has the wrong type (", e.what(), ")");
  }
}

// Every number that later sizes an array, divides, or indexes is range-checked
// here, so that a hand-edited or corrupt manifest is an error naming the field
// instead of a division by zero or a huge allocation downstream. The bounds
// are far beyond any real backbone or clip (ViT-L/14 at 336 px: width 1024,
// depth 24, grid 24) and keep products like M*T*L*C within int64.
void check_ranges(const Manifest& m, const std::string& where) {
  auto in = [&](const char* name, int64_t v, int64_t lo, int64_t hi) {
    EVL_CHECK(v >= lo && v <= hi, where, ": field '", name, "' is ", v, ", outside [", lo, ", ", hi,
              "]");
  };
  const auto& b = m.backbone;
  in("backbone.width", b.width, 1, 1 << 16);
  in("backbone.depth", b.depth, 1, 1 << 10);
  in("backbone.heads", b.heads, 1, b.width);
  EVL_CHECK(b.width % b.heads == 0, where, ": field 'backbone.heads' (", b.heads,
            ") does not divide 'backbone.width' (", b.width, ")");
  in("backbone.patch", b.patch, 1, 1 << 12);
  in("backbone.grid", b.grid, 1, 1 << 10);
  in("backbone.input_size", b.input_size, 1, 1 << 14);
  EVL_CHECK(b.grid == b.input_size / b.patch, where, ": field 'backbone.grid' (", b.grid,
            ") is not input_size / patch (", b.input_size, " / ", b.patch, ")");
  EVL_CHECK(!m.layers.empty(), where, ": field 'layers' is empty");
  for (const int64_t l : m.layers) in("layers[]", l, 0, b.depth - 1);
  in("frames", m.frames, 1, 1 << 16);
  in("stride", m.stride, 0, 1 << 16);
  EVL_CHECK(m.sampling == "dense" || m.sampling == "tsn", where, ": field 'sampling' is '",
            m.sampling, "', expected 'dense' or 'tsn'");
  in("temporal_views", m.temporal_views, 1, 1 << 16);
  in("spatial_views", m.spatial_views, 1, 1 << 16);
  in("train_views", m.train_views, 0, 1 << 16);
  EVL_CHECK(m.mean.size() == 3 && m.std.size() == 3, where,
            ": fields 'mean' and 'std' must hold 3 values each");
  for (size_t i = 0; i < 3; ++i)
    EVL_CHECK(std::isfinite(m.mean[i]) && std::isfinite(m.std[i]) && m.std[i] > 0, where,
              ": fields 'mean'/'std' must be finite with std > 0");
  in("num_clips", m.num_clips, 0, int64_t(1) << 40);
  for (const auto& s : m.shards) in("shards[].records", s.records, 0, int64_t(1) << 40);
}

}  // namespace

Manifest Manifest::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    EVL_THROW(Error, where, ": not valid JSON: ", e.what());
  }
  EVL_CHECK(j.is_object(), where, ": not a JSON object");
  std::string format;
  field(j, "format", format, where);
  EVL_CHECK(format == "evl-cache", where, ": field 'format' is '", format,
            "', expected 'evl-cache'");
  Manifest m;
  field(j, "format_version", m.format_version, where);
  EVL_CHECK(m.format_version >= 1 && m.format_version <= kFormatVersion, where,
            ": written by cache format version ", m.format_version, "; this evl reads version ",
            kFormatVersion, m.format_version > kFormatVersion ? " (upgrade evl)" : "");
  field(j, "tool_version", m.tool_version, where);
  field(j, "created", m.created, where);
  json b;
  field(j, "backbone", b, where);
  const std::string bw = where + " backbone";
  field(b, "file", m.backbone.file, bw);
  field(b, "hash", m.backbone.hash, bw);
  field(b, "format", m.backbone.format, bw);
  field(b, "width", m.backbone.width, bw);
  field(b, "depth", m.backbone.depth, bw);
  field(b, "heads", m.backbone.heads, bw);
  field(b, "patch", m.backbone.patch, bw);
  field(b, "grid", m.backbone.grid, bw);
  field(b, "input_size", m.backbone.input_size, bw);
  field(j, "layers", m.layers, where);
  std::string storage, dtype;
  field(j, "storage", storage, where);
  field(j, "dtype", dtype, where);
  try {
    m.storage = parse_storage_mode(storage);
    m.dtype = parse_dtype(dtype);
  } catch (const UsageError& e) {
    EVL_THROW(Error, where, ": ", e.what());
  }
  if (is_quantized(m.dtype)) {
    EVL_CHECK(m.format_version >= 2, where, ": dtype '", dtype, "' needs format version 2, the",
              " manifest says ", m.format_version);
    json q;
    field(j, "quantization", q, where);
    const std::string qw = where + " quantization";
    std::string scheme, scale_dtype;
    int64_t group = 0;
    field(q, "scheme", scheme, qw);
    field(q, "group", group, qw);
    field(q, "scale_dtype", scale_dtype, qw);
    EVL_CHECK(scheme == kQuantScheme && group == kQuantGroup && scale_dtype == kQuantScaleDType, qw,
              ": scheme '", scheme, "', group ", group, ", scale_dtype '", scale_dtype,
              "' is not supported (this evl reads '", kQuantScheme, "', group ", kQuantGroup, ", '",
              kQuantScaleDType, "')");
    // Without outlier channels: a version-2 cache (dtypes 4, 5); without their
    // centers, a version-3 one (dtypes 6, 7).
    std::string outliers;
    if (q.contains("outlier_channels")) field(q, "outlier_channels", outliers, qw);
    EVL_CHECK(outliers.empty() || outliers == kOutlierChannels || outliers == kOutlierChannelsV3,
              qw, ": outlier_channels '", outliers, "' is not supported (this evl reads '",
              kOutlierChannels, "' and '", kOutlierChannelsV3, "')");
    const uint32_t needs = outliers.empty() ? 2 : outliers == kOutlierChannelsV3 ? 3 : 4;
    EVL_CHECK(m.format_version >= needs, qw, ": outlier_channels '", outliers,
              "' need format version ", needs, ", the manifest says ", m.format_version);
    const bool int8 = m.dtype == DType::kI8;
    if (outliers.empty()) m.dtype = int8 ? DType::kI8V2 : DType::kFP8V2;
    if (outliers == kOutlierChannelsV3) m.dtype = int8 ? DType::kI8V3 : DType::kFP8V3;
  } else {
    EVL_CHECK(!j.contains("quantization"), where, ": field 'quantization' with dtype '", dtype,
              "' (only int8 and fp8 are quantized)");
  }
  field(j, "frames", m.frames, where);
  field(j, "stride", m.stride, where);
  field(j, "sampling", m.sampling, where);
  field(j, "temporal_views", m.temporal_views, where);
  field(j, "spatial_views", m.spatial_views, where);
  field(j, "train_views", m.train_views, where);
  if (j.contains("augment")) field(j, "augment", m.augment, where);  // absent before issue 16
  field(j, "mean", m.mean, where);
  field(j, "std", m.std, where);
  field(j, "seed", m.seed, where);
  field(j, "has_inputs", m.has_inputs, where);
  field(j, "list_file", m.list_file, where);
  field(j, "num_clips", m.num_clips, where);
  json shards;
  field(j, "shards", shards, where);
  EVL_CHECK(shards.is_array(), where, ": field 'shards' is not an array");
  for (const auto& s : shards) {
    Shard sh;
    field(s, "name", sh.name, where + " shards[]");
    field(s, "records", sh.records, where + " shards[]");
    EVL_CHECK(!sh.name.empty() && sh.name.find('/') == std::string::npos, where,
              ": bad shard name '", sh.name, "'");
    m.shards.push_back(sh);
  }
  // Optional: manifests written before evl_cache convert existed have none.
  if (auto it = j.find("conversions"); it != j.end()) {
    EVL_CHECK(it->is_array(), where, ": field 'conversions' is not an array");
    for (const auto& c : *it) {
      const std::string cw = where + " conversions[]";
      Conversion conv;
      std::string from_dtype, from_storage;
      field(c, "from", conv.from, cw);
      field(c, "from_dtype", from_dtype, cw);
      field(c, "from_storage", from_storage, cw);
      field(c, "from_format_version", conv.from_format_version, cw);
      field(c, "tool_version", conv.tool_version, cw);
      field(c, "created", conv.created, cw);
      try {
        conv.from_dtype = parse_dtype(from_dtype);
        conv.from_storage = parse_storage_mode(from_storage);
      } catch (const UsageError& e) {
        EVL_THROW(Error, cw, ": ", e.what());
      }
      m.conversions.push_back(conv);
    }
  }
  check_ranges(m, where);
  for (size_t i = 1; i < m.layers.size(); ++i)
    EVL_CHECK(m.layers[i] > m.layers[i - 1], where, ": field 'layers' is not increasing");
  if (m.storage == StorageMode::kCompact)
    for (size_t i = 1; i < m.layers.size(); ++i)
      EVL_CHECK(m.layers[i] == m.layers[i - 1] + 1, where,
                ": storage 'compact' needs contiguous 'layers'");
  return m;
}

Manifest Manifest::load(const std::string& cache_dir) {
  const std::string path = (fs::path(cache_dir) / "manifest.json").string();
  EVL_CHECK(fs::exists(path), "cache '", cache_dir, "': no manifest.json (not an evl cache?)");
  return from_json(read_file(path), path);
}

void Manifest::save(const std::string& cache_dir) const {
  fs::create_directories(cache_dir);
  const std::string text = to_json();
  write_file_atomic((fs::path(cache_dir) / "manifest.json").string(), text);
}

namespace {

template <typename T>
std::string show(const T& v) {
  return json(v).dump();
}

}  // namespace

const std::vector<std::string>& provenance_fields() {
  static const std::vector<std::string> fields = {
      "format_version", "backbone.hash",  "backbone.width", "backbone.depth",
      "backbone.heads", "backbone.patch", "backbone.grid",  "backbone.input_size",
      "layers",         "storage",        "dtype",          "frames",
      "stride",         "sampling",       "temporal_views", "spatial_views",
      "train_views",    "augment",        "mean",           "std",
      "has_inputs",     "seed",           "list_file",      "num_clips",
      "conversions"};
  return fields;
}

void check_matches(const Manifest& expected, const Manifest& found, const std::string& where,
                   const std::vector<std::string>& fields) {
  auto wanted = [&](const std::string& name) {
    if (fields.empty()) return true;
    for (const auto& f : fields)
      if (f == name) return true;
    return false;
  };
  auto cmp = [&](const std::string& name, const std::string& want, const std::string& got) {
    if (!wanted(name) || want == got) return;
    EVL_THROW(Error, where, ": provenance field '", name, "' is ", got, ", expected ", want);
  };
  const auto &e = expected, &f = found;
  cmp("backbone.hash", show(e.backbone.hash), show(f.backbone.hash));
  cmp("backbone.width", show(e.backbone.width), show(f.backbone.width));
  cmp("backbone.depth", show(e.backbone.depth), show(f.backbone.depth));
  cmp("backbone.heads", show(e.backbone.heads), show(f.backbone.heads));
  cmp("backbone.patch", show(e.backbone.patch), show(f.backbone.patch));
  cmp("backbone.grid", show(e.backbone.grid), show(f.backbone.grid));
  cmp("backbone.input_size", show(e.backbone.input_size), show(f.backbone.input_size));
  cmp("layers", show(e.layers), show(f.layers));
  cmp("storage", show(to_string(e.storage)), show(to_string(f.storage)));
  cmp("frames", show(e.frames), show(f.frames));
  cmp("stride", show(e.stride), show(f.stride));
  cmp("sampling", show(e.sampling), show(f.sampling));
  cmp("temporal_views", show(e.temporal_views), show(f.temporal_views));
  cmp("spatial_views", show(e.spatial_views), show(f.spatial_views));
  cmp("train_views", show(e.train_views), show(f.train_views));
  cmp("augment", show(e.augment), show(f.augment));
  cmp("mean", show(e.mean), show(f.mean));
  cmp("std", show(e.std), show(f.std));
  // Not compared unless asked for by name: they do not change the features' meaning.
  if (!fields.empty()) {
    cmp("dtype", show(to_string(e.dtype)), show(to_string(f.dtype)));
    cmp("has_inputs", show(e.has_inputs), show(f.has_inputs));
    cmp("seed", show(e.seed), show(f.seed));
    cmp("list_file", show(e.list_file), show(f.list_file));
    cmp("num_clips", show(e.num_clips), show(f.num_clips));
    cmp("format_version", show(e.format_version), show(f.format_version));
    auto chain = [](const Manifest& m) {
      json steps = json::array();
      for (const auto& c : m.conversions)
        steps.push_back(to_string(c.from_dtype) + " " + to_string(c.from_storage) + " v" +
                        std::to_string(c.from_format_version));
      return steps.dump();
    };
    cmp("conversions", chain(e), chain(f));
  }
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_arrays(const Manifest& m) {
  const int64_t M = static_cast<int64_t>(m.layers.size()), T = m.frames;
  const int64_t L = m.backbone.grid * m.backbone.grid + 1, C = m.backbone.width;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  if (m.storage == StorageMode::kQK) {
    for (const char* name : {"x", "q", "k"}) out.push_back({name, {M, T, L, C}});
  } else {
    out.push_back({"x", {M + 1, T, L, C}});
  }
  if (m.has_inputs) out.push_back({"inputs", {T, 3, m.backbone.input_size, m.backbone.input_size}});
  return out;
}

void check_record_shape(const Manifest& m, const RecordView& record, const std::string& where) {
  const auto want = expected_arrays(m);
  for (const auto& [name, shape] : want) {
    const ArrayView* a = record.find(name);
    EVL_CHECK(a, where, ": array '", name, "' is missing");
    EVL_CHECK(a->shape == shape, where, ": array '", name, "' has shape ", show(a->shape),
              ", the manifest says ", show(shape));
    const DType dt = name == "inputs" ? DType::kF32 : m.dtype;
    EVL_CHECK(a->dtype == dt, where, ": array '", name, "' is ", to_string(a->dtype),
              ", the manifest says ", to_string(dt));
  }
  EVL_CHECK(record.arrays.size() == want.size(), where, ": record holds ", record.arrays.size(),
            " arrays, the manifest implies ", want.size());
}

}  // namespace evl::cache
