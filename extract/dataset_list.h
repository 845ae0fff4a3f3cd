// Dataset lists: the official `<path> <label> [<start_sec> <end_sec>]` format
// (whitespace separated, paths relative to --root, '#' comments and blank lines
// ignored) and Kinetics CSV annotations (`label,youtube_id,time_start,time_end,split`).
// Paths containing whitespace are not supported in the plain format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace evl {

struct ClipEntry {
  std::string path;       // as written in the list (the video id)
  int64_t label = -1;     // -1: unlabelled
  double start_sec = -1;  // trimming; -1: from the start
  double end_sec = -1;    // -1: to the end
  int64_t line = 0;       // 1-based line in the list file
};

// Reads a list. A file whose first line starts with "label,youtube_id" or
// "youtube_id," is read as Kinetics CSV; its class names map to indices through
// `label_names` (one per class, spaces and underscores equivalent; e.g. from
// read_label_names in evaluate/metrics.h) or, when
// empty, through the sorted set of names in the file. CSV clips resolve to
// `<youtube_id>_<start:06d>_<end:06d>.mp4` (the Kinetics downloader's naming;
// already trimmed, so start/end are not set). Throws evl::Error naming the file
// and line for a malformed line, a bad label, or a duplicate clip.
std::vector<ClipEntry> read_dataset_list(const std::string& list_path,
                                         const std::vector<std::string>& label_names = {});

// `root`/path for a relative path (root may be empty); absolute paths unchanged.
std::string resolve_video_path(const ClipEntry& entry, const std::string& root);

}  // namespace evl
