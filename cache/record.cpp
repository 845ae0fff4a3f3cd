// The record encoding of cache/FORMAT.md: header, array table, 64-byte aligned
// array data and a trailing checksum (XXH3-64 from version 2, XXH64 in
// version 1, cache/checksum.h). Decoding checks everything before trusting
// it and returns views into the caller's bytes (no copy). Also dtype names,
// keys, shard names, and fp16/bf16 <-> float32 conversion. Quantized payloads
// are built and read through cache/quantize.h.
#include <cstring>
#include <iomanip>
#include <sstream>

#include "cache/cache.h"
#include "cache/checksum.h"
#include "cache/quantize.h"
#include "common/check.h"

namespace evl::cache {

namespace {

constexpr char kMagic[4] = {'E', 'V', 'L', 'R'};
constexpr size_t kFixedHeader = 56;  // bytes before the strings
constexpr size_t kAlign = 64;
constexpr size_t kMaxDims = 8;
constexpr uint8_t kMaxDTypeCode = 9;
constexpr uint32_t kFirstQuantizedVersion = 2;  // int8/fp8 (codes 4, 5) appeared in version 2
constexpr uint32_t kFirstOutlierVersion = 3;    // with outlier channels (codes 6, 7): version 3
constexpr uint32_t kFirstCenterVersion = 4;     // their centers (codes 8, 9): version 4

// The first format version that has dtype `code` (1 for fp16/bf16/fp32).
uint32_t first_version_of(DType dtype) {
  if (has_column_centers(dtype)) return kFirstCenterVersion;
  if (has_outlier_channels(dtype)) return kFirstOutlierVersion;
  return is_quantized(dtype) ? kFirstQuantizedVersion : 1;
}

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

template <typename T>
void put(std::vector<uint8_t>& out, size_t offset, T value) {
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF32:
      return 4;
    case DType::kI8:
    case DType::kFP8:
    case DType::kI8V2:
    case DType::kFP8V2:
    case DType::kI8V3:
    case DType::kFP8V3:
      return 1;
  }
  EVL_THROW(Error, "unknown dtype code ", static_cast<int>(dtype));
}

std::string to_string(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
    case DType::kF32:
      return "fp32";
    case DType::kI8:
    case DType::kI8V3:
    case DType::kI8V2:
      return "int8";
    case DType::kFP8:
    case DType::kFP8V3:
    case DType::kFP8V2:
      return "fp8";
  }
  return "dtype(" + std::to_string(static_cast<int>(dtype)) + ")";
}

DType parse_dtype(const std::string& name) {
  if (name == "fp16" || name == "float16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp32" || name == "float32") return DType::kF32;
  if (name == "int8") return DType::kI8;
  if (name == "fp8" || name == "fp8_e4m3") return DType::kFP8;
  EVL_THROW(UsageError, "unknown dtype '", name, "' (expected fp16, bf16, fp32, int8 or fp8)");
}

size_t array_bytes(DType dtype, const std::vector<int64_t>& shape) {
  if (is_quantized(dtype)) return quant_layout(dtype, shape).bytes;
  return static_cast<size_t>(product(shape)) * dtype_size(dtype);
}

std::string to_string(StorageMode mode) { return mode == StorageMode::kQK ? "qk" : "compact"; }

StorageMode parse_storage_mode(const std::string& name) {
  if (name == "qk") return StorageMode::kQK;
  if (name == "compact") return StorageMode::kCompact;
  EVL_THROW(UsageError, "unknown storage mode '", name, "' (expected qk or compact)");
}

int64_t Array::numel() const { return product(shape); }
int64_t ArrayView::numel() const { return product(shape); }

const Array* Record::find(const std::string& name) const {
  for (const auto& [n, a] : arrays)
    if (n == name) return &a;
  return nullptr;
}
const Array& Record::array(const std::string& name) const {
  const Array* a = find(name);
  EVL_CHECK(a, "record '", key, "': no array '", name, "'");
  return *a;
}
const ArrayView* RecordView::find(const std::string& name) const {
  for (const auto& [n, a] : arrays)
    if (n == name) return &a;
  return nullptr;
}
const ArrayView& RecordView::array(const std::string& name) const {
  const ArrayView* a = find(name);
  EVL_CHECK(a, "record '", key, "': no array '", name, "'");
  return *a;
}

