// The flag table and validator of view_settings.h. Each row is one flag: its
// name, its field, its help text, the tools that take it, and the group.
#include "extract/view_settings.h"

#include <variant>

#include "cache/cache.h"
#include "common/check.h"
#include "common/precision.h"
#include "extract/rand_augment.h"

namespace po = boost::program_options;

namespace evl {

namespace {

constexpr unsigned kExtract = static_cast<unsigned>(ViewTool::kExtract);
constexpr unsigned kOnline = static_cast<unsigned>(ViewTool::kOnline);
constexpr unsigned kPredict = static_cast<unsigned>(ViewTool::kPredict);
constexpr unsigned kAll = kExtract | kOnline | kPredict;

using Field =
    std::variant<int64_t ViewSettings::*, bool ViewSettings::*, std::string ViewSettings::*>;
enum class Group { kViews, kFeatures };

struct ViewFlag {
  const char* name;
  Field field;
  const char* help;
  unsigned tools;
  Group group;
  const char* online_name = nullptr;  // the name under evl_train_head --online, when it differs
};

// The one table of view and feature flags.
const std::vector<ViewFlag>& view_flags() {
  static const std::vector<ViewFlag> rows = {
      {"frames", &ViewSettings::frames, "frames per clip (T)", kAll, Group::kViews},
      {"stride", &ViewSettings::stride, "frame stride of dense sampling", kAll, Group::kViews},
      {"sampling", &ViewSettings::sampling, "dense | tsn", kAll, Group::kViews},
      {"temporal-views", &ViewSettings::temporal_views, "test views along time", kAll,
       Group::kViews},
      {"spatial-views", &ViewSettings::spatial_views, "test crops: 1 (centre) or 3", kAll,
       Group::kViews},
      {"train-views", &ViewSettings::train_views,
       "K augmented training views per clip (evl_extract: instead of test views)",
       kExtract | kOnline, Group::kViews},
      {"flip", &ViewSettings::flip, "random horizontal flip in training views", kExtract | kOnline,
       Group::kViews},
      {"photometric", &ViewSettings::photometric, "photometric augmentation in training views",
       kExtract | kOnline, Group::kViews},
      {"rand-augment", &ViewSettings::rand_augment,
       "RandAugment of training views: none | rand-mM-nN[-mstdS][-inc1] (timm's strings)",
       kExtract | kOnline, Group::kViews},
      {"augment-ops", &ViewSettings::augment_ops,
       "fixed ops OP:MAGNITUDE[:SIGN],... (timm names, magnitude 0-10) on every view, test views "
       "too; replaces --rand-augment",
       kExtract | kOnline, Group::kViews},
      {"input-size", &ViewSettings::input_size, "input resolution (0: the backbone's native)", kAll,
       Group::kViews},
      {"layers", &ViewSettings::layers,
       "blocks feeding the decoder: lastM or indices like 8,9,10,11 or -4,-3,-2,-1", kAll,
       Group::kFeatures},
      {"precision", &ViewSettings::precision,
       "backbone compute: auto (fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16", kAll,
       Group::kFeatures, "backbone-precision"},
      {"dtype", &ViewSettings::dtype,
       "feature storage dtype (--online: the rounding a cache would apply): fp16 | bf16 | fp32 | "
       "int8 | fp8 (int8/fp8: 1-byte codes, an fp16 scale per 64 channels)",
       kExtract | kOnline, Group::kFeatures},
  };
  return rows;
}

const char* name_for(const ViewFlag& f, ViewTool tool) {
  return tool == ViewTool::kOnline && f.online_name ? f.online_name : f.name;
}

bool takes(const ViewFlag& f, ViewTool tool) { return f.tools & static_cast<unsigned>(tool); }

}  // namespace

int64_t ViewSettings::views_per_clip() const {
  return train_views > 0 ? train_views : temporal_views * spatial_views;
}

std::string ViewSettings::augmentation() const {
  const auto ops = augment::parse_augment_ops(augment_ops, "--augment-ops");
  if (!ops.empty()) return "ops " + augment::augment_ops_text(ops);
  if (train_views <= 0) return "none";
  return augment::parse_rand_augment(rand_augment, "--rand-augment").text;
}

std::string flag_name(const std::string& flag, ViewTool tool) {
  for (const auto& f : view_flags())
    if (flag == f.name) return name_for(f, tool);
  return flag;
}

void add_view_flags(po::options_description& views, po::options_description& features,
                    ViewSettings& s, ViewTool tool) {
  const bool defaults = tool != ViewTool::kPredict;
  for (const auto& f : view_flags()) {
    if (!takes(f, tool)) continue;
    auto& group = f.group == Group::kViews ? views : features;
    auto add = group.add_options();
    std::visit(
        [&](auto member) {
          auto& value = s.*member;
          using T = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<T, bool>) {
            add(name_for(f, tool), po::bool_switch(&value), f.help);
          } else {
            auto* semantic = po::value(&value);
            if (defaults) semantic->default_value(value);
            add(name_for(f, tool), semantic, f.help);
          }
        },
        f.field);
  }
}

