// The view and feature settings shared by every tool that turns videos into
// decoder inputs: evl_extract (into a cache), evl_train_head --online (per
// batch) and evl_predict (per video). One struct, one flag table, one
// validator, so the three cannot drift apart (docs/ARCHITECTURE.md §4).
//
// Flag and INI names are a contract (configs/ and users' batch scripts use
// them): the table below is the only place they are spelled. Library code
// receives ViewSettings; only the mains see Boost.Program_options, through
// add_view_flags.
//
// Adding a sampling option: a field here, a row in view_flags() (view_settings.cpp),
// a check in validate_view_settings(), then use it in views.cpp.
#pragma once

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace evl {

struct ViewSettings {
  // sampling and views (official defaults: K400 8x16, one centre view)
  int64_t frames = 8;              // T
  int64_t stride = 16;             // dense sampling stride (ignored by tsn)
  std::string sampling = "dense";  // dense | tsn
  int64_t temporal_views = 1;      // test views along time
  int64_t spatial_views = 1;       // test crops: 1 (centre) or 3 (0, margin/2, margin)
  int64_t train_views = 0;         // K > 0: K augmented training views per clip
  bool flip = false;               // training views only (the official code never flips)
  bool photometric = false;        // training views only
  // Training views: timm RandAugment string or "none" (extract/rand_augment.h);
  // the official recipe's by default.
  std::string rand_augment = "rand-m7-n4-mstd0.5-inc1";
  // Fixed ops OP:MAGNITUDE[:SIGN],... for every view of any kind (test views
  // too); when set they replace the RandAugment draw. "" = none.
  std::string augment_ops;
  int64_t input_size = 0;  // 0: the backbone's native resolution
  // features
  std::string layers = "last4";    // "lastM", "all" or block indices "8,9,10,11" / "-4,-3,-2,-1"
  std::string precision = "auto";  // backbone compute: auto | fp32 | bf16 | fp16 (precision.h)
  std::string dtype = "fp16";      // storage dtype (or the rounding --online applies)

  bool tsn() const { return sampling == "tsn"; }
  // Views per clip: train_views when > 0, else temporal_views x spatial_views.
  int64_t views_per_clip() const;
  // What the views are augmented with, as caches and checkpoints record it:
  // "ops <augment_ops canonical>" when augment_ops is set, else for training
  // views the canonical RandAugment string ("none" when off), else "none".
  // Throws UsageError for a bad string.
  std::string augmentation() const;
};

// The tools that take view flags; each sees the rows of its mask.
enum class ViewTool : unsigned {
  kExtract = 1,  // evl_extract: every flag, with defaults
  kOnline = 2,   // evl_train_head --online: precision is --backbone-precision
  kPredict = 4,  // evl_predict: test-view flags without defaults (unset ones are
                 // resolved from the checkpoint's recorded cache, see predictor.h)
};

// The command-line name (without "--") of a ViewSettings flag for `tool`,
// e.g. flag_name("precision", kOnline) == "backbone-precision".
std::string flag_name(const std::string& flag, ViewTool tool);

// Registers the rows of `tool` bound to the fields of `s`, whose current
// values are the defaults shown: sampling/view flags into `views`, feature
// flags into `features` (the two may be the same description).
void add_view_flags(boost::program_options::options_description& views,
                    boost::program_options::options_description& features, ViewSettings& s,
                    ViewTool tool);

// The flags of `tool` (command-line names) that were set on the command line or
// in --config, rather than left at their defaults.
std::vector<std::string> given_view_flags(const boost::program_options::variables_map& vm,
                                          ViewTool tool);

// What the settings are for, which decides the view checks.
enum class ViewUse {
  kExtract,      // training views (K >= 1) or test views
  kOnlineTrain,  // training views, K >= 1
  kTestViews,    // test views only (online validation, evl_predict)
};

// Checks every setting, naming the flag as `tool` spells it. Throws UsageError.
void validate_view_settings(const ViewSettings& s, ViewUse use, ViewTool tool);

}  // namespace evl
