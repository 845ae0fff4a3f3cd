// Writes small valid inputs of every fuzzed format into <out>/<target>/ with
// evl's own writers (records, qk_weights.evl, manifests) or by hand where the
// format is text or trivial (safetensors, config.json, lists, INI, the score
// target's byte layout). The pickle seeds come from make_seeds.py (torch.save).
// scripts/fuzz.sh seeds a fuzzing run with both; the checked-in corpus
// tests/fuzz/corpus/ is their minimised union with what fuzzing found.
//   usage: fuzz_make_seeds OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cache/cache.h"

namespace fs = std::filesystem;
using namespace evl::cache;

namespace {

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}
std::string str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

std::vector<float> ramp(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>(i % 13) - 1.5f;
  return v;
}

Record record(DType dtype, std::vector<int64_t> shape) {
  Record r;
  r.key = make_key(3, 1);
  r.video_id = "a/b.mp4";
  r.label = 2;
  r.clip_index = 3;
  r.view_index = 1;
  r.view = "t0/1 s0/1 start=0";
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  const auto x = ramp(n);
  r.arrays.emplace_back("x", make_array(dtype, shape, x.data(), n));
  return r;
}

std::string safetensors(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x11');
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];

  // Records: every storage dtype, a 2-array record, and a quantized one with
  // two slices of outlier channels' column scales (dtypes 8/9, shape (M,T,L,C)).
  const struct {
    DType dtype;
    const char* name;
  } dtypes[] = {{DType::kF16, "f16"},
                {DType::kBF16, "bf16"},
                {DType::kF32, "f32"},
                {DType::kI8, "int8"},
                {DType::kFP8, "fp8"}};
  for (const auto& d : dtypes) {
    put(out / "record", std::string("small_") + d.name,
        str(encode_record(record(d.dtype, {2, 3, 64}))));
    put(out / "record", std::string("4d_") + d.name,
        str(encode_record(record(d.dtype, {2, 2, 5, 72}))));
  }
  Record two = record(DType::kF16, {1, 4});
  const auto q = ramp(8);
  two.arrays.emplace_back("q", make_array(DType::kF32, {2, 4}, q.data(), 8));
  put(out / "record", "two_arrays", str(encode_record(two)));
  Record empty = record(DType::kF32, {0, 3});
  put(out / "record", "empty_array", str(encode_record(empty)));

  // qk_weights.evl for blocks 3 and 4 of width 8.
  Record w;
  w.key = "qk_weights";
  for (int b : {3, 4}) {
    const auto v = ramp(64);
    for (const char* part : {"ln_1.weight", "ln_1.bias", "q_proj.bias", "k_proj.bias"})
      w.arrays.emplace_back(std::string(part) + "." + std::to_string(b),
                            make_array(DType::kF32, {8}, v.data(), 8));
    for (const char* part : {"q_proj.weight", "k_proj.weight"})
      w.arrays.emplace_back(std::string(part) + "." + std::to_string(b),
                            make_array(DType::kF32, {8, 8}, v.data(), 64));
  }
  put(out / "qk_weights", "two_blocks", str(encode_record(w)));

  // Manifests: test views (qk), training views (compact, int8) with a conversion.
  Manifest m;
  m.tool_version = "0.1.0";
  m.created = "2024-01-01T00:00:00Z";
  m.backbone = {"ViT-B-16.pt", "0123456789abcdef", "openai-torchscript", 768, 12, 12, 16, 14, 224};
  m.layers = {8, 9, 10, 11};
  m.mean = {0.48145466, 0.4578275, 0.40821073};
  m.std = {0.26862954, 0.26130258, 0.27577711};
  m.list_file = "val.txt";
  m.num_clips = 4;
  m.temporal_views = 3;
  m.spatial_views = 1;
  m.shards = {{shard_name(0, 2), 6}, {shard_name(1, 2), 6}};
  put(out / "manifest", "test_views.json", m.to_json());
  m.storage = StorageMode::kCompact;
  m.dtype = DType::kI8;
  m.train_views = 2;
  m.augment = "rand-m7-n4-mstd0.5-inc1";
  m.has_inputs = true;
  m.conversions.push_back({"/data/cache", DType::kF16, StorageMode::kQK, 3, "0.1.0", m.created});
  put(out / "manifest", "train_views.json", m.to_json());

  // Safetensors: a tiny CLIP vision tower (width 4, 1 block, patch 2, grid 1) and a bare file.
  const std::string c = R"("dtype":"F32","shape":)";
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
  uint64_t at = 0;
  auto entry = [&](const std::string& name, const std::string& shape, uint64_t numel) {
    h += ",\"vision_model." + name + "\":{" + c + shape + ",\"data_offsets\":[" +
         std::to_string(at) + "," + std::to_string(at + 4 * numel) + "]}";
    at += 4 * numel;
  };
  entry("embeddings.class_embedding", "[4]", 4);
  entry("embeddings.patch_embedding.weight", "[4,3,2,2]", 48);
  entry("embeddings.position_embedding.weight", "[2,4]", 8);
  entry("pre_layrnorm.weight", "[4]", 4);
  entry("pre_layrnorm.bias", "[4]", 4);
  for (const char* p : {"q", "k", "v", "out"}) {
    entry(std::string("encoder.layers.0.self_attn.") + p + "_proj.weight", "[4,4]", 16);
    entry(std::string("encoder.layers.0.self_attn.") + p + "_proj.bias", "[4]", 4);
  }
  for (const char* p : {"layer_norm1", "layer_norm2"}) {
    entry(std::string("encoder.layers.0.") + p + ".weight", "[4]", 4);
    entry(std::string("encoder.layers.0.") + p + ".bias", "[4]", 4);
  }
  entry("encoder.layers.0.mlp.fc1.weight", "[16,4]", 64);
  entry("encoder.layers.0.mlp.fc1.bias", "[16]", 16);
  entry("encoder.layers.0.mlp.fc2.weight", "[4,16]", 64);
  entry("encoder.layers.0.mlp.fc2.bias", "[4]", 4);
  entry("post_layernorm.weight", "[4]", 4);
  entry("post_layernorm.bias", "[4]", 4);
  h += ",\"visual_projection.weight\":{" + c + "[2,4],\"data_offsets\":[" + std::to_string(at) +
       "," + std::to_string(at + 32) + "]}}";
  at += 32;
  put(out / "safetensors", "tiny_clip", safetensors(h, at));
  put(out / "safetensors", "two_tensors",
      safetensors(R"({"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})",
                  16));

  // config.json: a CLIPVisionConfig and a CLIPModel config.
  put(out / "hf_config", "vision.json",
      R"({"hidden_size": 768, "num_attention_heads": 12, "hidden_act": "quick_gelu"})");
  put(out / "hf_config", "clip_model.json",
      R"({"architectures": ["CLIPModel"], "vision_config": {"num_attention_heads": 16, )"
      R"("hidden_act": "gelu", "patch_size": 14}, "text_config": {"num_attention_heads": 8}})");

  // Dataset lists: plain (with comments, trims) and Kinetics CSV.
  put(out / "dataset_list", "plain.txt",
      "# comment\nvideos/a.mp4 0\nvideos/b.mp4 2 1.5 4.0\n\nvideos/c.avi 1\n/abs/d.mp4 0 0 2\n");
  put(out / "dataset_list", "unlabelled.txt", "a.mp4\nb.mp4\n");
  put(out / "dataset_list", "kinetics.csv",
      "label,youtube_id,time_start,time_end,split\n"
      "abseiling,0347ZoDXyP0,0,10,train\n\"air drumming\",-0bJ9Pb0VVI,23,33,train\n"
      "x,zzzzzzzzzzz,1.5,11.5,val\n");
  put(out / "dataset_list", "kinetics_test.csv",
      "youtube_id,time_start,time_end,split\nabc,0,10,test\n");

  // INI configs: sections, every value type, comments.
  put(out / "ini", "extract.ini",
      "# evl_extract\nframes = 8\nstride = 16\ntemporal-views = 3\nspatial-views = 1\n"
      "layers = last4\nverbose = true\n\n[train]\nlr = 4e-4\nweight-decay = 0.05\n"
      "steps = 5000\nblocks = 1\nblocks = 2\n");
  put(out / "ini", "train_views.ini",
      "train-views = 2\naugment = rand-m7-n4-mstd0.5-inc1\nseed = 3\nthreads = 1\n"
      "list = a b.txt\ninput = x\ninput = y\n");

  // The score target's layout (scores_fuzz.cpp): 2 videos x 3 classes.
  std::string s = {'\0', 2, 3, 1};
  for (const float v : {0.2f, 0.3f, 0.5f, 0.9f, 0.05f, 0.05f})
    s.append(reinterpret_cast<const char*>(&v), 4);
  s += std::string{0, 2, 1, 'a', 2, 'b', 'c'};
  put(out / "scores", "probs", s);
  s[0] = 3;  // logits, int64 labels
  s.resize(4 + 24);
  for (const int64_t l : {int64_t(-1), int64_t(2)}) s.append(reinterpret_cast<const char*>(&l), 8);
  s += std::string{1, 'a', 1, 'b'};
  put(out / "scores", "logits", s);
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
