// The typed configuration of an extraction job (evl_extract). Defaults here are
// the single source of truth: extract_main.cpp binds its flags to these fields.
// Library code receives this struct and never sees Boost.Program_options.
#pragma once

#include <cstdint>
#include <string>

namespace evl {

struct ExtractConfig {
  // inputs and outputs
  std::string list;      // dataset list: `<path> <label> [start end]` or Kinetics CSV
  std::string root;      // prefix for relative paths in the list
  std::string backbone;  // OpenAI CLIP .pt or Hugging Face .safetensors
  std::string out;       // cache directory
  std::string failures;  // TSV of videos that failed (default <out>/failures[-<shard>].tsv)

  // sampling and views (official defaults: K400 8x16, one centre view)
  int64_t frames = 8;
  int64_t stride = 16;
  std::string sampling = "dense";  // dense | tsn
  int64_t temporal_views = 1;
  int64_t spatial_views = 1;
  int64_t train_views = 0;   // K > 0: K augmented training views per clip instead of test views
  bool flip = false;         // training views only (the official code never flips)
  bool photometric = false;  // training views only
  int64_t input_size = 0;    // 0: the backbone's native resolution
  uint64_t seed = 0;

  // features
  std::string layers = "last4";    // "lastM" or explicit block indices "8,9,10,11" / "-4,-3,-2,-1"
  std::string store = "qk";        // qk | compact
  std::string dtype = "fp16";      // fp16 | bf16 | fp32 (storage)
  std::string precision = "auto";  // backbone compute: auto | fp32 | bf16 | fp16
  bool save_inputs = false;        // also store each view's preprocessed frames
  std::string dump_frames;         // directory for PNGs of each view ("" = off)

  // execution
  std::string device = "cpu";  // cpu | cuda | cuda:N
  int threads = 0;             // 0: all cores
  int64_t batch_size = 4;      // clip-views per backbone forward
  int shard_index = -1;        // -1: SLURM_ARRAY_TASK_ID / SLURM_PROCID, else 0
  int num_shards = -1;         // -1: SLURM_ARRAY_TASK_COUNT / SLURM_NTASKS, else 1
  int64_t max_failures = -1;   // abort when more videos than this fail (-1: never)
  int64_t limit = 0;           // process only the first N clips of the list (0: all)
};

}  // namespace evl
