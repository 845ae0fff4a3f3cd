// Implements the shared CLI pattern (cli.h): parsing with --config/--help/--version/--print-config,
// exception-to-exit-code mapping, and dumping the resolved config as INI.
#include "common/cli.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "evl/version.h"

namespace evl::cli {

namespace fs = std::filesystem;

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

  try {
    po::command_line_parser parser(argc, argv);
    // No prefix guessing: `--thread 4` must not silently mean `--threads 4`.
    parser.options(all).style(po::command_line_style::default_style &
                              ~po::command_line_style::allow_guessing);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << tool.name << " " << EVL_VERSION << " - " << tool.synopsis << "\n\n"
                << "usage: " << tool.usage << "\n\n"
                << all << std::endl;
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
      std::ifstream in(path);
      if (!in) throw UsageError(str("config file '", path, "': cannot be opened"));
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

// Writes one value in its INI form; multi-valued options repeat the key in INI,
// so vectors are joined with spaces for one line.
template <typename T>
void put(std::ostream& os, const T& x) {
  os << x;
}
void put(std::ostream& os, bool x) { os << (x ? "true" : "false"); }
template <typename T>
void put(std::ostream& os, const std::vector<T>& xs) {
  for (size_t i = 0; i < xs.size(); ++i) os << (i ? " " : "") << xs[i];
}

// Writes v if it holds a T; returns whether it did.
template <typename T>
bool put_if(std::ostream& os, const boost::any& v) {
  const T* p = boost::any_cast<T>(&v);
  if (p) put(os, *p);
  return p != nullptr;
}

// Formats one stored value; returns false for types that have no INI form.
bool format_value(const boost::any& v, std::string& out) {
  std::ostringstream os;
  os.precision(9);
  const bool known = put_if<std::string>(os, v) || put_if<int>(os, v) || put_if<int64_t>(os, v) ||
                     put_if<uint64_t>(os, v) || put_if<unsigned>(os, v) || put_if<double>(os, v) ||
                     put_if<float>(os, v) || put_if<bool>(os, v) ||
                     put_if<std::vector<std::string>>(os, v) || put_if<std::vector<int>>(os, v);
  if (!known) return false;
  out = os.str();
  return true;
}

}  // namespace

std::string to_ini(const po::variables_map& vm) {
  std::map<std::string, std::map<std::string, std::string>> sections;
  for (const auto& [name, value] : vm) {
    if (name == "help" || name == "version" || name == "config" || name == "print-config" ||
        value.empty())
      continue;
    std::string text;
    if (!format_value(value.value(), text)) continue;
    const auto dot = name.rfind('.');
    if (dot == std::string::npos)
      sections[""][name] = text;
    else
      sections[name.substr(0, dot)][name.substr(dot + 1)] = text;
  }
  std::ostringstream os;
  os << "# resolved configuration, written by evl " << EVL_VERSION << "\n";
  for (const auto& [section, kv] : sections) {
    if (!section.empty()) os << "\n[" << section << "]\n";
    for (const auto& [k, v] : kv) os << k << " = " << v << "\n";
  }
  return os.str();
}

}  // namespace evl::cli
