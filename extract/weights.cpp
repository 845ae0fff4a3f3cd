// CLIP weight readers: OpenAI TorchScript (torch::jit::load) and HF safetensors (mmap +
// nlohmann-json header), both renamed to OpenAI's visual.* keys, plus key/shape validation.
// Nothing here converts dtypes or builds modules; clip_vit.cpp does that.
#include "extract/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <torch/script.h>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/check.h"

namespace evl {
namespace {

constexpr const char* kAcceptedFormats =
    "accepted formats: OpenAI CLIP TorchScript archive (.pt, e.g. ViT-B-16.pt) or Hugging Face "
    "CLIPModel/CLIPVisionModel safetensors (.safetensors, config.json beside it is read)";

// dtype code <-> torch dtype for safetensors.
const std::vector<std::pair<std::string, torch::ScalarType>>& dtype_codes() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> codes = {
      {"F16", torch::kHalf},   {"BF16", torch::kBFloat16}, {"F32", torch::kFloat},
      {"F64", torch::kDouble}, {"I64", torch::kLong},      {"I32", torch::kInt},
      {"U8", torch::kByte}};
  return codes;
}

std::string join(const std::vector<std::string>& names, size_t limit = 12) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += str(", ... (", names.size() - limit, " more)");
  return out;
}

std::string shape_str(at::IntArrayRef s) { return str(s); }

}  // namespace

// ---------------------------------------------------------------- format detection, hash

std::string detect_weight_format(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EVL_CHECK(f, "backbone weights '", path, "': cannot open (", std::strerror(errno), ")");
  char head[9] = {0};
  f.read(head, sizeof(head));
  const auto n = f.gcount();
  if (n >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return "openai-torchscript";
  if (n == 9 && head[8] == '{') return "hf-safetensors";
  EVL_THROW(Error, "backbone weights '", path, "': unknown file format (",
            n < 9 ? "too short; " : "",
            "neither a zip/TorchScript archive nor a safetensors file); ", kAcceptedFormats);
}

std::string xxh64_file_hex(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EVL_CHECK(f, "'", path, "': cannot open for hashing");
  std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> st(XXH64_createState(),
                                                                &XXH64_freeState);
  XXH64_reset(st.get(), 0);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) XXH64_update(st.get(), buf.data(), static_cast<size_t>(f.gcount()));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(XXH64_digest(st.get())));
  return hex;
}

// ---------------------------------------------------------------- safetensors

