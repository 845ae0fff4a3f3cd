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
  std::vector<std::string> names;
  for (auto& n : label_names) names.push_back(canonical_name(n));
  if (names.empty() && c_label >= 0) {
    std::set<std::string> seen;
    for (size_t i = 1; i < lines.size(); ++i) {
      auto f = split_csv(lines[i]);
      if (static_cast<int>(f.size()) > c_label && !trim(lines[i]).empty())
        seen.insert(canonical_name(f[c_label]));
    }
    names.assign(seen.begin(), seen.end());
  }
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < names.size(); ++i) index.emplace(names[i], static_cast<int64_t>(i));
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
    if (c_label >= 0) {
      auto it = index.find(canonical_name(f[c_label]));
      EVL_CHECK(it != index.end(), "dataset list '", list_path, "' line ", line_no, ": class '",
                f[c_label], "' is not in the label names");
      e.label = it->second;
    }
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
      if (f.size() >= 2)
        EVL_CHECK(parse_int(f[1], e.label) && e.label >= 0, "dataset list '", list_path, "' line ",
                  line_no, ": label '", f[1], "' is not a non-negative integer");
      EVL_CHECK(e.label < kMaxLabel, "dataset list '", list_path, "' line ", line_no, ": label ",
                e.label, " is absurd (labels are class indices, below ", kMaxLabel, ")");
      EVL_CHECK(label_names.empty() || e.label < static_cast<int64_t>(label_names.size()),
                "dataset list '", list_path, "' line ", line_no, ": label ", e.label, " >= the ",
                label_names.size(), " label names");
      if (f.size() == 4) {
        EVL_CHECK(parse_double(f[2], e.start_sec) && parse_double(f[3], e.end_sec) &&
                      e.start_sec >= 0 && e.end_sec > e.start_sec,
                  "dataset list '", list_path, "' line ", line_no, ": bad trim '", f[2], " ", f[3],
                  "' (need 0 <= start < end seconds)");
      }
      out.push_back(e);
    }
  }
  std::map<std::tuple<std::string, double, double>, int64_t> seen;
  for (const auto& e : out) {
    auto [it, fresh] = seen.emplace(std::make_tuple(e.path, e.start_sec, e.end_sec), e.line);
    EVL_CHECK(fresh, "dataset list '", list_path, "' line ", e.line, ": duplicate of line ",
              it->second, " ('", e.path, "')");
  }
  return out;
}

std::string resolve_video_path(const ClipEntry& entry, const std::string& root) {
  std::filesystem::path p(entry.path);
  if (p.is_absolute() || root.empty()) return entry.path;
  return (std::filesystem::path(root) / p).string();
}

}  // namespace evl
