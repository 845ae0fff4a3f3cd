// evl_cache convert (convert.h): the refusals, the output manifest and its
// resume check, the re-encoding of one record, and the loop over shards that
// converts groups of records on worker threads and writes them in source
// order, so the output does not depend on --threads.
#include "cache/convert.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "cache/lmdb_env.h"
#include "cache/quantize.h"
#include "common/atomic_file.h"
#include "common/check.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/time.h"
#include "evl/version.h"

namespace evl::cache {

namespace fs = std::filesystem;

int precision_rank(DType dtype) {
  switch (dtype) {
    case DType::kFP8:
    case DType::kFP8V3:
    case DType::kFP8V2:
      return 0;
    case DType::kI8:
    case DType::kI8V3:
    case DType::kI8V2:
      return 1;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
      return 3;
  }
  EVL_THROW(Error, "unknown dtype code ", static_cast<int>(dtype));
}

void check_conversion(const Manifest& source, DType dtype, StorageMode storage, bool force) {
  EVL_CHECK_USAGE(!(source.storage == StorageMode::kQK && storage == StorageMode::kCompact),
                  "convert: a qk cache cannot be made compact: it lacks the input of the first "
                  "decoder block (block ",
                  source.layers.empty() ? 0 : source.layers.front() - 1,
                  "'s output), which compact storage keeps as x[0]; re-extract with "
                  "`evl_extract --store compact`");
  EVL_CHECK_USAGE(source.dtype != dtype || source.storage != storage,
                  "convert: the cache is already ", to_string(dtype), " ", to_string(storage),
                  ": nothing to convert");
  EVL_CHECK_USAGE(force || precision_rank(dtype) <= precision_rank(source.dtype),
                  "convert: ", to_string(source.dtype), " -> ", to_string(dtype),
                  " adds bytes but no precision (the values were rounded to ",
                  to_string(source.dtype), " when extracted); --force does it anyway");
}

Manifest converted_manifest(const Manifest& source, const std::string& source_dir, DType dtype,
                            StorageMode storage) {
  Manifest m = source;
  m.format_version = kFormatVersion;
  m.tool_version = EVL_VERSION;
  m.created = utc_now_iso8601();
  m.dtype = dtype;
  m.storage = storage;
  for (auto& s : m.shards) s.records = 0;
  m.conversions.push_back(
      {source_dir, source.dtype, source.storage, source.format_version, m.tool_version, m.created});
  return m;
}

namespace {

// The backbone block whose output is entry i of a stored x (q and k: of layers).
std::vector<int64_t> stored_blocks(const Manifest& m) {
  std::vector<int64_t> blocks = m.layers;
  if (m.storage == StorageMode::kCompact && !blocks.empty())
    blocks.insert(blocks.begin(), blocks.front() - 1);
  return blocks;
}

std::vector<float> decode(const ArrayView& a) {
  std::vector<float> v(static_cast<size_t>(a.numel()));
  to_float32(a, v.data());
  return v;
}

// `values` of `shape` (leading axis: one entry per block of `blocks`) as `dtype`;
// for int8/fp8 each block is checked first, so the reason names the block.
Array encode(DType dtype, const char* name, std::vector<int64_t> shape, const float* values,
             const std::vector<int64_t>& blocks) {
  size_t n = 1;
  for (const int64_t d : shape) n *= static_cast<size_t>(d);
  const size_t per = blocks.empty() ? n : n / blocks.size();
  if (is_quantized(dtype))
    for (size_t i = 0; i < blocks.size(); ++i) {
      std::vector<int64_t> block_shape = shape;  // (1, T, L, C): the block's own slice
      block_shape[0] = 1;
      const std::string why = quantization_problem(dtype, block_shape, values + i * per);
      EVL_CHECK(why.empty(), why, " (", name, " of block ", blocks[i], ")");
    }
  return make_array(dtype, std::move(shape), values, n);
}

}  // namespace

Record convert_record(const RecordView& record, const Manifest& from, const Manifest& to,
                      const Record* weights) {
  check_record_shape(from, record, "record '" + record.key + "'");
  Record out;
  out.key = record.key;
  out.video_id = record.video_id;
  out.label = record.label;
  out.clip_index = record.clip_index;
  out.view_index = record.view_index;
  out.view = record.view;
  const ArrayView& x = record.array("x");  // (M, T, L, C) or (M+1, T, L, C)
  const std::vector<float> xf = decode(x);
  if (from.storage == to.storage) {
    const auto blocks = stored_blocks(from);
    out.arrays.emplace_back("x", encode(to.dtype, "x", x.shape, xf.data(), blocks));
    if (from.storage == StorageMode::kQK)
      for (const char* name : {"q", "k"}) {
        const ArrayView& a = record.array(name);
        out.arrays.emplace_back(name, encode(to.dtype, name, a.shape, decode(a).data(), blocks));
      }
  } else {
    // compact -> qk: decoder layer i reads X = x[i+1], and its Q/K come from
    // x[i], the input of block layers[i] (FORMAT.md "Arrays").
    EVL_CHECK(from.storage == StorageMode::kCompact && weights,
              "convert: compact -> qk needs the source's qk_weights.evl");
    const int64_t M = x.shape[0] - 1, rows = x.shape[1] * x.shape[2], C = x.shape[3];
    const size_t per = static_cast<size_t>(rows * C);
    std::vector<float> q(static_cast<size_t>(M) * per), k(q.size());
    for (int64_t i = 0; i < M; ++i)
      compute_qk(*weights, from.layers[static_cast<size_t>(i)], xf.data() + i * per, rows, C,
                 q.data() + i * per, k.data() + i * per);
    const std::vector<int64_t> shape = {M, x.shape[1], x.shape[2], C};
    out.arrays.emplace_back("x", encode(to.dtype, "x", shape, xf.data() + per, to.layers));
    out.arrays.emplace_back("q", encode(to.dtype, "q", shape, q.data(), to.layers));
    out.arrays.emplace_back("k", encode(to.dtype, "k", shape, k.data(), to.layers));
  }
  if (const ArrayView* in = record.find("inputs")) {  // float32 frames, as they are
    const auto* p = static_cast<const uint8_t*>(in->data);
    out.arrays.emplace_back("inputs", Array{in->dtype, in->shape, {p, p + in->nbytes()}});
  }
  return out;
}

namespace {

int64_t shard_records(const std::string& path) {
  auto env = detail::open_env(path, MDB_RDONLY | MDB_NOTLS, 0);
  detail::Txn txn(env.get(), MDB_RDONLY, "cache shard '" + path + "'");
  MDB_stat st;
  const int rc = mdb_stat(txn.get(), txn.dbi(), &st);
  if (rc) detail::throw_mdb(rc, "cache shard '" + path + "': mdb_stat");
  return static_cast<int64_t>(st.ms_entries);
}

// A rerun must continue the same conversion: throws UsageError naming the field.
void check_resume(const Manifest& want, const Manifest& found, const std::string& where) {
  const std::vector<std::string>& fields = provenance_fields();
  try {
    EVL_CHECK(!found.conversions.empty(), where,
              ": a cache that evl_cache convert did not write (no 'conversions')");
    check_matches(want, found, where, fields);
    const std::string &a = want.conversions.back().from, &b = found.conversions.back().from;
    EVL_CHECK(a == b, where, ": provenance field 'conversions[-1].from' is \"", b,
              "\", expected \"", a, "\"");
    std::vector<std::string> wn, fn;
    for (const auto& s : want.shards) wn.push_back(s.name);
    for (const auto& s : found.shards) fn.push_back(s.name);
    EVL_CHECK(wn == fn, where, ": lists other shards than the source");
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    EVL_THROW(UsageError, e.what(),
              " (the output holds another conversion: rerun that command to resume it, or "
              "convert into another directory)");
  }
}

// One source record in flight: its bytes in the source's map, then its result.
struct Item {
  std::string key;
  MDB_val value{};
  Record out;
  std::string video_id = "-", error, fatal;
};

// fn(i) for i in [0, n) on up to `threads` threads (the caller's among them).
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < n;) fn(i);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads && static_cast<size_t>(t) < n; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

ConvertSummary convert_cache(const ConvertOptions& o, const std::atomic<bool>* stop,
                             const std::function<void(int64_t)>& on_record) {
  const auto start = std::chrono::steady_clock::now();
  EVL_CHECK_USAGE(!o.in.empty() && !o.out.empty(), "convert: IN and OUT are required");
  EVL_CHECK_USAGE(o.threads >= 0, "convert: --threads must be >= 0, got ", o.threads);
  const Manifest src = Manifest::load(o.in);
  EVL_CHECK_USAGE(!fs::exists(o.out) || !fs::equivalent(o.in, o.out), "convert: OUT '", o.out,
                  "' is the input cache; convert into another directory");
  const StorageMode storage = o.storage.value_or(src.storage);
  check_conversion(src, o.dtype, storage, o.force);
  for (const auto& ms : src.shards) {
    const std::string path = (fs::path(o.in) / ms.name).string();
    const int64_t n = shard_records(path);
    EVL_CHECK(n == ms.records, "convert: cache shard '", path, "': holds ", n,
              " records, the manifest says ", ms.records,
              " (an unfinished extraction or conversion? finish it first)");
  }
  std::optional<Record> weights;
  if (src.storage == StorageMode::kCompact) {
    weights = load_qk_weights(o.in);
    for (const int64_t b : src.layers)
      EVL_CHECK(weights->find("q_proj.weight." + std::to_string(b)), "convert: cache '", o.in,
                "': qk_weights.evl lacks block ", b);
  }

  // The manifest first: an interrupted output is identifiable (counts 0) and resumable.
  Manifest out = converted_manifest(src, fs::canonical(o.in).string(), o.dtype, storage);
  const std::string manifest_path = (fs::path(o.out) / "manifest.json").string();
  if (fs::exists(manifest_path)) {
    const Manifest existing = Manifest::load(o.out);
    check_resume(out, existing, "convert: '" + manifest_path + "'");
    out = existing;
  } else {
    EVL_CHECK_USAGE(!fs::exists(o.out) || fs::is_empty(o.out), "convert: OUT '", o.out,
                    "' exists, is not empty and holds no manifest.json of a conversion");
    out.save(o.out);
  }
  if (storage == StorageMode::kCompact)  // compact -> compact: the same frozen weights
    write_file_atomic((fs::path(o.out) / "qk_weights.evl").string(),
                      read_file((fs::path(o.in) / "qk_weights.evl").string()));

  ConvertSummary summary;
  summary.failures_file = (fs::path(o.out) / "failures.tsv").string();
  std::ofstream failures(summary.failures_file, std::ios::trunc);  // what this run could not do
  EVL_CHECK(failures, "convert: cannot write '", summary.failures_file, "'");
  for (const auto& ms : src.shards) summary.records += ms.records;
  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t group = 2 * static_cast<size_t>(threads);
  Progress progress("convert", summary.records, "records");
  int64_t done = 0;
  auto handled = [&] {
    progress.advance();
    if (on_record) on_record(++done);
  };
  bool stopped = false;
  std::vector<int64_t> counts;
  for (const auto& ms : src.shards) {
    const std::string src_path = (fs::path(o.in) / ms.name).string();
    auto env = detail::open_env(src_path, MDB_RDONLY | MDB_NOTLS, 0);
    detail::Txn txn(env.get(), MDB_RDONLY, "cache shard '" + src_path + "'");
    MDB_cursor* cur = nullptr;
    int rc = mdb_cursor_open(txn.get(), txn.dbi(), &cur);
    if (rc) detail::throw_mdb(rc, "cache shard '" + src_path + "': mdb_cursor_open");
    std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cur, mdb_cursor_close);
    ShardWriter writer((fs::path(o.out) / ms.name).string());
    std::vector<Item> items;
    // Converts the group in parallel (reading the map: valid while txn lives),
    // then writes it in source order from this thread (the writer's).
    auto flush = [&] {
      parallel_for(items.size(), threads, [&](size_t i) {
        Item& it = items[i];
        const std::string where = "cache shard '" + src_path + "': record '" + it.key + "'";
        try {
          const RecordView r = decode_record(it.value.mv_data, it.value.mv_size, where);
          EVL_CHECK(r.key == it.key, where, ": header names key '", r.key, "'");
          it.video_id = r.video_id;
          it.out = convert_record(r, src, out, weights ? &*weights : nullptr);
        } catch (const Error& e) {
          it.error = e.what();
        } catch (const std::exception& e) {  // bad_alloc and the like end the run
          it.fatal = e.what();
        }
      });
      for (Item& it : items) {
        EVL_CHECK(it.fatal.empty(), "convert: record '", it.key, "': ", it.fatal);
        if (it.error.empty()) {
          writer.put(it.out);
          ++summary.converted;
        } else {
          ++summary.failed;
          log::warn("convert: skipping record '", it.key, "': ", it.error);
          failures << one_line(it.video_id) << '\t' << it.key << '\t' << one_line(it.error) << '\n';
        }
        handled();
      }
      failures.flush();
      EVL_CHECK(failures, "convert: cannot write '", summary.failures_file, "'");
      items.clear();
    };
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
      if (writer.contains_valid(key)) {
        ++summary.skipped;
        handled();
        continue;
      }
      items.push_back({std::move(key), v, {}, "-", "", ""});
      if (items.size() < group) continue;
      flush();
      if (stop && stop->load()) {
        stopped = true;
        break;
      }
    }
    if (rc != 0 && rc != MDB_NOTFOUND && !stopped)
      detail::throw_mdb(rc, "cache shard '" + src_path + "': scan failed");
    if (!stopped) flush();
    writer.commit();
    summary.bytes_written += writer.bytes_written();
    counts.push_back(writer.committed_records());
    if (stopped) break;
  }
  progress.finish();
  summary.interrupted = stopped;
  if (!stopped) {  // every record converted or listed as failed: the output is complete
    for (size_t s = 0; s < out.shards.size(); ++s) out.shards[s].records = counts[s];
    out.save(o.out);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace evl::cache