std::vector<std::string> given_view_flags(const po::variables_map& vm, ViewTool tool) {
  std::vector<std::string> out;
  for (const auto& f : view_flags()) {
    const std::string name = name_for(f, tool);
    if (takes(f, tool) && vm.count(name) && !vm[name].defaulted()) out.push_back(name);
  }
  return out;
}

void validate_view_settings(const ViewSettings& s, ViewUse use, ViewTool tool) {
  auto flag = [&](const char* name) { return "--" + flag_name(name, tool); };
  // Upper bounds far above any real setting: past them a value is a typo that
  // would end in an allocation failure deep inside, not a usage error.
  EVL_CHECK_USAGE(s.frames >= 1 && s.frames <= 4096, flag("frames"), " must be in [1, 4096], got ",
                  s.frames);
  EVL_CHECK_USAGE(s.sampling == "dense" || s.sampling == "tsn", flag("sampling"),
                  " must be dense or tsn, got '", s.sampling, "'");
  EVL_CHECK_USAGE(s.tsn() || (s.stride >= 1 && s.stride <= 65536), flag("stride"),
                  " must be in [1, 65536], got ", s.stride);
  EVL_CHECK_USAGE(s.temporal_views >= 1 && s.temporal_views <= 1024, flag("temporal-views"),
                  " must be in [1, 1024], got ", s.temporal_views);
  EVL_CHECK_USAGE(s.spatial_views >= 1, flag("spatial-views"), " must be >= 1");
  EVL_CHECK_USAGE(s.spatial_views == 1 || s.spatial_views == 3, flag("spatial-views"),
                  " must be 1 or 3 (official crops), got ", s.spatial_views);
  if (use == ViewUse::kOnlineTrain)
    EVL_CHECK_USAGE(s.train_views >= 1 && s.train_views <= 1024, flag("train-views"),
                    " must be in [1, 1024] for online training, got ", s.train_views);
  else
    EVL_CHECK_USAGE(s.train_views >= 0 && s.train_views <= 1024, flag("train-views"),
                    " must be in [0, 1024], got ", s.train_views);
  EVL_CHECK_USAGE(s.input_size >= 0 && s.input_size <= 4096, flag("input-size"),
                  " must be in [0, 4096] (0: native), got ", s.input_size);
  EVL_CHECK_USAGE(!s.layers.empty(), flag("layers"), " is empty");
  if (s.precision != "auto") parse_precision(s.precision, flag("precision"));
  augment::parse_rand_augment(s.rand_augment, flag("rand-augment"));
  augment::parse_augment_ops(s.augment_ops, flag("augment-ops"));
  try {
    cache::parse_dtype(s.dtype);
  } catch (const UsageError& e) {
    EVL_THROW(UsageError, flag("dtype"), ": ", e.what());
  }
}

}  // namespace evl
