// evl_cache's library side: info (counts and sizes), verify (every record),
// merge (join array-job caches) and a few helpers. HDF5 export lives in
// export_h5.cpp. Every check names the shard and key it is about.
#include "cache/cache_tools.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cache/lmdb_env.h"
#include "cache/quantize.h"
#include "common/atomic_file.h"
#include "common/check.h"
#include "common/time.h"
#include "evl/version.h"

namespace evl::cache {

namespace fs = std::filesystem;

namespace {

// Calls fn(key, value) for every record of the shard at `path` (read-only).
void scan_shard(const std::string& path,
                const std::function<void(const std::string&, const MDB_val&)>& fn) {
  auto env = detail::open_env(path, MDB_RDONLY | MDB_NOTLS, 0);
  detail::Txn txn(env.get(), MDB_RDONLY, "cache shard '" + path + "'");
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn.get(), txn.dbi(), &cur);
  if (rc) detail::throw_mdb(rc, "cache shard '" + path + "': mdb_cursor_open");
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cur, mdb_cursor_close);
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    fn(std::string(static_cast<const char*>(k.mv_data), k.mv_size), v);
  if (rc != MDB_NOTFOUND) detail::throw_mdb(rc, "cache shard '" + path + "': scan failed");
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  std::ostringstream os;
  os.precision(u ? 2 : 0);
  os << std::fixed << b << " " << units[u];
  return os.str();
}

}  // namespace

uint64_t record_bytes(const Manifest& m) {
  Record r;
  r.key = make_key(0, 0);
  r.video_id = "video-id";
  r.view = "t0 s0 xx";
  for (const auto& [name, shape] : expected_arrays(m)) {
    Array a{name == "inputs" ? DType::kF32 : m.dtype, shape, {}};
    a.bytes.resize(array_bytes(a.dtype, a.shape));
    r.arrays.emplace_back(name, std::move(a));
  }
  return encode_record(r).size();
}

CacheInfo cache_info(const std::string& dir) {
  CacheInfo info;
  info.dir = dir;
  info.manifest = Manifest::load(dir);
  for (const auto& ms : info.manifest.shards) {
    const std::string path = (fs::path(dir) / ms.name).string();
    ShardInfo s{ms.name, 0, detail::data_file_bytes(path), 0};
    scan_shard(path, [&](const std::string&, const MDB_val& v) {
      ++s.records;
      s.value_bytes += v.mv_size;
    });
    info.records += s.records;
    info.file_bytes += s.file_bytes;
    info.value_bytes += s.value_bytes;
    info.shards.push_back(s);
  }
  return info;
}

std::string CacheInfo::to_json() const {
  nlohmann::json shards_json = nlohmann::json::array();
  for (const auto& s : shards)
    shards_json.push_back({{"name", s.name},
                           {"records", s.records},
                           {"file_bytes", s.file_bytes},
                           {"value_bytes", s.value_bytes}});
  nlohmann::json j = {{"dir", dir},
                      {"records", records},
                      {"clips_in_list", manifest.num_clips},
                      {"file_bytes", file_bytes},
                      {"value_bytes", value_bytes},
                      {"bytes_per_record", records ? value_bytes / records : 0},
                      {"expected_bytes_per_record", record_bytes(manifest)},
                      {"shards", shards_json},
                      {"manifest", nlohmann::json::parse(manifest.to_json())}};
  return j.dump(2) + "\n";
}