Record RecordView::to_record() const {
  Record r{key, video_id, label, clip_index, view_index, view, {}};
  for (const auto& [name, v] : arrays) {
    const auto* p = static_cast<const uint8_t*>(v.data);
    r.arrays.emplace_back(name, Array{v.dtype, v.shape, std::vector<uint8_t>(p, p + v.nbytes())});
  }
  return r;
}

std::string make_key(int64_t clip_index, int32_t view_index) {
  EVL_CHECK(clip_index >= 0 && clip_index < 10000000000LL, "clip index ", clip_index,
            " out of range for a cache key");
  EVL_CHECK(view_index >= 0 && view_index < 1000, "view index ", view_index,
            " out of range for a cache key (0..999)");
  std::ostringstream os;
  os << std::setw(10) << std::setfill('0') << clip_index << '/' << std::setw(3) << view_index;
  return os.str();
}

std::string shard_name(int index, int count) {
  EVL_CHECK(count > 0 && index >= 0 && index < count, "shard index ", index, " not in [0, ", count,
            ")");
  std::ostringstream os;
  os << "features-" << std::setw(5) << std::setfill('0') << index << "-of-" << std::setw(5)
     << count;
  return os.str();
}

std::vector<uint8_t> encode_record(const Record& record) {
  std::vector<uint8_t> out;
  encode_record_into(record, out);
  return out;
}

void encode_record_into(const Record& record, std::vector<uint8_t>& out) {
  // Layout pass: strings, then the array table, then aligned data.
  size_t table = kFixedHeader + record.key.size() + record.video_id.size() + record.view.size();
  for (const auto& [name, a] : record.arrays) {
    EVL_CHECK(a.shape.size() <= kMaxDims, "record '", record.key, "': array '", name, "' has ",
              a.shape.size(), " dims (max 8)");
    EVL_CHECK(!is_quantized(a.dtype) || (!a.shape.empty() && a.shape.back() >= 1), "record '",
              record.key, "': ", to_string(a.dtype), " array '", name, "' of shape ",
              shape_str(a.shape), " has no channel axis to quantize along");
    EVL_CHECK(a.bytes.size() == array_bytes(a.dtype, a.shape), "record '", record.key, "': array '",
              name, "' holds ", a.bytes.size(), " bytes, shape ", shape_str(a.shape), " of ",
              to_string(a.dtype), " needs ", array_bytes(a.dtype, a.shape));
    table += 4 + name.size() + 4 + 8 * a.shape.size() + 16;
  }
  const size_t header_size = align_up(table);
  size_t data_end = header_size;
  std::vector<size_t> offsets;
  for (const auto& entry : record.arrays) {
    offsets.push_back(data_end);
    data_end = align_up(data_end + entry.second.bytes.size());
  }
  const size_t total = data_end + 8;

  out.assign(total, 0);
  std::memcpy(out.data(), kMagic, 4);
  put<uint32_t>(out, 4, kFormatVersion);
  put<uint64_t>(out, 8, total);
  put<int64_t>(out, 16, record.label);
  put<int64_t>(out, 24, record.clip_index);
  put<int32_t>(out, 32, record.view_index);
  put<uint32_t>(out, 36, static_cast<uint32_t>(record.arrays.size()));
  put<uint32_t>(out, 40, static_cast<uint32_t>(record.key.size()));
  put<uint32_t>(out, 44, static_cast<uint32_t>(record.video_id.size()));
  put<uint32_t>(out, 48, static_cast<uint32_t>(record.view.size()));
  put<uint32_t>(out, 52, static_cast<uint32_t>(header_size));
  size_t pos = kFixedHeader;
  for (const std::string* s : {&record.key, &record.video_id, &record.view}) {
    std::memcpy(out.data() + pos, s->data(), s->size());
    pos += s->size();
  }
  for (size_t i = 0; i < record.arrays.size(); ++i) {
    const auto& [name, a] = record.arrays[i];
    put<uint32_t>(out, pos, static_cast<uint32_t>(name.size()));
    std::memcpy(out.data() + pos + 4, name.data(), name.size());
    pos += 4 + name.size();
    out[pos] = static_cast<uint8_t>(a.dtype);
    out[pos + 1] = static_cast<uint8_t>(a.shape.size());
    // u16 quantization group (channels per scale) for int8/fp8; 0 (reserved) otherwise.
    put<uint16_t>(out, pos + 2, static_cast<uint16_t>(is_quantized(a.dtype) ? kQuantGroup : 0));
    pos += 4;
    for (int64_t d : a.shape) put<int64_t>(out, (pos += 8) - 8, d);
    put<uint64_t>(out, pos, offsets[i]);
    put<uint64_t>(out, pos + 8, a.bytes.size());
    pos += 16;
    if (!a.bytes.empty()) std::memcpy(out.data() + offsets[i], a.bytes.data(), a.bytes.size());
  }
  put<uint64_t>(out, total - 8, record_checksum(kFormatVersion, out.data(), total - 8));
}

