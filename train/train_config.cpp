// HeadConfig <-> "key = value" text, the [head] section a checkpoint records so
// that evl_eval can rebuild the exact model (heads and frames are not always
// recoverable from parameter shapes alone).
#include "train/train_config.h"

#include <sstream>

#include "common/check.h"

namespace evl {

std::string HeadConfig::to_ini() const {
  std::ostringstream os;
  os.precision(17);
  os << "[head]\n"
     << "width = " << width << "\nheads = " << heads << "\nmlp_ratio = " << mlp_ratio
     << "\ndecoder_layers = " << decoder_layers << "\nframes = " << frames << "\ngrid = " << grid
     << "\nnum_classes = " << num_classes << "\nmlp_dropout = " << mlp_dropout
     << "\ncls_dropout = " << cls_dropout << "\ntemporal_conv = " << temporal_conv
     << "\ntemporal_pos_embed = " << temporal_pos_embed
     << "\ntemporal_cross_attention = " << temporal_cross_attention << "\n";
  return os.str();
}

std::string run_ini(const std::string& name) { return "[run]\nname = " + name + "\n"; }

std::string run_name_from_ini(const std::string& text) {
  std::istringstream is(text);
  std::string line, section, name;
  while (std::getline(is, line)) {
    const auto b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
    if (b == std::string::npos) continue;
    line = line.substr(b, e - b + 1);
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
    } else if (section == "run" && line.rfind("name", 0) == 0) {
      const auto eq = line.find('=');
      if (eq != std::string::npos && line.find_first_not_of(" \t", 4) == eq) {
        const auto v = line.find_first_not_of(" \t", eq + 1);
        name = v == std::string::npos ? "" : line.substr(v);
      }
    }
  }
  return name;
}

HeadConfig HeadConfig::from_ini(const std::string& text, const std::string& where) {
  HeadConfig cfg;
  std::istringstream is(text);
  std::string line, section;
  while (std::getline(is, line)) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#' || line[first] == ';') continue;
    if (line[first] == '[') {
      section = line.substr(first + 1, line.find(']') - first - 1);
      continue;
    }
    if (section != "head") continue;
    const auto eq = line.find('=');
    EVL_CHECK(eq != std::string::npos, where, ": malformed config line '", line, "'");
    auto trim = [](std::string s) {
      const auto b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
      return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    try {
      if (key == "width")
        cfg.width = std::stoll(value);
      else if (key == "heads")
        cfg.heads = std::stoll(value);
      else if (key == "mlp_ratio")
        cfg.mlp_ratio = std::stod(value);
      else if (key == "decoder_layers")
        cfg.decoder_layers = std::stoll(value);
      else if (key == "frames")
        cfg.frames = std::stoll(value);
      else if (key == "grid")
        cfg.grid = std::stoll(value);
      else if (key == "num_classes")
        cfg.num_classes = std::stoll(value);
      else if (key == "mlp_dropout")
        cfg.mlp_dropout = std::stod(value);
      else if (key == "cls_dropout")
        cfg.cls_dropout = std::stod(value);
      else if (key == "temporal_conv")
        cfg.temporal_conv = std::stoi(value) != 0;
      else if (key == "temporal_pos_embed")
        cfg.temporal_pos_embed = std::stoi(value) != 0;
      else if (key == "temporal_cross_attention")
        cfg.temporal_cross_attention = std::stoi(value) != 0;
    } catch (const std::exception&) {
      EVL_THROW(Error, where, ": bad value '", value, "' for head config key '", key, "'");
    }
  }
  return cfg;
}

}  // namespace evl