struct SafetensorsFile::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) munmap(addr, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), map_(new Mapping) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EVL_CHECK(fd >= 0, "safetensors '", path, "': cannot open (", std::strerror(errno), ")");
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const auto size = stat_ok ? static_cast<uint64_t>(st.st_size) : 0;
  if (size > 0) map_->addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  EVL_CHECK(size >= 8, "safetensors '", path, "': file is ", size,
            " bytes, too short for a header");
  EVL_CHECK(map_->addr != MAP_FAILED, "safetensors '", path, "': mmap failed");
  map_->size = size;
  const auto* base = static_cast<const uint8_t*>(map_->addr);
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every platform evl supports
  EVL_CHECK(header_len <= size - 8, "safetensors '", path, "': header length ", header_len,
            " runs past the end of the ", size, "-byte file (truncated?)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base + 8, base + 8 + header_len);
  } catch (const std::exception& e) {
    EVL_THROW(Error, "safetensors '", path, "': header is not valid JSON: ", e.what());
  }
  EVL_CHECK(header.is_object(), "safetensors '", path, "': header is not a JSON object");
  data_ = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (v.is_object())
        for (const auto& [k, m] : v.items())
          if (m.is_string()) metadata_[k] = m.get<std::string>();
      continue;
    }
    const auto where = str("safetensors '", path, "': tensor '", name, "': ");
    EVL_CHECK(
        v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
        where, "entry needs dtype, shape and data_offsets");
    Entry e;
    const auto code = v["dtype"].is_string() ? v["dtype"].get<std::string>() : "";
    auto it = std::find_if(dtype_codes().begin(), dtype_codes().end(),
                           [&](const auto& p) { return p.first == code; });
    EVL_CHECK(it != dtype_codes().end(), where, "unsupported dtype '", code, "'");
    e.dtype = it->second;
    EVL_CHECK(v["shape"].is_array(), where, "shape is not an array");
    // Each dimension and their product range-checked: a product that wraps
    // (2^32 x 2^32) would match an empty data span and view memory it lacks.
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      EVL_CHECK(d.is_number_unsigned(), where, "shape has a non-integer or negative entry");
      const uint64_t n = d.get<uint64_t>();
      EVL_CHECK(n < (uint64_t(1) << 40) && !__builtin_mul_overflow(numel, n, &numel) &&
                    numel < (uint64_t(1) << 48),
                where, "shape ", v["shape"].dump(), " is absurd");
      e.shape.push_back(static_cast<int64_t>(n));
    }
    const auto& off = v["data_offsets"];
    EVL_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                  off[1].is_number_unsigned(),
              where, "data_offsets must be two non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    EVL_CHECK(e.begin <= e.end && e.end <= data_size, where, "data_offsets [", e.begin, ", ", e.end,
              "] lie outside the ", data_size, "-byte data section (truncated or corrupt)");
    const uint64_t bytes = numel * c10::elementSize(e.dtype);
    EVL_CHECK(e.end - e.begin == bytes, where, "data_offsets span ", e.end - e.begin,
              " bytes but dtype ", code, " and shape ", v["shape"].dump(), " need ", bytes);
    spans.emplace_back(e.begin, e.end);
    entries_.emplace(name, std::move(e));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    EVL_CHECK(spans[i].first >= spans[i - 1].second, "safetensors '", path,
              "': tensors overlap in the data section (corrupt header)");
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  auto it = entries_.find(name);
  EVL_CHECK(it != entries_.end(), "safetensors '", path_, "': no tensor '", name, "'");
  const Entry& e = it->second;
  auto keep = map_;
  void* ptr = const_cast<uint8_t*>(data_ + e.begin);
  return torch::from_blob(
      ptr, e.shape, [keep](void*) {}, torch::TensorOptions().dtype(e.dtype));
}