RecordView decode_record(const void* data, size_t size, const std::string& where,
                         bool verify_checksum) {
  const auto* p = static_cast<const uint8_t*>(data);
  EVL_CHECK(size >= kFixedHeader + 8, where, ": value of ", size,
            " bytes is too short to be a record (truncated)");
  EVL_CHECK(std::memcmp(p, kMagic, 4) == 0, where, ": bad magic (not an evl cache record)");
  const uint32_t version = get<uint32_t>(p + 4);
  EVL_CHECK(version <= kFormatVersion && version >= 1, where, ": written by format version ",
            version, "; this evl reads version ", kFormatVersion,
            version > kFormatVersion ? " (upgrade evl)" : "");
  const uint64_t total = get<uint64_t>(p + 8);
  EVL_CHECK(total == size, where, ": value is ", size, " bytes, its header says ", total,
            total > size ? " (truncated)" : " (trailing bytes)");
  if (verify_checksum) {
    const uint64_t stored = get<uint64_t>(p + size - 8);
    EVL_CHECK(record_checksum(version, p, size - 8) == stored, where,
              ": checksum mismatch (corrupt record)");
  }
  RecordView r;
  r.label = get<int64_t>(p + 16);
  r.clip_index = get<int64_t>(p + 24);
  r.view_index = get<int32_t>(p + 32);
  const uint32_t num_arrays = get<uint32_t>(p + 36);
  const uint64_t lens[3] = {get<uint32_t>(p + 40), get<uint32_t>(p + 44), get<uint32_t>(p + 48)};
  const uint64_t header_size = get<uint32_t>(p + 52);
  EVL_CHECK(header_size <= size - 8 && header_size >= kFixedHeader, where, ": header size ",
            header_size, " out of range");
  size_t pos = kFixedHeader;
  std::string* strings[3] = {&r.key, &r.video_id, &r.view};
  for (int i = 0; i < 3; ++i) {
    EVL_CHECK(lens[i] <= header_size - pos, where, ": header strings overrun the header");
    strings[i]->assign(reinterpret_cast<const char*>(p + pos), lens[i]);
    pos += lens[i];
  }
  auto need = [&](uint64_t n) {
    EVL_CHECK(n <= header_size - pos, where, ": array table overruns the header");
  };
  for (uint32_t i = 0; i < num_arrays; ++i) {
    need(4);
    const uint32_t name_len = get<uint32_t>(p + pos);
    pos += 4;
    need(uint64_t{name_len} + 4);  // 64-bit: a name_len near 2^32 must not wrap
    std::string name(reinterpret_cast<const char*>(p + pos), name_len);
    pos += name_len;
    ArrayView v;
    const uint8_t code = p[pos];
    EVL_CHECK(code >= 1 && code <= kMaxDTypeCode, where, ": array '", name,
              "' has unknown dtype code ", int(code));
    v.dtype = static_cast<DType>(code);
    const uint8_t ndim = p[pos + 1];
    EVL_CHECK(ndim <= kMaxDims, where, ": array '", name, "' has ", int(ndim), " dims");
    const bool quantized = is_quantized(v.dtype);
    if (quantized) {
      EVL_CHECK(version >= first_version_of(v.dtype), where, ": array '", name, "' has dtype ",
                to_string(v.dtype), " (code ", int(code), "), which format version ", version,
                " does not have (corrupt record)");
      const uint16_t group = get<uint16_t>(p + pos + 2);
      EVL_CHECK(group == kQuantGroup, where, ": array '", name, "' is quantized in groups of ",
                group, " channels; this evl reads groups of ", kQuantGroup);
      EVL_CHECK(ndim >= 1, where, ": ", to_string(v.dtype), " array '", name,
                "' has no channel axis");
    }
    pos += 4;
    need(8 * ndim + 16);
    for (int d = 0; d < ndim; ++d, pos += 8) {
      v.shape.push_back(get<int64_t>(p + pos));
      EVL_CHECK(v.shape.back() >= 0 && v.shape.back() < (int64_t(1) << 40), where, ": array '",
                name, "' has dimension ", v.shape.back());
    }
    // The element count too: eight dimensions below 2^40 each still overflow
    // int64 (numel, array_bytes) unless their product is bounded.
    int64_t elems = 1;
    for (const int64_t d : v.shape)
      EVL_CHECK(!__builtin_mul_overflow(elems, d, &elems) && elems < (int64_t(1) << 48), where,
                ": array '", name, "' has shape ", shape_str(v.shape), ", too many elements");
    const uint64_t offset = get<uint64_t>(p + pos), nbytes = get<uint64_t>(p + pos + 8);
    pos += 16;
    EVL_CHECK(!quantized || v.shape.back() >= 1, where, ": ", to_string(v.dtype), " array '", name,
              "' has an empty channel axis");
    EVL_CHECK(nbytes == array_bytes(v.dtype, v.shape), where, ": array '", name, "' has ", nbytes,
              " bytes but shape ", shape_str(v.shape), " of ", to_string(v.dtype),
              quantized ? " (codes, fp16 scales, column scales)" : "", " needs ",
              array_bytes(v.dtype, v.shape));
    EVL_CHECK(offset >= header_size && offset <= size - 8 && nbytes <= size - 8 - offset, where,
              ": array '", name, "' data [", offset, ", +", nbytes, ") lies outside the value");
    v.data = p + offset;
    r.arrays.emplace_back(std::move(name), std::move(v));
  }
  return r;
}

