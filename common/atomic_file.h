// Atomic, durable file writes: the one way evl writes a file that a reader or a
// rerun trusts (manifests, failures lists, checkpoints, score files, configs,
// JSON summaries). A reader sees the old file or the new one, never a part of
// either; a crash at any point leaves at worst a stray `<name>.tmp.<pid>.<n>`
// beside the target. Appending logs (metrics.jsonl) are not written this way:
// their lines are flushed one at a time and a torn last line is tolerated.
#pragma once

#include <string>
#include <string_view>

namespace evl {

// Writes `data` to `path`: a temporary file in the same folder, fsync, rename
// over `path`, fsync of the folder. Throws evl::Error naming `path` and the
// system's reason (e.g. "No space left on device"); the old file is untouched.
void write_file_atomic(const std::string& path, std::string_view data);

// For writers that create the file themselves (HDF5, a copy of another file):
// write to temp_path(), then commit(). Destroyed without commit(), the
// temporary file is removed and `path` is untouched. Not copyable.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  // fsync of the temporary file, rename over path(), fsync of the folder.
  // Throws evl::Error naming path() (the temporary file is then removed).
  void commit();

 private:
  std::string path_, temp_;
  bool committed_ = false;
};

// Reads a whole file. Throws evl::Error naming `path` when it is missing,
// not a regular file (a directory, a FIFO) or unreadable.
std::string read_file(const std::string& path);

}  // namespace evl