std::string CacheInfo::to_text() const {
  const Manifest& m = manifest;
  std::ostringstream os;
  os << "cache        " << dir << "\n"
     << "records      " << records << " (" << m.views_per_clip() << " views per clip, "
     << m.num_clips << " clips in the list)\n"
     << "size         " << human_bytes(double(file_bytes)) << " on disk, "
     << human_bytes(double(value_bytes)) << " of records, "
     << human_bytes(records ? double(value_bytes) / double(records) : 0.0) << " per record\n"
     << "storage      " << to_string(m.storage) << ", " << to_string(m.dtype)
     << (has_outlier_channels(m.dtype)
             ? " (absmax-symmetric, groups of 64 channels, fp16 scales, outlier channels)"
         : is_quantized(m.dtype)
             ? " (absmax-symmetric, groups of 64 channels, fp16 scales; version 2)"
             : "")
     << (m.has_inputs ? ", with inputs" : "") << "\n"
     << "backbone     " << m.backbone.file << " (" << m.backbone.format << ", xxh64 "
     << m.backbone.hash << ") width " << m.backbone.width << " depth " << m.backbone.depth
     << " heads " << m.backbone.heads << " patch " << m.backbone.patch << " grid "
     << m.backbone.grid << " input " << m.backbone.input_size << "\n"
     << "layers      ";
  for (auto l : m.layers) os << " " << l;
  os << "\nsampling     " << m.sampling << ", " << m.frames << " frames, stride " << m.stride
     << ", views " << m.temporal_views << "x" << m.spatial_views << " test / " << m.train_views
     << " train\n"
     << "created      " << m.created << " by evl " << m.tool_version << " from '" << m.list_file
     << "'\n";
  for (const auto& c : m.conversions)
    os << "converted    " << c.created << " by evl " << c.tool_version << " from "
       << to_string(c.from_dtype) << " " << to_string(c.from_storage) << " (format version "
       << c.from_format_version << ") '" << c.from << "'\n";
  for (const auto& s : shards)
    os << "  " << s.name << "  " << s.records << " records  " << human_bytes(double(s.file_bytes))
       << "\n";
  return os.str();
}

VerifyReport verify_cache(const std::string& dir, const std::function<void(int64_t)>& progress) {
  VerifyReport report;
  const Manifest m = Manifest::load(dir);
  std::map<std::string, std::string> seen;  // key -> shard
  for (const auto& ms : m.shards) {
    const std::string path = (fs::path(dir) / ms.name).string();
    int64_t count = 0;
    try {
      scan_shard(path, [&](const std::string& key, const MDB_val& v) {
        ++count;
        ++report.records;
        const std::string where = "cache shard '" + path + "': record '" + key + "'";
        try {
          const RecordView r = decode_record(v.mv_data, v.mv_size, where);
          EVL_CHECK(r.key == key, where, ": header names key '", r.key, "'");
          check_record_shape(m, r, where);
        } catch (const Error& e) {
          report.bad.push_back({ms.name, key, e.what()});
        }
        auto [it, fresh] = seen.emplace(key, ms.name);
        if (!fresh)
          report.bad.push_back({ms.name, key, where + ": also in shard '" + it->second + "'"});
        if (progress) progress(report.records);
      });
    } catch (const Error& e) {
      report.bad.push_back({ms.name, "*", e.what()});
      continue;
    }
    if (count != ms.records)
      report.bad.push_back({ms.name, "*",
                            str("cache shard '", path, "': holds ", count,
                                " records, the manifest says ", ms.records)});
  }
  if (m.storage == StorageMode::kCompact) {
    try {
      const Record w = load_qk_weights(dir);
      for (size_t i = 1; i < m.layers.size() + 1; ++i) {
        const auto block = std::to_string(m.layers[i - 1]);
        EVL_CHECK(w.find("q_proj.weight." + block) && w.find("k_proj.weight." + block), "cache '",
                  dir, "': qk_weights.evl lacks block ", block);
      }
    } catch (const Error& e) {
      report.bad.push_back({"-", "qk_weights.evl", e.what()});
    }
  }
  return report;
}