void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t0] : tensors) {
    auto t = t0.contiguous().cpu();
    auto it = std::find_if(dtype_codes().begin(), dtype_codes().end(),
                           [&](const auto& p) { return p.second == t.scalar_type(); });
    EVL_CHECK(it != dtype_codes().end(), "write_safetensors '", path, "': tensor '", name,
              "' has unsupported dtype ", t.scalar_type());
    const uint64_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", it->first},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  EVL_CHECK(f, "write_safetensors: cannot create '", path, "'");
  const uint64_t len = head.size();
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(head.data(), static_cast<std::streamsize>(head.size()));
  for (const auto& t : data)
    f.write(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  EVL_CHECK(f.good(), "write_safetensors: write to '", path, "' failed");
}

// ---------------------------------------------------------------- readers

ClipWeights read_openai_torchscript(const std::string& path) {
  torch::jit::Module root;
  try {
    root = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    EVL_THROW(Error, "backbone weights '", path,
              "': cannot load as a TorchScript archive (truncated or corrupt?): ", what);
  }
  std::vector<std::string> children;
  for (const auto& c : root.named_children()) children.push_back(c.name);
  EVL_CHECK(root.hasattr("visual") && root.attr("visual").isModule(), "backbone weights '", path,
            "': TorchScript archive has no 'visual' submodule, so it is not an OpenAI CLIP "
            "model (top-level submodules: ",
            children.empty() ? "none" : join(children), ")");
  torch::jit::Module visual = root.attr("visual").toModule();
  ClipWeights w;
  w.format = "openai-torchscript";
  for (const auto& p : visual.named_parameters(/*recurse=*/true)) {
    // torch::jit::load does not check that a tensor fits its storage record: a
    // truncated or edited archive would read past it (garbage or a crash).
    const torch::Tensor& t = p.value;
    if (t.numel() > 0) {
      int64_t last = t.storage_offset();
      for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
      const auto need = static_cast<uint64_t>(last + 1) * t.element_size();
      EVL_CHECK(t.storage_offset() >= 0 && need <= t.storage().nbytes(), "backbone weights '", path,
                "': tensor 'visual.", p.name, "' needs ", need, " bytes, its storage holds ",
                t.storage().nbytes(), " (a truncated or corrupt archive)");
    }
    w.tensors[p.name] = t;
  }
  // nn.MultiheadAttention keeps num_heads as a scripted attribute; OpenAI uses width / 64.
  try {
    auto blk = visual.attr("transformer").toModule().attr("resblocks").toModule().attr("0");
    auto attn = blk.toModule().attr("attn").toModule();
    if (attn.hasattr("num_heads")) w.heads = attn.attr("num_heads").toInt();
  } catch (const std::exception&) {
    // No readable attribute: infer_arch falls back to width / 64 or reports missing keys.
  }
  return w;
}

ClipWeights read_hf_safetensors(const std::string& path) {
  SafetensorsFile file(path);
  ClipWeights w;
  w.format = "hf-safetensors";
  std::map<std::string, torch::Tensor> qkv[3];  // per block index "i": q, k, v parts
  std::vector<std::string> unexpected;
  const std::string vm = "vision_model.";
  auto put = [&](const std::string& k, const torch::Tensor& t) { w.tensors[k] = t; };
  for (const auto& [name, e] : file.entries()) {
    if (name == "visual_projection.weight") {
      put("proj", file.tensor(name).t());  // HF stores (E, C); OpenAI's proj is (C, E)
      continue;
    }
    if (name.rfind(vm, 0) != 0) continue;  // text tower, logit_scale, ...: not ours
    const std::string k = name.substr(vm.size());
    static const std::map<std::string, std::string> fixed = {
        {"embeddings.class_embedding", "class_embedding"},
        {"embeddings.patch_embedding.weight", "conv1.weight"},
        {"embeddings.position_embedding.weight", "positional_embedding"},
        {"pre_layrnorm.weight", "ln_pre.weight"},
        {"pre_layrnorm.bias", "ln_pre.bias"},
        {"post_layernorm.weight", "ln_post.weight"},
        {"post_layernorm.bias", "ln_post.bias"}};
    if (auto f = fixed.find(k); f != fixed.end()) {
      put(f->second, file.tensor(name));
      continue;
    }
    if (k == "embeddings.position_ids") continue;  // a buffer in older HF checkpoints
    const std::string lp = "encoder.layers.";
    if (k.rfind(lp, 0) == 0) {
      const auto dot = k.find('.', lp.size());
      const std::string idx = k.substr(lp.size(), dot - lp.size());
      const std::string rest = dot == std::string::npos ? "" : k.substr(dot + 1);
      const std::string dst = "transformer.resblocks." + idx + ".";
      static const std::map<std::string, std::string> per_block = {
          {"self_attn.out_proj.weight", "attn.out_proj.weight"},
          {"self_attn.out_proj.bias", "attn.out_proj.bias"},
          {"layer_norm1.weight", "ln_1.weight"},
          {"layer_norm1.bias", "ln_1.bias"},
          {"layer_norm2.weight", "ln_2.weight"},
          {"layer_norm2.bias", "ln_2.bias"},
          {"mlp.fc1.weight", "mlp.c_fc.weight"},
          {"mlp.fc1.bias", "mlp.c_fc.bias"},
          {"mlp.fc2.weight", "mlp.c_proj.weight"},
          {"mlp.fc2.bias", "mlp.c_proj.bias"}};
      if (auto f = per_block.find(rest); f != per_block.end()) {
        put(dst + f->second, file.tensor(name));
        continue;
      }
      const char* parts[3] = {"q", "k", "v"};
      bool done = false;
      for (int j = 0; j < 3 && !done; ++j)
        for (const char* kind : {"weight", "bias"})
          if (rest == str("self_attn.", parts[j], "_proj.", kind)) {
            qkv[j][idx + "." + kind] = file.tensor(name);
            done = true;
            break;
          }
      if (done) continue;
    }
    unexpected.push_back(name);
  }
  EVL_CHECK(unexpected.empty(), "backbone weights '", path,
            "': unexpected Hugging Face CLIP vision keys: ", join(unexpected));
  // Fuse q/k/v into OpenAI's in_proj; a part missing is reported by infer_arch by name.
  for (const auto& [key, q] : qkv[0]) {
    auto k = qkv[1].find(key);
    auto v = qkv[2].find(key);
    const auto dot = key.find('.');
    const std::string dst =
        "transformer.resblocks." + key.substr(0, dot) + ".attn.in_proj_" + key.substr(dot + 1);
    if (k == qkv[1].end() || v == qkv[2].end()) continue;
    EVL_CHECK(q.sizes() == k->second.sizes() && q.sizes() == v->second.sizes(),
              "backbone weights '", path, "': q/k/v projection ", key,
              " shapes differ: ", q.sizes(), " ", k->second.sizes(), " ", v->second.sizes());
    put(dst, torch::cat({q, k->second, v->second}, 0));
  }
  // config.json beside the weights: hidden_act and num_attention_heads.
  // The head count is not in the tensors' shapes, so config.json is required
  // (save_pretrained writes it beside model.safetensors): guessing width / 64
  // would silently run a model with another attention than it was trained with.
  const auto cfg = std::filesystem::path(path).parent_path() / "config.json";
  std::error_code ec;
  EVL_CHECK(
      std::filesystem::is_regular_file(cfg, ec), "backbone weights '", path,
      "': no config.json beside it ('", cfg.string(),
      "'); Hugging Face safetensors need their config.json (num_attention_heads, hidden_act)");
  {
    std::ifstream f(cfg, std::ios::binary);
    EVL_CHECK(f, "'", cfg.string(), "': cannot open (", std::strerror(errno), ")");
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const HfVisionConfig c = parse_hf_vision_config(text, cfg.string());
    w.heads = c.heads;
    w.activation = c.activation;
  }
  if (w.activation.empty()) w.activation = "quick_gelu";  // HF CLIPVisionConfig's default
  return w;
}

HfVisionConfig parse_hf_vision_config(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    EVL_THROW(Error, "'", where, "': not valid JSON: ", e.what());
  }
  EVL_CHECK(j.is_object(), "'", where, "': not a JSON object");
  const auto& vc = j.contains("vision_config") ? j["vision_config"] : j;
  EVL_CHECK(vc.is_object(), "'", where, "': 'vision_config' is not an object");
  HfVisionConfig c;
  if (vc.contains("hidden_act")) {
    EVL_CHECK(vc["hidden_act"].is_string(), "'", where, "': 'hidden_act' is not a string");
    c.activation = vc["hidden_act"].get<std::string>();
  }
  EVL_CHECK(vc.contains("num_attention_heads"), "'", where,
            "': no 'num_attention_heads' (in 'vision_config' for a CLIPModel config)");
  const auto& heads = vc["num_attention_heads"];
  EVL_CHECK(heads.is_number_integer() && heads.get<int64_t>() > 0, "'", where,
            "': 'num_attention_heads' is ", heads.dump(), ", expected a positive integer");
  c.heads = heads.get<int64_t>();
  return c;
}

