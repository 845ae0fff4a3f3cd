// Parsers for dataset lists and Kinetics CSV annotations (dataset_list.h).
#include "extract/dataset_list.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "common/check.h"

namespace evl {
namespace {

// Labels index a classifier's rows: a label this large is a typo or a wrong
// column, not a class (it would make a head of that many classes).
constexpr int64_t kMaxLabel = int64_t(1) << 20;

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::string canonical_name(std::string s) {
  s = trim(s);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

bool parse_int(const std::string& s, int64_t& out) {
  try {
    size_t used = 0;
    out = std::stoll(s, &used);
    return used == s.size();
  } catch (...) {
    return false;
  }
}

bool parse_double(const std::string& s, double& out) {
  try {
    size_t used = 0;
    out = std::stod(s, &used);
    return used == s.size() && std::isfinite(out);
  } catch (...) {
    return false;
  }
}

// Class name -> index for the non-empty names of a label map.
std::map<std::string, int64_t> name_index(const std::vector<std::string>& label_names) {
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < label_names.size(); ++i)
    if (!label_names[i].empty()) index.emplace(canonical_name(label_names[i]), int64_t(i));
  return index;
}

// A label field: a class index, or a class name looked up in `index`.
int64_t parse_label(const std::string& text, const std::map<std::string, int64_t>& index,
                    size_t num_names, const std::string& list_path, int64_t line_no) {
  const std::string where = str("dataset list '", list_path, "' line ", line_no, ": ");
  int64_t label = -1;
  if (parse_int(text, label)) {
    EVL_CHECK(label >= 0, where, "label '", text, "' is not a non-negative integer");
  } else {
    EVL_CHECK(num_names > 0, where, "label '", text,
              "' is a class name; pass --labels FILE (one class name per line, line n = class n) "
              "to map class names to indices");
    auto it = index.find(canonical_name(text));
    EVL_CHECK(it != index.end(), where, "class '", text, "' is not in the label map (",
              index.size(), " names)");
    label = it->second;
  }
  EVL_CHECK(label < kMaxLabel, where, "label ", label,
            " is absurd (labels are class indices, below ", kMaxLabel, ")");
  EVL_CHECK(num_names == 0 || label < static_cast<int64_t>(num_names), where, "label ", label,
            " >= the ", num_names, " label names");
  return label;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    if (c == ',' && !quoted) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(trim(cur));
  return out;
}

std::vector<ClipEntry> read_kinetics_csv(const std::string& list_path,
                                         const std::vector<std::string>& lines,
                                         const std::vector<std::string>& label_names) {
  auto header = split_csv(lines[0]);
  auto col = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : static_cast<int>(it - header.begin());
  };
  int c_label = col("label"), c_id = col("youtube_id"), c_start = col("time_start"),
      c_end = col("time_end");
  EVL_CHECK(c_id >= 0 && c_start >= 0 && c_end >= 0, "dataset list '", list_path,
            "': Kinetics CSV header needs youtube_id,time_start,time_end; got '", lines[0], "'");
  const auto index = name_index(label_names);
  std::vector<ClipEntry> out;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (trim(lines[i]).empty()) continue;
    const int64_t line_no = static_cast<int64_t>(i + 1);
    auto f = split_csv(lines[i]);
    EVL_CHECK(f.size() == header.size(), "dataset list '", list_path, "' line ", line_no,
              ": expected ", header.size(), " CSV fields, got ", f.size());
    double start = 0, end = 0;
    EVL_CHECK(parse_double(f[c_start], start) && parse_double(f[c_end], end), "dataset list '",
              list_path, "' line ", line_no, ": bad time_start/time_end '", f[c_start], "','",
              f[c_end], "'");
    ClipEntry e;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "_%06lld_%06lld.mp4",
                  static_cast<long long>(std::llround(start)),
                  static_cast<long long>(std::llround(end)));
    e.path = f[c_id] + buf;
    e.line = line_no;
    if (c_label >= 0 && !f[c_label].empty())
      e.label = parse_label(f[c_label], index, label_names.size(), list_path, line_no);
    out.push_back(e);
  }
  return out;
}

}  // namespace

