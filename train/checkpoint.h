// Head checkpoints. Writes `{'model': {official key: tensor}, 'optimizer':
// {...}, 'next_step': int, 'config': ini text, 'format': 'evl-head',
// 'format_version': 1}` with torch::pickle_save, so Python's torch.load reads
// it. Reads those and official EVL .pth files (torch.save of a DDP state dict:
// an OrderedDict, keys prefixed 'module.', bare or under 'model') through our
// own pickle reader. The frozen backbone is never part of a checkpoint.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "train/head.h"
#include "train/mixed_precision.h"
#include "train/train_config.h"

namespace evl {

inline constexpr int64_t kCheckpointVersion = 1;

using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

// What an evl checkpoint records beside its parameters ("" / 0 when absent:
// official files and checkpoints of evl before these were recorded).
//   provenance       the training features' manifest (cache/cache.h Manifest
//                    JSON, no shards), `layers` = the blocks the head reads
//   test_provenance  the same for the validation cache (its test views,
//                    sampling and normalisation: what evl_predict uses)
//   total_steps      --steps of the run (the cosine schedule's length)
struct CheckpointMeta {
  std::string provenance, test_provenance;
  int64_t total_steps = 0;
};

// The parameters of a checkpoint file (evl or official), 'module.' stripped.
// Also returns its config text ("" for official files) and recorded meta.
// Throws evl::Error naming the file when it holds no state dict of tensors or
// an entry has the wrong type.
StateDict read_state_dict(const std::string& path, std::string* config_ini = nullptr,
                          CheckpointMeta* meta = nullptr);

// The head architecture implied by a state dict's shapes: width, layers,
// frames, grid, classes and which temporal modules exist. Heads are not
// stored by the official code: `heads_hint` (0: width / 64, as every official
// preset). Throws evl::Error naming `where` if the keys are not an EVL head.
HeadConfig infer_head_config(const StateDict& state, const std::string& where,
                             int64_t heads_hint = 0);

struct LoadedHead {
  EvlHead head{nullptr};  // in eval mode, on CPU
  HeadConfig config;
};

// Loads an evl or official checkpoint into a new head (the recorded [head]
// config when present, else inferred from shapes). For evl_eval/evl_predict.
LoadedHead load_head_checkpoint(const std::string& path, int64_t heads_hint = 0);

// Training state beside the parameters: AdamW moments per parameter name and,
// with an enabled scaler, 'loss_scaler': {'scale', 'growth_tracker'}.
// Writes atomically and durably (common/atomic_file.h: temp file, fsync, rename).
void save_training_checkpoint(const std::string& path, const EvlHead& head,
                              torch::optim::AdamW& optimizer, int64_t next_step,
                              const std::string& config_ini, const GradScaler* scaler = nullptr,
                              const CheckpointMeta& meta = {});

// Restores parameters, AdamW state and (when both the file and `scaler` have
// one) the loss scale from an evl checkpoint written by
// save_training_checkpoint into an existing head/optimizer of the same shape.
// Returns next_step (checked >= 0). Throws evl::Error naming the file and the
// entry on any mismatch or wrong type; `meta` (may be null) receives the meta.
int64_t load_training_checkpoint(const std::string& path, EvlHead& head,
                                 torch::optim::AdamW& optimizer, GradScaler* scaler = nullptr,
                                 CheckpointMeta* meta = nullptr);

}  // namespace evl