// IEEE binary16 <-> binary32, bit-exact with numpy's astype for finite values.
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while (!(mant & 0x400));
      bits = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00 | ((abs >> 13) & 0x3ff);  // nan (quiet)
  if (abs >= 0x477ff000u) return sign | 0x7c00;                         // rounds to >= 65520: inf
  if (abs < 0x38800000u) {               // below 2^-14: subnormal half or zero
    if (abs < 0x33000000u) return sign;  // < 2^-25 rounds to 0
    const uint32_t e = abs >> 23, m = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // value / 2^-24 == m >> shift, shift in 14..24
    const uint32_t full = m >> shift, rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    uint32_t r = full;
    if (rem > half || (rem == half && (full & 1))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: rebias exponent and round the 13 dropped bits to nearest even.
  uint32_t r = abs - 0x38000000u;
  r += 0xfff + ((r >> 13) & 1);
  return sign | static_cast<uint16_t>(r >> 13);
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // nan
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

Array make_array(DType dtype, std::vector<int64_t> shape, const float* values, size_t n) {
  Array a{dtype, std::move(shape), {}};
  EVL_CHECK(static_cast<size_t>(a.numel()) == n, "make_array: shape ", shape_str(a.shape),
            " holds ", a.numel(), " values, got ", n);
  if (is_quantized(dtype)) {
    a.bytes.assign(quant_layout(dtype, a.shape).bytes, 0);
    const std::string why = quantize_array(dtype, a.shape, values, a.bytes.data());
    EVL_CHECK(why.empty(), why);
    return a;
  }
  a.bytes.resize(n * dtype_size(dtype));
  if (dtype == DType::kF32) {
    if (n) std::memcpy(a.bytes.data(), values, n * 4);
    return a;
  }
  auto* out = reinterpret_cast<uint16_t*>(a.bytes.data());
  for (size_t i = 0; i < n; ++i)
    out[i] = dtype == DType::kF16 ? float_to_half(values[i]) : float_to_bf16(values[i]);
  return a;
}

void to_float32(const ArrayView& view, float* out) {
  if (is_quantized(view.dtype)) {
    dequantize_rows(view, 0, quant_layout(view.dtype, view.shape).rows, out);
    return;
  }
  const size_t n = static_cast<size_t>(view.numel());
  if (view.dtype == DType::kF32) {
    if (n) std::memcpy(out, view.data, n * 4);
    return;
  }
  const auto* in = static_cast<const uint8_t*>(view.data);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = get<uint16_t>(in + 2 * i);
    out[i] = view.dtype == DType::kF16 ? half_to_float(h) : bf16_to_float(h);
  }
}

}  // namespace evl::cache