namespace {

// An input of merge: a cache directory with manifest.json, or the output of one
// task of a sharded evl_extract job (a directory holding its shard and the
// shard's own `<shard>.manifest.json`, joined into manifest.json only once every
// shard of the job is in the same directory).
Manifest load_merge_input(const std::string& dir) {
  if (fs::exists(fs::path(dir) / "manifest.json")) return Manifest::load(dir);
  std::vector<fs::path> partials;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("features-", 0) == 0 && name.size() > 14 &&
          name.compare(name.size() - 14, 14, ".manifest.json") == 0)
        partials.push_back(e.path());
    }
  EVL_CHECK(!partials.empty(), "cache '", dir,
            "': no manifest.json and no shard manifests (not an evl cache?)");
  std::sort(partials.begin(), partials.end());
  Manifest joined = Manifest::from_json(read_file(partials[0].string()), partials[0].string());
  joined.shards.clear();
  for (const auto& p : partials) {
    const Manifest m = Manifest::from_json(read_file(p.string()), p.string());
    check_matches(joined, m, p.string());
    joined.shards.insert(joined.shards.end(), m.shards.begin(), m.shards.end());
  }
  return joined;
}

}  // namespace

void merge_caches(const std::string& out_dir, const std::vector<std::string>& inputs) {
  EVL_CHECK_USAGE(!inputs.empty(), "merge: no input caches given");
  EVL_CHECK(!fs::exists(out_dir) || fs::is_empty(out_dir), "merge: output '", out_dir,
            "' exists and is not empty");
  const Manifest first = load_merge_input(inputs[0]);
  const std::vector<std::string>& all_fields = provenance_fields();
  std::vector<Manifest> manifests;
  std::map<std::string, std::string> seen;  // key -> "<input>/<shard>"
  std::string weights_bytes;
  for (const auto& in : inputs) {
    manifests.push_back(load_merge_input(in));
    check_matches(first, manifests.back(), "merge: cache '" + in + "'", all_fields);
    if (first.storage == StorageMode::kCompact) {
      const std::string bytes = read_file((fs::path(in) / "qk_weights.evl").string());
      if (weights_bytes.empty()) weights_bytes = bytes;
      EVL_CHECK(bytes == weights_bytes, "merge: cache '", in, "': qk_weights.evl differs from '",
                inputs[0], "'s");
    }
    for (const auto& ms : manifests.back().shards) {
      const std::string path = (fs::path(in) / ms.name).string();
      int64_t count = 0;
      scan_shard(path, [&](const std::string& key, const MDB_val& val) {
        ++count;
        auto [it, fresh] = seen.emplace(key, path);
        EVL_CHECK(fresh, "merge: record '", key, "' is in shard '", it->second, "' and in shard '",
                  path, "' (duplicate key)");
        // The shards are copied page by page: a record that does not verify
        // would be copied as it is, so every record is checked first (as verify).
        const std::string where = "merge: cache shard '" + path + "': record '" + key + "'";
        const RecordView r = decode_record(val.mv_data, val.mv_size, where);
        check_record_shape(first, r, where);
      });
      EVL_CHECK(count == ms.records, "merge: cache shard '", path, "': holds ", count,
                " records, the manifest says ", ms.records);
    }
  }
  int total = 0;
  for (const auto& m : manifests) total += static_cast<int>(m.shards.size());
  fs::create_directories(out_dir);
  Manifest out = first;
  out.shards.clear();
  out.created = utc_now_iso8601();
  out.tool_version = EVL_VERSION;
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (const auto& ms : manifests[i].shards) {
      const std::string src = (fs::path(inputs[i]) / ms.name).string();
      const std::string name = shard_name(static_cast<int>(out.shards.size()), total);
      const std::string dst = (fs::path(out_dir) / name).string();
      fs::create_directories(dst);
      auto env = detail::open_env(src, MDB_RDONLY | MDB_NOTLS, 0);
      const int rc = mdb_env_copy2(env.get(), dst.c_str(), MDB_CP_COMPACT);
      if (rc) detail::throw_mdb(rc, "merge: copying cache shard '" + src + "' to '" + dst + "'");
      out.shards.push_back({name, ms.records});
    }
  }
  if (!weights_bytes.empty())
    write_file_atomic((fs::path(out_dir) / "qk_weights.evl").string(), weights_bytes);
  out.save(out_dir);  // last: a merge killed midway leaves no manifest
}

}  // namespace evl::cache
