// Implements the shared CLI pattern (cli.h): parsing with --config/--help/--version/--print-config,
// exception-to-exit-code mapping, and dumping the resolved config as INI.
#include "common/cli.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "evl/version.h"

namespace evl::cli {

namespace fs = std::filesystem;

std::string shortest(double x) {
  char buf[512];
  // The shortest digits that read back as x, in scientific form ("4e-04").
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  if (e == std::string::npos) return sci;  // inf, nan
  const int exponent = std::stoi(sci.substr(e + 1));
  if (exponent >= -5 && exponent < 17) {  // as a plain decimal: 0.0004, 0.3333333333333333
    r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::fixed);
    return std::string(buf, r.ptr);
  }
  return sci.substr(0, e) + "e" + std::to_string(exponent);  // 1e-300, 1e20
}
std::string shortest(float x) {
  char buf[128];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  if (e == std::string::npos) return sci;
  const int exponent = std::stoi(sci.substr(e + 1));
  if (exponent >= -5 && exponent < 9) {
    r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::fixed);
    return std::string(buf, r.ptr);
  }
  return sci.substr(0, e) + "e" + std::to_string(exponent);
}

std::string shorten_defaults(const std::string& help, const std::set<std::string>& float_options) {
  std::string out;
  size_t at = 0;
  for (size_t open; (open = help.find("(=", at)) != std::string::npos;) {
    const size_t close = help.find(')', open);
    if (close == std::string::npos) break;
    out.append(help, at, open + 2 - at);
    const std::string token = help.substr(open + 2, close - open - 2);
    // The option this default belongs to: the first `--name` on its line.
    const size_t line =
        help.rfind('\n', open) == std::string::npos ? 0 : help.rfind('\n', open) + 1;
    const size_t dashes = help.find("--", line);
    std::string name;
    if (dashes < open)
      name = help.substr(dashes + 2, help.find_first_of(" [", dashes) - dashes - 2);
    std::string text = token;
    char* end = nullptr;
    const double d = std::strtod(token.c_str(), &end);
    const bool number = !token.empty() && end == token.c_str() + token.size() &&
                        token.find_first_of(".eE") != std::string::npos && std::isfinite(d);
    if (number) {
      text =
          float_options.count(name) ? shortest(std::strtof(token.c_str(), nullptr)) : shortest(d);
      if (text.size() > token.size()) text = token;
    }
    out += text;
    out += ')';
    // Keep the description column where Boost put it.
    if (close + 1 < help.size() && help[close + 1] == ' ')
      out.append(token.size() - text.size(), ' ');
    at = close + 1;
  }
  out.append(help, at, std::string::npos);
  return out;
}