std::vector<ClipEntry> read_dataset_list(const std::string& list_path,
                                         const std::vector<std::string>& label_names) {
  std::error_code ec;
  EVL_CHECK(std::filesystem::exists(list_path, ec), "dataset list '", list_path, "': no such file");
  EVL_CHECK(std::filesystem::is_regular_file(list_path, ec), "dataset list '", list_path,
            "': not a regular file (a directory?)");
  std::ifstream in(list_path);
  EVL_CHECK(in, "dataset list '", list_path, "': cannot open");
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::vector<ClipEntry> out;
  std::map<size_t, std::string> window;  // entry -> "@<start>-<end>" as written
  const auto index = name_index(label_names);
  const std::string first = lines.empty() ? "" : trim(lines[0]);
  const bool csv = first.rfind("label,youtube_id", 0) == 0 || first.rfind("youtube_id,", 0) == 0;
  if (csv) out = read_kinetics_csv(list_path, lines, label_names);
  if (!csv) {
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string l = trim(lines[i]);
      if (l.empty() || l[0] == '#') continue;
      const int64_t line_no = static_cast<int64_t>(i + 1);
      std::istringstream ss(l);
      std::vector<std::string> f;
      for (std::string t; ss >> t;) f.push_back(t);
      EVL_CHECK(f.size() == 1 || f.size() == 2 || f.size() == 4, "dataset list '", list_path,
                "' line ", line_no, ": expected '<path> <label> [<start_sec> <end_sec>]', got ",
                f.size(), " fields");
      ClipEntry e;
      e.path = f[0];
      e.line = line_no;
      if (f.size() >= 2) e.label = parse_label(f[1], index, label_names.size(), list_path, line_no);
      if (f.size() == 4) {
        EVL_CHECK(parse_double(f[2], e.start_sec) && parse_double(f[3], e.end_sec) &&
                      e.start_sec >= 0 && e.end_sec > e.start_sec,
                  "dataset list '", list_path, "' line ", line_no, ": bad trim '", f[2], " ", f[3],
                  "' (need 0 <= start < end seconds)");
        window[out.size()] = "@" + f[2] + "-" + f[3];
      }
      out.push_back(e);
    }
  }
  // A clip is a path and a trimming window: the same pair twice is a mistake;
  // one path with several windows is several clips, told apart by their ids.
  std::map<std::tuple<std::string, double, double>, int64_t> seen;
  std::map<std::string, int> uses;
  for (const auto& e : out) {
    auto [it, fresh] = seen.emplace(std::make_tuple(e.path, e.start_sec, e.end_sec), e.line);
    EVL_CHECK(fresh, "dataset list '", list_path, "' line ", e.line, ": duplicate of line ",
              it->second, " ('", e.path, "' with the same trimming window)");
    ++uses[e.path];
  }
  std::map<std::string, int64_t> ids;
  for (size_t i = 0; i < out.size(); ++i) {
    auto& e = out[i];
    const auto w = window.find(i);
    e.id = uses[e.path] > 1 && w != window.end() ? e.path + w->second : e.path;
    auto [it, fresh] = ids.emplace(e.id, e.line);
    EVL_CHECK(fresh, "dataset list '", list_path, "' line ", e.line, ": video id '", e.id,
              "' is also the id of line ", it->second);
  }
  return out;
}

std::vector<std::string> read_label_map(const std::string& path) {
  std::error_code ec;
  EVL_CHECK(std::filesystem::is_regular_file(path, ec), "label map '", path,
            "': no such file (or not a regular file)");
  std::ifstream in(path);
  EVL_CHECK(in, "label map '", path, "': cannot open");
  std::vector<std::string> names;
  std::map<std::string, int64_t> seen;  // canonical name -> line
  int explicit_ids = -1;                // unknown until the first line
  int64_t line_no = 0;
  for (std::string raw; std::getline(in, raw);) {
    ++line_no;
    const std::string l = trim(raw);
    const std::string where = str("label map '", path, "' line ", line_no, ": ");
    if (l.empty()) {
      EVL_CHECK(in.peek() == EOF, where, "empty line (one class name per line)");
      continue;
    }
    if (line_no == 1 && (l == "id,name" || l == "id, name")) continue;
    // `<id>: <name>` or `<id>,<name>`?
    const size_t sep = l.find_first_of(":,");
    int64_t id = -1;
    const bool has_id =
        sep != std::string::npos && sep > 0 && parse_int(trim(l.substr(0, sep)), id);
    if (explicit_ids < 0) explicit_ids = has_id ? 1 : 0;
    EVL_CHECK(has_id == (explicit_ids == 1), where, "mixes '<id>: <name>' lines with plain names");
    std::string name = has_id ? trim(l.substr(sep + 1)) : l;
    if (!has_id) id = static_cast<int64_t>(names.size());
    EVL_CHECK(!name.empty(), where, "empty class name");
    EVL_CHECK(id >= 0 && id < kMaxLabel, where, "class id ", id, " out of range [0, ", kMaxLabel,
              ")");
    if (static_cast<size_t>(id) >= names.size()) names.resize(static_cast<size_t>(id) + 1);
    EVL_CHECK(names[static_cast<size_t>(id)].empty(), where, "class id ", id, " given twice");
    auto [it, fresh] = seen.emplace(canonical_name(name), line_no);
    EVL_CHECK(fresh, where, "class '", name, "' is also on line ", it->second);
    names[static_cast<size_t>(id)] = name;
  }
  EVL_CHECK(!names.empty(), "label map '", path, "': no class names");
  return names;
}

std::string resolve_video_path(const ClipEntry& entry, const std::string& root) {
  std::filesystem::path p(entry.path);
  if (p.is_absolute() || root.empty()) return entry.path;
  return (std::filesystem::path(root) / p).string();
}

}  // namespace evl
