// Progress reporting for long work (extraction, training, evaluation).
// On a terminal: one redrawn line with a bar, count, rate and ETA. Elsewhere
// (batch logs, CI, Slurm output): a plain line every EVL_PROGRESS_INTERVAL
// seconds (default 10) and one at the end. EVL_PROGRESS=0 silences it.
// Thread-safe: advance() may be called from any thread. Writes to stderr.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace evl {

class Progress {
 public:
  // `total` <= 0 means unknown (no bar, no ETA). `unit` names what is counted.
  Progress(std::string label, int64_t total, std::string unit = "items");
  ~Progress();  // calls finish()
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  // Free text shown after the rate, e.g. "loss 0.693".
  void set_note(std::string note);
  // Prints the final line once; later calls do nothing.
  void finish();

  int64_t done() const;
  double elapsed_seconds() const;

 private:
  void draw_locked(bool final_line);

  std::string label_, unit_, note_;
  int64_t total_ = 0, done_ = 0;
  bool tty_ = false, enabled_ = true, finished_ = false;
  double interval_s_ = 10.0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  mutable std::mutex mu_;
};

// Formats seconds as H:MM:SS or M:SS.
std::string format_duration(double seconds);

}  // namespace evl