namespace {

// Boost 1.74 formats an error by replacing each placeholder (%canonical_option%,
// %value%, ...) in its message with a name or a value, again and again while
// one is left: a name or value that itself holds a placeholder never finishes
// (found by fuzzing --config, tests/fuzz/ini_fuzz.cpp: evl_* hung on such a
// section, key or value). So no flag, key or value may hold `%word%`.
bool has_placeholder(const std::string& s) {
  for (size_t open = s.find('%'); open != std::string::npos; open = s.find('%', open + 1)) {
    size_t i = open + 1;
    while (i < s.size() && (std::isalpha(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
    if (i > open + 1 && i < s.size() && s[i] == '%') return true;
  }
  return false;
}

void check_placeholders(const std::string& text, const std::string& path) {
  std::istringstream lines(text);
  int64_t n = 0;
  for (std::string line; std::getline(lines, line);) {
    ++n;
    const size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    if (has_placeholder(line))
      throw UsageError(str("config file '", path, "' line ", n,
                           ": '%...%' is not allowed in evl options or values"));
  }
}

}  // namespace

bool parse(const Tool& tool, int argc, const char* const argv[],
           const po::options_description& options, po::variables_map& vm,
           const po::positional_options_description* positional) {
  std::string config_path;
  po::options_description generic("general");
  generic.add_options()("help,h", "print this help and exit")(
      "version", "print the version and exit")("config", po::value(&config_path),
                                               "read options from an INI file (flags override it)")(
      "print-config",
      "dry run: parse the flags and --config like a real run, print the resolved options as INI "
      "and exit");
  po::options_description all;
  all.add(generic).add(options);

  for (int i = 1; i < argc; ++i)
    if (has_placeholder(argv[i]))
      throw UsageError(str("argument '", argv[i],
                           "': '%...%' is not allowed in evl options or values (see ", tool.name,
                           " --help)"));
  try {
    po::command_line_parser parser(argc, argv);
    // No prefix guessing: `--thread 4` must not silently mean `--threads 4`.
    parser.options(all).style(po::command_line_style::default_style &
                              ~po::command_line_style::allow_guessing);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::ostringstream options_text;
      options_text << all;
      std::set<std::string> float_options;  // Boost prints their defaults with 9 digits
      for (const auto& o : all.options())
        if (dynamic_cast<const po::typed_value<float>*>(o->semantic().get()))
          float_options.insert(o->long_name());
      std::cout << tool.name << " " << EVL_VERSION << " - " << tool.synopsis << "\n\n"
                << "usage: " << tool.usage << "\n\n"
                << shorten_defaults(options_text.str(), float_options) << std::endl;
      return false;
    }
    if (vm.count("version")) {
      std::cout << tool.name << " " << EVL_VERSION << std::endl;
      return false;
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::error_code ec;
      if (fs::exists(path, ec) && !fs::is_regular_file(path, ec))
        throw UsageError(str("config file '", path, "': not a regular file (a directory?)"));
      std::ifstream file(path, std::ios::binary);
      if (!file) throw UsageError(str("config file '", path, "': cannot be opened"));
      const std::string text((std::istreambuf_iterator<char>(file)),
                             std::istreambuf_iterator<char>());
      check_placeholders(text, path);
      std::istringstream in(text);
      try {
        // Values already stored from the command line are not overwritten.
        po::store(po::parse_config_file(in, options, /*allow_unregistered=*/false), vm);
      } catch (const po::error& e) {
        throw UsageError(str("config file '", path, "': ", e.what()));
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(str(e.what(), " (see ", tool.name, " --help)"));
  }
  // After notify, so a bad key or value in the file fails here exactly as in a
  // real run; what is printed is what the run would use (defaults included).
  if (vm.count("print-config")) {
    std::cout << to_ini(vm) << std::flush;
    return false;
  }
  return true;
}

int run(const Tool& tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::cerr << "error: " << strip_backtrace(e.what()) << std::endl;
    return kExitUsage;
  } catch (const po::error& e) {
    std::cerr << "error: " << e.what() << " (see " << tool.name << " --help)" << std::endl;
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory (a value too large for this machine? check sizes such as "
                 "--batch-size, --frames, --input-size)"
              << std::endl;
    return kExitRuntime;
  } catch (const std::exception& e) {
    std::cerr << "error: " << strip_backtrace(e.what()) << std::endl;
    return kExitRuntime;
  }
}

namespace {

// Writes one value in its INI form.
template <typename T>
void put(std::ostream& os, const T& x) {
  os << x;
}
void put(std::ostream& os, bool x) { os << (x ? "true" : "false"); }
// The shortest text that reads back as the same value (`4e-4` stays 0.0004),
// so a recorded config reproduces the run exactly.
void put(std::ostream& os, double x) { os << shortest(x); }
void put(std::ostream& os, float x) { os << shortest(x); }

// Appends v's INI text(s) to `out` if it holds a T (a vector: one text per
// element, since a multi-valued option repeats its key in INI); returns whether it did.
template <typename T>
bool put_if(std::vector<std::string>& out, const boost::any& v) {
  const T* p = boost::any_cast<T>(&v);
  if (p) {
    std::ostringstream os;
    put(os, *p);
    out.push_back(os.str());
  }
  return p != nullptr;
}
template <typename T>
bool put_all_if(std::vector<std::string>& out, const boost::any& v) {
  const std::vector<T>* p = boost::any_cast<std::vector<T>>(&v);
  if (p)
    for (const T& x : *p) {
      std::ostringstream os;
      put(os, x);
      out.push_back(os.str());
    }
  return p != nullptr;
}

// The INI texts of one stored value; false for types that have no INI form.
bool format_value(const boost::any& v, std::vector<std::string>& out) {
  return put_if<std::string>(out, v) || put_if<int>(out, v) || put_if<int64_t>(out, v) ||
         put_if<uint64_t>(out, v) || put_if<unsigned>(out, v) || put_if<double>(out, v) ||
         put_if<float>(out, v) || put_if<bool>(out, v) || put_all_if<std::string>(out, v) ||
         put_all_if<int>(out, v);
}

}  // namespace

std::string to_ini(const po::variables_map& vm) {
  std::map<std::string, std::map<std::string, std::vector<std::string>>> sections;
  for (const auto& [name, value] : vm) {
    if (name == "help" || name == "version" || name == "config" || name == "print-config" ||
        value.empty())
      continue;
    std::vector<std::string> texts;
    if (!format_value(value.value(), texts)) continue;
    const auto dot = name.rfind('.');
    if (dot == std::string::npos)
      sections[""][name] = texts;
    else
      sections[name.substr(0, dot)][name.substr(dot + 1)] = texts;
  }
  std::ostringstream os;
  os << "# resolved configuration, written by evl " << EVL_VERSION << "\n";
  for (const auto& [section, kv] : sections) {
    if (!section.empty()) os << "\n[" << section << "]\n";
    for (const auto& [k, texts] : kv)
      for (const auto& v : texts) os << k << " = " << v << "\n";
  }
  return os.str();
}

}  // namespace evl::cli
