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

// An exception's message fit for a user: LibTorch's backtrace ("Exception
// raised from ... frame #0 ...") cut off (strip_backtrace); for one row of a
// TSV also newlines and tabs turned into spaces, at most `max_chars` (one_line).
inline std::string strip_backtrace(const std::string& what) {
  std::string s = what.substr(0, what.find("Exception raised from "));
  s = s.substr(0, s.find("\nframe #0"));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}
inline std::string one_line(const std::string& what, size_t max_chars = 2000) {
  std::string s = strip_backtrace(what);
  for (char& c : s)
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  if (s.size() > max_chars) s = s.substr(0, max_chars) + " ...";
  return s;
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
