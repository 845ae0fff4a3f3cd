// Implements atomic_file.h with POSIX calls (open/write/fsync/rename), because
// std::ofstream cannot fsync and std::filesystem::rename does not sync the folder.
#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"

namespace evl {

namespace fs = std::filesystem;

namespace {

// Unique per process and call, so concurrent writers (threads, Slurm tasks on a
// shared folder) never share a temporary file.
std::string temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

void fsync_path(const std::string& path, int flags, const std::string& what) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  EVL_CHECK(fd >= 0, "cannot open '", path, "' to sync ", what, ": ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems refuse fsync on folders (EINVAL): the rename still happened.
  EVL_CHECK(rc == 0 || (err == EINVAL && (flags & O_DIRECTORY)), "cannot sync ", what, " '", path,
            "': ", std::strerror(err));
}

void commit_temp(const std::string& temp, const std::string& path) {
  try {
    fsync_path(temp, O_RDONLY, "file");
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    EVL_THROW(Error, "cannot write '", path, "': renaming '", temp,
              "' failed: ", std::strerror(err));
  }
  fsync_path(folder_of(path), O_RDONLY | O_DIRECTORY, "folder");
}

}  // namespace

void write_file_atomic(const std::string& path, std::string_view data) {
  const std::string temp = temp_name(path);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EVL_CHECK(fd >= 0, "cannot write '", path, "': cannot create '", temp,
            "': ", std::strerror(errno));
  size_t done = 0;
  int err = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(temp.c_str());
    EVL_THROW(Error, "cannot write '", path, "': ", std::strerror(err));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(temp.c_str());
    EVL_THROW(Error, "cannot write '", path, "': renaming '", temp,
              "' failed: ", std::strerror(err));
  }
  fsync_path(folder_of(path), O_RDONLY | O_DIRECTORY, "folder");
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), temp_(temp_name(path_)) {}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicFile::commit() {
  EVL_CHECK(!committed_, "'", path_, "' was already committed");
  struct stat st {};
  EVL_CHECK(::stat(temp_.c_str(), &st) == 0, "cannot write '", path_, "': the temporary file '",
            temp_, "' was not written");
  committed_ = true;  // commit_temp removes the temporary file itself on failure
  commit_temp(temp_, path_);
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  EVL_CHECK(!ec && fs::exists(status), "cannot read '", path, "': no such file");
  EVL_CHECK(fs::is_regular_file(status), "cannot read '", path, "': not a regular file",
            fs::is_directory(status) ? " (it is a directory)" : "");
  std::ifstream in(path, std::ios::binary);
  EVL_CHECK(in, "cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  EVL_CHECK(!in.bad(), "cannot read '", path, "'");
  return ss.str();
}

}  // namespace evl
