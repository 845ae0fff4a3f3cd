// TensorBoard event files for a training run: the records TensorBoard reads
// (`events.out.tfevents.*`: TFRecord framing, masked CRC32C, `Event` protocol
// buffers holding a `Summary` of scalar values). A hand encoder of exactly the
// fields needed, with the field numbers of TensorFlow's event.proto and
// summary.proto (written out in tests/train/tensorboard_event.proto, which the
// test decodes them with); no protobuf library, no LibTorch. Scalars only: no
// histograms, images, graphs or hparams.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace evl {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor
// ~0): crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t n);
// TFRecord's masked form: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

// One event file in a run directory. Every record is flushed as it is written,
// so TensorBoard (and a crash) sees each step; a resumed run writes a new file
// beside the old ones and TensorBoard merges them by step. Not thread-safe.
class EventWriter {
 public:
  // Creates <dir>/events.out.tfevents.<unix seconds>.<host>.<pid> and writes
  // the first event (file_version "brain.Event:2"). Throws evl::Error naming
  // the file when it cannot be created.
  explicit EventWriter(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // One Event at `step` (wall time now) whose Summary holds a simple_value
  // (float32, as TensorBoard stores scalars) per (tag, value). Throws
  // evl::Error naming the file on a write error.
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace evl