ClipWeights read_clip_weights(const std::string& path) {
  const std::string format = detect_weight_format(path);
  return format == "openai-torchscript" ? read_openai_torchscript(path) : read_hf_safetensors(path);
}

// ---------------------------------------------------------------- validation

VitArch infer_arch(const ClipWeights& weights, const std::string& path) {
  const auto& t = weights.tensors;
  const auto where = str("backbone weights '", path, "' (", weights.format, "): ");
  for (const char* key : {"class_embedding", "conv1.weight", "positional_embedding"})
    EVL_CHECK(t.count(key), where, "missing key '", key, "': not a CLIP vision transformer (found ",
              t.size(), " tensors)");
  VitArch a;
  const auto& conv = t.at("conv1.weight");
  const auto& pos = t.at("positional_embedding");
  a.width = t.at("class_embedding").size(0);
  EVL_CHECK(conv.dim() == 4 && conv.size(1) == 3 && conv.size(2) == conv.size(3), where,
            "conv1.weight has shape ", conv.sizes(), ", expected (C, 3, P, P)");
  a.patch = conv.size(2);
  EVL_CHECK(pos.dim() == 2 && pos.size(1) == a.width, where, "positional_embedding has shape ",
            pos.sizes(), ", expected (L, ", a.width, ")");
  a.grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(pos.size(0) - 1))));
  EVL_CHECK(a.grid * a.grid + 1 == pos.size(0), where, "positional_embedding has ", pos.size(0),
            " rows, not 1 + a square grid");
  a.image_size = a.grid * a.patch;
  const std::string rb = "transformer.resblocks.";
  std::set<int64_t> blocks;
  for (const auto& kv : t)
    if (kv.first.rfind(rb, 0) == 0) {
      try {
        blocks.insert(std::stoll(kv.first.substr(rb.size())));
      } catch (const std::exception&) {
        // a malformed block name is reported below as unexpected
      }
    }
  a.depth = blocks.empty() ? 0 : *blocks.rbegin() + 1;
  EVL_CHECK(a.depth > 0, where, "no transformer blocks found");
  if (t.count("proj")) a.embed_dim = t.at("proj").dim() == 2 ? t.at("proj").size(1) : -1;
  a.heads = weights.heads > 0 ? weights.heads : std::max<int64_t>(1, a.width / 64);
  EVL_CHECK(a.width % a.heads == 0, where, "width ", a.width, " is not divisible by ", a.heads,
            " heads");
  a.activation = weights.activation.empty() ? "quick_gelu" : weights.activation;
  EVL_CHECK(a.activation == "quick_gelu" || a.activation == "gelu", where,
            "unsupported activation '", a.activation, "' (expected quick_gelu or gelu)");

  const int64_t C = a.width;
  std::map<std::string, std::vector<int64_t>> expect = {{"class_embedding", {C}},
                                                        {"conv1.weight", {C, 3, a.patch, a.patch}},
                                                        {"positional_embedding", {a.tokens(), C}},
                                                        {"ln_pre.weight", {C}},
                                                        {"ln_pre.bias", {C}},
                                                        {"ln_post.weight", {C}},
                                                        {"ln_post.bias", {C}}};
  if (a.embed_dim != 0) expect["proj"] = {C, a.embed_dim};
  for (int64_t i = 0; i < a.depth; ++i) {
    const auto b = str(rb, i, ".");
    expect[b + "attn.in_proj_weight"] = {3 * C, C};
    expect[b + "attn.in_proj_bias"] = {3 * C};
    expect[b + "attn.out_proj.weight"] = {C, C};
    expect[b + "attn.out_proj.bias"] = {C};
    for (const char* ln : {"ln_1", "ln_2"}) {
      expect[b + ln + ".weight"] = {C};
      expect[b + ln + ".bias"] = {C};
    }
    expect[b + "mlp.c_fc.weight"] = {4 * C, C};
    expect[b + "mlp.c_fc.bias"] = {4 * C};
    expect[b + "mlp.c_proj.weight"] = {C, 4 * C};
    expect[b + "mlp.c_proj.bias"] = {C};
  }
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& [k, shape] : expect) {
    auto it = t.find(k);
    if (it == t.end())
      missing.push_back(k);
    else if (it->second.sizes() != at::IntArrayRef(shape))
      misshaped.push_back(
          str(k, " ", shape_str(it->second.sizes()), " (expected ", shape_str(shape), ")"));
  }
  for (const auto& kv : t)
    if (!expect.count(kv.first)) unexpected.push_back(kv.first);
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
    std::string msg = where + "weights do not match a CLIP ViT of width " + std::to_string(C) +
                      ", depth " + std::to_string(a.depth) + ", patch " + std::to_string(a.patch);
    if (!missing.empty()) msg += "; missing keys: " + join(missing);
    if (!unexpected.empty()) msg += "; unexpected keys: " + join(unexpected);
    if (!misshaped.empty()) msg += "; wrong shapes: " + join(misshaped);
    throw Error(msg);
  }
  for (const auto& kv : t) {
    EVL_CHECK(kv.second.is_floating_point(), where, "tensor '", kv.first, "' has dtype ",
              kv.second.scalar_type(), ", expected floating point");
    // NaN/inf weights would fill a whole cache with NaN and exit 0.
    EVL_CHECK(torch::isfinite(kv.second).all().item<bool>(), where, "tensor '", kv.first,
              "' holds NaN or inf (corrupt weights)");
  }
  return a;
}

}  // namespace evl
