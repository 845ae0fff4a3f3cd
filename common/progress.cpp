// Progress reporter (progress.h): redrawn bar on a TTY, periodic lines otherwise.
#include "common/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace evl {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  tty_ = isatty(fileno(stderr)) != 0;
  if (const char* e = std::getenv("EVL_PROGRESS")) enabled_ = std::string(e) != "0";
  if (const char* e = std::getenv("EVL_PROGRESS_INTERVAL")) interval_s_ = std::atof(e);
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if ((tty_ && since >= 0.1) || (!tty_ && since >= interval_s_)) {
    last_draw_ = now;
    draw_locked(false);
  }
}

void Progress::set_note(std::string note) {
  std::lock_guard<std::mutex> lock(mu_);
  note_ = std::move(note);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw_locked(true);
}

int64_t Progress::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::draw_locked(bool final_line) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  std::string line = label_ + " ";
  char buf[160];
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    if (tty_) {
      constexpr int kWidth = 24;
      const int filled = static_cast<int>(frac * kWidth);
      line += "[" + std::string(filled, '#') + std::string(kWidth - filled, ' ') + "] ";
    }
    const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
    std::snprintf(buf, sizeof buf, "%lld/%lld %s (%.0f%%) %.2f %s/s %s %s",
                  static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
                  frac * 100.0, rate, unit_.c_str(), final_line ? "took" : "ETA",
                  format_duration(final_line ? elapsed : eta).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%lld %s %.2f %s/s elapsed %s", static_cast<long long>(done_),
                  unit_.c_str(), rate, unit_.c_str(), format_duration(elapsed).c_str());
  }
  line += buf;
  if (!note_.empty()) line += "  " + note_;
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace evl
