// The TensorBoard event writer (tensorboard.h): protobuf wire format by hand
// (varints, 64-bit and 32-bit little-endian fields, length-delimited
// messages) for Event { double wall_time = 1; int64 step = 2; string
// file_version = 3; Summary summary = 5; } and Summary { repeated Value value
// = 1; } with Value { string tag = 1; float simple_value = 2; }.
#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/check.h"

namespace evl {

namespace {

std::array<uint32_t, 256> crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

// Protobuf wire format: tag = field << 3 | wire type (0 varint, 1 64-bit,
// 2 length-delimited, 5 32-bit).
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void tag(std::string& out, int field, int wire) { varint(out, uint64_t(field) << 3 | wire); }
template <typename T>
void fixed(std::string& out, T v) {  // little-endian (x86-64 and aarch64 evl targets)
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& s) {
  tag(out, field, 2);
  varint(out, s.size());
  out += s;
}

std::string event_header(int64_t step) {
  std::string e;
  tag(e, 1, 1);  // wall_time: seconds since the epoch
  fixed(e,
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  tag(e, 2, 0);  // step (int64 as a two's-complement varint)
  varint(e, static_cast<uint64_t>(step));
  return e;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

EventWriter::EventWriter(const std::string& dir) {
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(secs) + "." +
                                         host + "." + std::to_string(getpid())))
              .string();
  file_ = std::fopen(path_.c_str(), "ab");
  EVL_CHECK(file_, "TensorBoard event file '", path_, "': cannot create: ", std::strerror(errno));
  std::string e = event_header(0);
  bytes_field(e, 3, "brain.Event:2");  // file_version
  write_record(e);
}

EventWriter::~EventWriter() {
  if (file_) std::fclose(file_);
}

void EventWriter::add_scalars(int64_t step,
                              const std::vector<std::pair<std::string, double>>& values) {
  std::string summary;
  for (const auto& [name, v] : values) {
    std::string value;
    bytes_field(value, 1, name);  // tag
    tag(value, 2, 5);             // simple_value (float)
    fixed(value, static_cast<float>(v));
    bytes_field(summary, 1, value);  // Summary.value
  }
  std::string e = event_header(step);
  bytes_field(e, 5, summary);  // Event.summary
  write_record(e);
}

// TFRecord: uint64 length, uint32 masked_crc32c(length bytes), data, uint32
// masked_crc32c(data), all little-endian.
void EventWriter::write_record(const std::string& data) {
  std::string rec;
  fixed(rec, static_cast<uint64_t>(data.size()));
  const uint32_t len_crc = masked_crc32c(rec.data(), 8);
  fixed(rec, len_crc);
  rec += data;
  fixed(rec, masked_crc32c(data.data(), data.size()));
  EVL_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size() && std::fflush(file_) == 0,
            "TensorBoard event file '", path_, "': write failed: ", std::strerror(errno));
}

}  // namespace evl
