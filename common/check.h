// Error types and check helpers used by every evl library.
// Libraries throw; only main() turns exceptions into exit codes (see cli.h):
//   evl::UsageError -> 2 (bad flags, bad config), any other exception -> 1.
// Messages name the thing that is wrong: the file, the key, the video, the line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace evl {

// A runtime failure: bad input file, I/O error, numeric failure.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// The user asked for something that cannot be done as asked (flags, config).
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Builds a message from streamable pieces: evl::str("shard '", name, "': ", n).
template <typename... Args>
std::string str(Args&&... args) {
  return detail::concat(std::forward<Args>(args)...);
}

}  // namespace evl

// EVL_CHECK(cond, pieces...): throws evl::Error with the concatenated pieces.
#define EVL_CHECK(cond, ...)                                  \
  do {                                                        \
    if (!(cond)) throw ::evl::Error(::evl::str(__VA_ARGS__)); \
  } while (0)

// EVL_CHECK_USAGE(cond, pieces...): as EVL_CHECK, but a usage error (exit 2).
#define EVL_CHECK_USAGE(cond, ...)                                 \
  do {                                                             \
    if (!(cond)) throw ::evl::UsageError(::evl::str(__VA_ARGS__)); \
  } while (0)

// EVL_THROW(ErrorType, pieces...): throw a specific error type with a message.
#define EVL_THROW(Type, ...) throw Type(::evl::str(__VA_ARGS__))
