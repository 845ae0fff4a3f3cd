// Checkpoints: official EVL .pth files (written by make_head_reference.py the
// way the official checkpoint.py writes them) load and give PyTorch's logits;
// evl checkpoints are read by Python's torch.load; save -> load round trips
// the optimizer state; corrupt files raise errors naming the file.
#include "train/checkpoint.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "tests/support/rounding_budget.h"
#include "tests/support/test_support.h"
#include "tests/support/torch_support.h"

namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(EVL_SOURCE_DIR) + "/tests/fixtures/head/";

c10::Dict<c10::IValue, c10::IValue> reference() {
  return evl::test::load_pickle_dict(kFixtures + "head_reference.pt");
}

std::vector<torch::Tensor> layers(const c10::Dict<c10::IValue, c10::IValue>& ref,
                                  const std::string& what) {
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < ref.at("layers").toInt(); ++i)
    out.push_back(ref.at(what + "/" + std::to_string(i)).toTensor());
  return out;
}

// A Python one-liner's stdout; a non-zero exit fails the test.
std::string python_output(const std::string& code, const fs::path& scratch) {
  const auto r = evl::test::run(evl::test::python() + " -c \"" + code + "\"", scratch);
  EXPECT_EQ(r.code, 0) << code << "\n" << r.out << r.err;
  return r.out;
}

}  // namespace

TEST(Checkpoint, OfficialFilesLoadAndReproducePyTorchLogits) {
  const auto ref = reference();
  for (const char* file : {"official_ddp.pth", "official_bare.pth"}) {
    auto loaded =
        evl::load_head_checkpoint(kFixtures + file, /*heads_hint=*/ref.at("heads").toInt());
    EXPECT_EQ(loaded.config.width, ref.at("C").toInt());
    EXPECT_EQ(loaded.config.decoder_layers, ref.at("layers").toInt());
    EXPECT_EQ(loaded.config.frames, ref.at("T").toInt());
    EXPECT_EQ(loaded.config.grid, ref.at("grid").toInt());
    EXPECT_EQ(loaded.config.num_classes, ref.at("classes").toInt());
    EXPECT_TRUE(loaded.config.temporal_conv && loaded.config.temporal_pos_embed &&
                loaded.config.temporal_cross_attention);
    torch::NoGradGuard ng;
    auto logits = loaded.head->forward(layers(ref, "x"), layers(ref, "q"), layers(ref, "k"));
    // PyTorch's logits in float64; this head runs float32: the forward rounding budget.
    const auto want = ref.at("logits").toTensor();
    const double tol = evl::test::rounding_budget(loaded.config) / 2 *
                       evl::test::unit_roundoff(torch::kFloat) * want.abs().max().item<double>();
    EXPECT_EQ(logits.scalar_type(), torch::kFloat) << file;
    EXPECT_LE((logits.to(torch::kDouble) - want).abs().max().item<double>(), tol) << file;
  }
}

TEST(Checkpoint, LibTorchsOwnPickleLoadRejectsTheOfficialFormat) {
  // Why pickle_reader exists: keep this test so a LibTorch upgrade that fixes it is noticed.
  std::ifstream f(kFixtures + "official_ddp.pth", std::ios::binary);
  std::vector<char> buf((std::istreambuf_iterator<char>(f)), {});
  EXPECT_ANY_THROW(torch::pickle_load(buf));
}

