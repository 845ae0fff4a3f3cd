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
  std::string path;       // as written in the list
  std::string id;         // the video id (records, score files): `path`, or for a path the
                          // list holds with several trimming windows `path@<start>-<end>`
                          // (start and end as written in the list)
  int64_t label = -1;     // -1: unlabelled
  double start_sec = -1;  // trimming; -1: from the start
  double end_sec = -1;    // -1: to the end
  int64_t line = 0;       // 1-based line in the list file
};

// Reads a list. A file whose first line starts with "label,youtube_id" or
// "youtube_id," is read as Kinetics CSV. Labels are class indices or class
// names: a name maps through `label_names` (index = class; spaces and
// underscores equivalent, surrounding quotes dropped; e.g. from read_label_map),
// and without label names a name is an error naming the file, the line and
// --labels. CSV clips resolve to `<youtube_id>_<start:06d>_<end:06d>.mp4` (the
// Kinetics downloader's naming; already trimmed, so start/end are not set).
// Throws evl::Error naming the file and line for a malformed line, a bad or
// unknown label, or a duplicate clip (the same path and trimming window twice:
// both lines are named). The same path with different windows is several
// clips, each with its own id (ClipEntry::id).
std::vector<ClipEntry> read_dataset_list(const std::string& list_path,
                                         const std::vector<std::string>& label_names = {});

// A label map for --labels: one class name per line (line n, 0-based, is
// class n: the format of labels/kinetics400.txt, classInd-style lists without
// numbers), or `<id>: <name>` / `<id>,<name>` lines with explicit 0-based ids
// (AVA's label_map.txt; an `id,name` header line is skipped). Returns the
// names indexed by class id ("" for ids the file skips). Throws evl::Error
// naming the file and line for an empty name, a bad or duplicate id, a
// duplicate name, or a mix of the two forms.
std::vector<std::string> read_label_map(const std::string& path);

// `root`/path for a relative path (root may be empty); absolute paths unchanged.
std::string resolve_video_path(const ClipEntry& entry, const std::string& root);

}  // namespace evl
