// The weight loaders' error catalogue (truncated files, wrong key names, wrong shapes,
// non-CLIP TorchScript, safetensors headers that lie, unknown formats), config.json
// handling, and the file hash against published xxh64 test vectors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/script.h>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "extract/clip_vit.h"
#include "extract/weights.h"

namespace evl {
namespace {

namespace fs = std::filesystem;
const std::string kDir = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/backbone/";

class WeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("evl_weights_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    // Hugging Face weights need their config.json beside them (num_attention_heads).
    fs::copy_file(kDir + "config.json", dir_ / "config.json");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  static std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
  }
  static void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
  }
  // Rewrites the fixture's safetensors header through `edit`, keeping the data bytes.
  std::string edited_safetensors(const std::function<void(nlohmann::json&)>& edit,
                                 const std::string& name = "edited.safetensors") {
    const std::string raw = read_all(kDir + "tiny_clip_hf.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, raw.data(), 8);
    auto header = nlohmann::json::parse(raw.substr(8, n));
    edit(header);
    std::string head = header.dump();
    head.append((8 - head.size() % 8) % 8, ' ');
    uint64_t len = head.size();
    std::string out(reinterpret_cast<const char*>(&len), 8);
    write_all(file(name), out + head + raw.substr(8 + n));
    return file(name);
  }

  // Returns the message of the evl::Error thrown by load_backbone(path).
  static std::string load_error(const std::string& path) {
    try {
      load_backbone(path);
    } catch (const UsageError& e) {
      ADD_FAILURE() << "usage error instead of a file error: " << e.what();
      return e.what();
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error loading " << path;
    return "";
  }

  fs::path dir_;
};

using ::testing::HasSubstr;

TEST_F(WeightsTest, DetectsFormats) {
  EXPECT_EQ(detect_weight_format(kDir + "tiny_clip_openai.pt"), "openai-torchscript");
  EXPECT_EQ(detect_weight_format(kDir + "tiny_clip_hf.safetensors"), "hf-safetensors");
}

TEST_F(WeightsTest, UnknownFormatListsAcceptedFormats) {
  write_all(file("notes.bin"), "hello, this is not a model at all");
  const auto msg = load_error(file("notes.bin"));
  EXPECT_THAT(msg, HasSubstr(file("notes.bin")));
  EXPECT_THAT(msg, HasSubstr("unknown file format"));
  EXPECT_THAT(msg, HasSubstr("TorchScript"));
  EXPECT_THAT(msg, HasSubstr("safetensors"));
  write_all(file("empty.pt"), "");
  EXPECT_THAT(load_error(file("empty.pt")), HasSubstr("unknown file format"));
  EXPECT_THAT(load_error(file("missing.pt")), HasSubstr("cannot open"));
}

TEST_F(WeightsTest, TruncatedTorchScriptIsAnError) {
  const std::string raw = read_all(kDir + "tiny_clip_openai.pt");
  for (size_t keep : {raw.size() / 2, raw.size() - 30}) {
    write_all(file("cut.pt"), raw.substr(0, keep));
    const auto msg = load_error(file("cut.pt"));
    EXPECT_THAT(msg, HasSubstr(file("cut.pt")));
    EXPECT_THAT(msg, HasSubstr("TorchScript"));
  }
}

TEST_F(WeightsTest, TruncatedSafetensorsIsAnError) {
  const std::string raw = read_all(kDir + "tiny_clip_hf.safetensors");
  write_all(file("cut.safetensors"), raw.substr(0, raw.size() - 100));
  EXPECT_THAT(load_error(file("cut.safetensors")), HasSubstr("outside the"));
  write_all(file("cut2.safetensors"), raw.substr(0, 200));  // inside the header
  EXPECT_THAT(load_error(file("cut2.safetensors")), HasSubstr("header length"));
}

TEST_F(WeightsTest, SafetensorsHeaderThatLiesAboutOffsets) {
  const std::string key = "vision_model.encoder.layers.0.mlp.fc1.weight";
  auto past_end = edited_safetensors([&](nlohmann::json& h) {
    h[key]["data_offsets"][1] = h[key]["data_offsets"][1].get<uint64_t>() + 10000000;
  });
  auto msg = load_error(past_end);
  EXPECT_THAT(msg, HasSubstr(key));
  EXPECT_THAT(msg, HasSubstr("outside the"));
  auto wrong_size = edited_safetensors([&](nlohmann::json& h) {
    h[key]["data_offsets"][1] = h[key]["data_offsets"][1].get<uint64_t>() - 2;
  });
  EXPECT_THAT(load_error(wrong_size), HasSubstr("need"));
  auto overlap = edited_safetensors([&](nlohmann::json& h) {
    h[key]["data_offsets"] = h["vision_model.encoder.layers.0.mlp.fc2.weight"]["data_offsets"];
  });
  EXPECT_THAT(load_error(overlap), HasSubstr("overlap"));
  auto bad_json = edited_safetensors([&](nlohmann::json& h) { h[key]["dtype"] = "Q4"; });
  EXPECT_THAT(load_error(bad_json), HasSubstr("unsupported dtype 'Q4'"));
}

TEST_F(WeightsTest, WrongKeyNamesAreListedByName) {
  auto renamed = edited_safetensors([&](nlohmann::json& h) {
    h["vision_model.encoder.layers.1.layer_norm_one.weight"] =
        h["vision_model.encoder.layers.1.layer_norm1.weight"];
    h.erase("vision_model.encoder.layers.1.layer_norm1.weight");
  });
  const auto msg = load_error(renamed);
  EXPECT_THAT(msg, HasSubstr("vision_model.encoder.layers.1.layer_norm_one.weight"));
  EXPECT_THAT(msg, HasSubstr("unexpected"));
  // Dropping a key: the missing one is named in OpenAI's terms.
  auto dropped = edited_safetensors(
      [&](nlohmann::json& h) { h.erase("vision_model.encoder.layers.2.mlp.fc2.bias"); });
  const auto msg2 = load_error(dropped);
  EXPECT_THAT(msg2, HasSubstr("missing keys: transformer.resblocks.2.mlp.c_proj.bias"));
}

TEST_F(WeightsTest, WrongShapesAreListedByName) {
  auto w = read_clip_weights(kDir + "tiny_clip_openai.pt");
  w.tensors["transformer.resblocks.1.mlp.c_fc.weight"] = torch::zeros({100, 32});
  w.tensors["ln_post.bias"] = torch::zeros({31});
  try {
    infer_arch(w, "x.pt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("wrong shapes"));
    EXPECT_THAT(e.what(), HasSubstr("transformer.resblocks.1.mlp.c_fc.weight [100, 32] (expected "
                                    "[128, 32])"));
    EXPECT_THAT(e.what(), HasSubstr("ln_post.bias [31]"));
  }
  // Same through a file: a written safetensors with a mis-shaped HF tensor.
  SafetensorsFile src(kDir + "tiny_clip_hf.safetensors");
  std::map<std::string, torch::Tensor> t;
  for (const auto& kv : src.entries()) t[kv.first] = src.tensor(kv.first);
  t["vision_model.pre_layrnorm.weight"] = torch::ones({33}, torch::kHalf);
  write_safetensors(file("shape.safetensors"), t);
  EXPECT_THAT(load_error(file("shape.safetensors")), HasSubstr("ln_pre.weight [33]"));
}

TEST_F(WeightsTest, NonFiniteWeightsAreRejected) {
  // A NaN anywhere in the weights would make every feature NaN (and the run exit 0).
  SafetensorsFile src(kDir + "tiny_clip_hf.safetensors");
  std::map<std::string, torch::Tensor> t;
  for (const auto& kv : src.entries()) t[kv.first] = src.tensor(kv.first).clone();
  t["vision_model.encoder.layers.1.mlp.fc1.weight"][3][5] = std::nanf("");
  write_safetensors(file("nan.safetensors"), t);
  const std::string msg = load_error(file("nan.safetensors"));
  EXPECT_THAT(msg, HasSubstr(file("nan.safetensors")));
  EXPECT_THAT(msg, HasSubstr("transformer.resblocks.1.mlp.c_fc.weight' holds NaN or inf"));
}

TEST_F(WeightsTest, NonClipTorchScriptIsRejected) {
  torch::jit::Module m("Net");
  m.register_parameter("weight", torch::ones({4, 4}), false);
  m.save(file("net.pt"));
  const auto msg = load_error(file("net.pt"));
  EXPECT_THAT(msg, HasSubstr("no 'visual' submodule"));
  EXPECT_THAT(msg, HasSubstr(file("net.pt")));
  // A 'visual' submodule with other contents: missing CLIP keys, named.
  torch::jit::Module root("Root"), visual("Visual");
  visual.register_parameter("fc", torch::ones({4, 4}), false);
  root.register_module("visual", visual);
  root.save(file("visual.pt"));
  EXPECT_THAT(load_error(file("visual.pt")), HasSubstr("missing key 'class_embedding'"));
}

TEST_F(WeightsTest, ConfigJsonActivationAndHeads) {
  fs::copy_file(kDir + "tiny_clip_hf.safetensors", file("model.safetensors"));
  write_all(file("config.json"), R"({"hidden_act": "gelu", "num_attention_heads": 4})");
  auto bb = load_backbone(file("model.safetensors"));
  EXPECT_EQ(bb.arch.activation, "gelu");
  EXPECT_EQ(bb.arch.heads, 4);
  write_all(file("config.json"),
            R"({"vision_config": {"hidden_act": "relu", "num_attention_heads": 2}})");
  EXPECT_THAT(load_error(file("model.safetensors")), HasSubstr("unsupported activation 'relu'"));
  write_all(file("config.json"), "{not json");
  EXPECT_THAT(load_error(file("model.safetensors")), HasSubstr("config.json"));
  // Without hidden_act, HF's default quick_gelu.
  write_all(file("config.json"), R"({"num_attention_heads": 2})");
  auto plain = load_backbone(file("model.safetensors"));
  EXPECT_EQ(plain.arch.activation, "quick_gelu");
  EXPECT_EQ(plain.arch.heads, 2);
  // The head count is not in the shapes: a missing, zero or mistyped one is refused.
  for (const char* bad : {R"({"hidden_act": "gelu"})", R"({"num_attention_heads": 0})",
                          R"({"num_attention_heads": "2"})"}) {
    write_all(file("config.json"), bad);
    const std::string msg = load_error(file("model.safetensors"));
    EXPECT_THAT(msg, HasSubstr("config.json")) << bad;
    EXPECT_THAT(msg, HasSubstr("num_attention_heads")) << bad;
  }
  write_all(file("config.json"), R"({"num_attention_heads": 3})");  // 32 channels
  EXPECT_THAT(load_error(file("model.safetensors")), HasSubstr("not divisible by 3 heads"));
  fs::remove(file("config.json"));
  EXPECT_THAT(load_error(file("model.safetensors")), HasSubstr("no config.json beside it"));
}

TEST_F(WeightsTest, SafetensorsRoundTripAndTensorViews) {
  SafetensorsFile src(kDir + "tiny_clip_hf.safetensors");
  EXPECT_EQ(src.metadata().at("format"), "pt");
  auto ids = src.tensor("vision_model.embeddings.position_ids");
  EXPECT_EQ(ids.scalar_type(), torch::kLong);
  EXPECT_EQ(ids[0][16].item<int64_t>(), 16);
  std::map<std::string, torch::Tensor> t = {{"a", torch::arange(6.0).view({2, 3})},
                                            {"b", torch::tensor({1, 2}, torch::kLong)}};
  write_safetensors(file("rt.safetensors"), t, {{"k", "v"}});
  SafetensorsFile back(file("rt.safetensors"));
  EXPECT_TRUE(torch::equal(back.tensor("a"), t["a"]));
  EXPECT_TRUE(torch::equal(back.tensor("b"), t["b"]));
  EXPECT_EQ(back.metadata().at("k"), "v");
  EXPECT_THROW(back.tensor("c"), Error);
}

TEST_F(WeightsTest, Xxh64MatchesPublishedVectors) {
  write_all(file("empty"), "");
  EXPECT_EQ(xxh64_file_hex(file("empty")), "ef46db3751d8e999");
  write_all(file("abc"), "abc");
  EXPECT_EQ(xxh64_file_hex(file("abc")), "44bc2cf5ad770999");
}

}  // namespace
}  // namespace evl