TEST(Checkpoint, PythonReadsEvlCheckpointsAndRoundTripRestoresOptimizer) {
  const evl::test::TempDir tmp("ckpt");
  const fs::path& dir = tmp.path();
  evl::HeadConfig cfg;
  cfg.width = 16, cfg.heads = 2, cfg.decoder_layers = 2, cfg.frames = 4, cfg.grid = 3,
  cfg.num_classes = 5;
  torch::manual_seed(3);
  evl::EvlHead head(cfg);
  head->eval();
  torch::optim::AdamW opt(head->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.05));
  std::vector<torch::Tensor> x, q, k;
  for (int i = 0; i < 2; ++i) {
    x.push_back(torch::randn({2, 4, 10, 16}));
    q.push_back(torch::randn({2, 4, 10, 16}));
    k.push_back(torch::randn({2, 4, 10, 16}));
  }
  auto labels = torch::tensor({1, 3});
  auto step = [&](evl::EvlHead& h, torch::optim::AdamW& o) {
    o.zero_grad();
    torch::cross_entropy_loss(h->forward(x, q, k), labels).backward();
    o.step();
  };
  step(head, opt);
  const std::string path = (dir / "ckpt.pth").string();
  evl::save_training_checkpoint(path, head, opt, 1, cfg.to_ini());

  // Python's torch.load reads it: keys, a parameter sum, next_step and config.
  const auto out = python_output(
      "import torch; d=torch.load('" + path +
          "'); m=d['model']; print(len(m), float(m['proj.2.weight'].double().sum()), "
          "d['next_step'], d['config'].splitlines()[0], len(d['optimizer']['state']))",
      dir);
  const auto params = evl::head_state(head);
  std::ostringstream want_prefix;
  want_prefix << params.size() << " ";
  EXPECT_EQ(out.rfind(want_prefix.str(), 0), 0u) << out;
  double sum = head->named_parameters()["proj.2.weight"].to(torch::kDouble).sum().item<double>();
  std::istringstream is(out);
  size_t n;
  double py_sum;
  is >> n >> py_sum;
  EXPECT_NEAR(py_sum, sum, 1e-9 * std::max(1.0, std::abs(sum)));
  EXPECT_NE(out.find(" 1 [head] " + std::to_string(params.size())), std::string::npos) << out;

  // Round trip: a fresh head/optimizer restored from the file takes the same next step.
  torch::manual_seed(99);
  evl::EvlHead other(cfg);
  other->eval();
  torch::optim::AdamW other_opt(other->parameters(),
                                torch::optim::AdamWOptions(1e-3).weight_decay(0.05));
  EXPECT_EQ(evl::load_training_checkpoint(path, other, other_opt), 1);
  step(head, opt);
  step(other, other_opt);
  for (const auto& [name, p] : params)
    EXPECT_TRUE(torch::equal(p, other->named_parameters()[name])) << name;

  // Loading for inference from the evl file uses the recorded heads.
  auto loaded = evl::load_head_checkpoint(path);
  EXPECT_EQ(loaded.config.heads, 2);

  // The loss scaler's state (mixed precision on CUDA) rides along as the
  // official 'loss_scaler' entry; Python reads it, and a resume restores it.
  evl::GradScaler scaler(true);
  scaler.load_state(1024.0, 7);
  const std::string scaled = (dir / "scaled.pth").string();
  evl::save_training_checkpoint(scaled, head, opt, 2, cfg.to_ini(), &scaler);
  const auto ls = python_output("import torch; d=torch.load('" + scaled +
                                    "'); print(d['loss_scaler']['scale'], "
                                    "d['loss_scaler']['growth_tracker'])",
                                dir);
  EXPECT_EQ(ls.rfind("1024.0 7", 0), 0u) << ls;
  evl::GradScaler restored(true);
  EXPECT_EQ(evl::load_training_checkpoint(scaled, other, other_opt, &restored), 2);
  EXPECT_EQ(restored.current_scale(), 1024.0);
  EXPECT_EQ(restored.growth_tracker(), 7);
  evl::GradScaler untouched(true);  // a file without a scaler leaves the defaults
  evl::load_training_checkpoint(path, other, other_opt, &untouched);
  EXPECT_EQ(untouched.current_scale(), 65536.0);
}

TEST(Checkpoint, CorruptFilesNameTheFile) {
  const evl::test::TempDir tmp("ckpt");
  const fs::path& dir = tmp.path();
  const auto full = kFixtures + "official_ddp.pth";
  std::ifstream f(full, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty.pth", ""},
      {"truncated.pth", bytes.substr(0, bytes.size() / 2)},
      {"text.pth", "this is not a checkpoint\n"},
  };
  for (const auto& [name, content] : cases) {
    const auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << content;
    try {
      evl::load_head_checkpoint(path);
      ADD_FAILURE() << name << " loaded";
    } catch (const evl::Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(evl::load_head_checkpoint((dir / "missing.pth").string()), evl::Error);
  // A torch.save file that is not a head: Python-written tensor dict fixture.
  try {
    evl::load_head_checkpoint(kFixtures + "head_reference.pt");
    ADD_FAILURE() << "head_reference.pt is not a state dict";
  } catch (const evl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_reference.pt"), std::string::npos) << e.what();
  }
}
