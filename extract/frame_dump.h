// Writes the frames of a view as PNG files with FFmpeg's PNG encoder (no extra
// image library), un-normalising with the config's mean/std, so a user sees
// exactly what the backbone sees. Not a general image writer.
#pragma once

#include <string>

#include <torch/torch.h>

#include "extract/views.h"

namespace evl {

// Writes `dir/<prefix>_v<view>_f<i>.png` for every frame of view.pixels
// (T, 3, S, S). Creates `dir` if needed. Throws evl::Error naming the file.
void dump_view_png(const ClipView& view, const SamplingConfig& cfg, const std::string& dir,
                   const std::string& prefix);

// Encodes one (H, W, 3) uint8 RGB image as PNG at `path`. Throws evl::Error.
void write_png(const torch::Tensor& rgb, const std::string& path);

}  // namespace evl
