// The typed configuration of an extraction job (evl_extract). Defaults here are
// the single source of truth: extract_main.cpp binds its flags to these fields
// (the view and feature flags through view_settings.h's table). Library code
// receives this struct and never sees Boost.Program_options.
#pragma once

#include <cstdint>
#include <string>

#include "extract/view_settings.h"

namespace evl {

struct ExtractConfig {
  // inputs and outputs
  std::string list;      // dataset list: `<path> <label> [start end]` or Kinetics CSV
  std::string root;      // prefix for relative paths in the list
  std::string labels;    // label map for class-name labels (read_label_map; "" = none)
  std::string backbone;  // OpenAI CLIP .pt or Hugging Face .safetensors
  std::string out;       // cache directory
  std::string failures;  // TSV of videos that failed (default <out>/failures[-<shard>].tsv)
  int64_t limit = 0;     // process only the first N clips of the list (0: all)

  // sampling, views and features (shared with --online and evl_predict)
  ViewSettings views;
  uint64_t seed = 0;         // training views: a view is reproducible from (seed, clip, view)
  std::string store = "qk";  // qk | compact
  bool save_inputs = false;  // also store each view's preprocessed frames
  std::string dump_frames;   // directory for PNGs of each view ("" = off)

  // execution
  std::string device = "cpu";  // cpu | cuda | cuda:N
  int threads = 0;             // 0: all cores
  int64_t batch_size = 4;      // clip-views per backbone forward
  int shard_index = -1;        // -1: SLURM_ARRAY_TASK_ID / SLURM_PROCID, else 0
  int num_shards = -1;         // -1: SLURM_ARRAY_TASK_COUNT / SLURM_NTASKS, else 1
  int64_t max_failures = -1;   // abort when more videos than this fail (-1: never)

  // memory bound per video: decoded frames + two float copies (SamplingConfig, views.h)
  int64_t max_decoded_mib = 4096;
};

}  // namespace evl
