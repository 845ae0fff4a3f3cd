// evl_eval and evl_predict against independent references:
//  - an official-format checkpoint on a cache holding the inputs of
//    tests/fixtures/head/head_reference.pt: fused scores == the mean of the
//    softmax of PyTorch's logits (make_head_reference.py);
//  - on real (synthetic motion) videos: extract -> train a few steps -> eval,
//    checked against a brute-force loop (one record at a time, softmax, mean
//    per video), and evl_predict on the same videos == the eval scores;
//  - bad inputs: missing checkpoint, cache/checkpoint mismatches naming the
//    field, labels outside the head, an undecodable video.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cache/cache.h"
#include "evaluate/scores.h"
#include "tests/support/quant_reference.h"
#include "tests/support/rounding_budget.h"
#include "tests/support/test_support.h"
#include "tests/support/torch_support.h"
#include "train/cached_dataset.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace evl;

namespace {

const std::string kSource = EVL_SOURCE_DIR;
const std::string kOfficial = kSource + "/tests/fixtures/head/official_ddp.pth";

using test::run;
using test::slurp;
using test::TempDir;
using test::tool;

c10::Dict<c10::IValue, c10::IValue> head_reference() {
  return test::load_pickle_dict(kSource + "/tests/fixtures/head/head_reference.pt");
}

// A qk cache of one clip per entry of `views` ((x, q, k) per view, each
// (M, T, L, C)) with a manifest describing those shapes, stored as `dtype`;
// with `as_read`, float32 arrays holding what a reader of an int8/fp8 cache
// gets (FORMAT.md's decode of the codes and scales, tests/support/quant_reference.h).
struct SyntheticClip {
  std::string id;
  int64_t label = -1;
  std::vector<std::array<torch::Tensor, 3>> views;
};

void write_cache(const fs::path& dir, const std::vector<SyntheticClip>& clips, int64_t heads,
                 cache::DType dtype = cache::DType::kF32, bool as_read = false) {
  auto array = [&](const torch::Tensor& t) {
    if (dtype == cache::DType::kF32) return test::f32_array(t);
    const auto c = t.to(torch::kFloat).contiguous();
    cache::Array a = cache::make_array(dtype, c.sizes().vec(), c.data_ptr<float>(),
                                       static_cast<size_t>(c.numel()));
    if (!as_read) return a;
    const auto v = test::reference_dequantize(a);
    return cache::make_array(cache::DType::kF32, a.shape, v.data(), v.size());
  };
  fs::create_directories(dir);
  const std::string shard = cache::shard_name(0, 1);
  const auto& first = clips.at(0).views.at(0)[0];  // (M, T, L, C)
  int64_t records = 0;
  {
    cache::ShardWriter w((dir / shard).string());
    for (size_t c = 0; c < clips.size(); ++c)
      for (size_t v = 0; v < clips[c].views.size(); ++v, ++records) {
        cache::Record r;
        r.clip_index = static_cast<int64_t>(c);
        r.view_index = static_cast<int32_t>(v);
        r.key = cache::make_key(r.clip_index, r.view_index);
        r.video_id = clips[c].id;
        r.label = clips[c].label;
        r.arrays = {{"x", array(clips[c].views[v][0])},
                    {"q", array(clips[c].views[v][1])},
                    {"k", array(clips[c].views[v][2])}};
        w.put(r);
      }
  }
  cache::Manifest m;
  const int64_t grid = static_cast<int64_t>(std::lround(std::sqrt(first.size(2) - 1)));
  m.backbone.file = "synthetic.pt", m.backbone.hash = "00",
  m.backbone.format = "openai-torchscript";
  m.backbone.width = first.size(3), m.backbone.depth = first.size(0), m.backbone.heads = heads;
  m.backbone.patch = 8, m.backbone.grid = grid, m.backbone.input_size = 8 * grid;
  for (int64_t i = 0; i < first.size(0); ++i) m.layers.push_back(i);
  m.storage = cache::StorageMode::kQK;
  m.dtype = as_read ? cache::DType::kF32 : dtype;
  m.frames = first.size(1);
  m.temporal_views = static_cast<int64_t>(clips[0].views.size());
  m.mean = {0.5, 0.5, 0.5}, m.std = {0.2, 0.2, 0.2};
  m.num_clips = static_cast<int64_t>(clips.size());
  m.shards = {{shard, records}};
  m.save(dir.string());
}

// The reference's B inputs as the 3 views of one clip labelled 1.
SyntheticClip reference_clip(const c10::Dict<c10::IValue, c10::IValue>& ref) {
  SyntheticClip clip{"ref_video", 1, {}};
  const int64_t layers = ref.at("layers").toInt(), batch = ref.at("B").toInt();
  for (int64_t b = 0; b < batch; ++b) {
    std::array<torch::Tensor, 3> view;
    for (int a = 0; a < 3; ++a) {
      std::vector<torch::Tensor> per_layer;
      for (int64_t i = 0; i < layers; ++i)
        per_layer.push_back(
            ref.at(std::string(1, "xqk"[a]) + "/" + std::to_string(i)).toTensor()[b]);
      view[static_cast<size_t>(a)] = torch::stack(per_layer);
    }
    clip.views.push_back(view);
  }
  return clip;
}

std::vector<float> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

void expect_near(const std::vector<float>& got, const std::vector<float>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol) << what << " [" << i << "]";
}

}  // namespace

// (c) An official checkpoint (torch.save({'model': DDP state dict})) scores a
// clip as the mean of the softmax of the logits PyTorch computed.
TEST(EvlEval, OfficialCheckpointMatchesPyTorch) {
  TempDir tmp("evl_eval_official");
  const auto ref = head_reference();
  write_cache(tmp.path() / "cache", {reference_clip(ref)}, ref.at("heads").toInt());
  const auto logits = ref.at("logits").toTensor().to(torch::kDouble);  // (B, K) from PyTorch
  const auto want_prob = to_vector(logits.softmax(-1).mean(0));
  const auto want_logits = to_vector(logits.mean(0));
  // evl_eval runs the head in float32: its logits are within the forward
  // rounding budget (rounding_budget / 2 units u of max |logit|) of PyTorch's
  // float64 ones. A softmax moves by at most 2 max |d logit| (|dp_i| <= p_i
  // (|dz_i| + sum_j p_j |dz_j|)); the softmax, the mean over 3 views and the
  // float32 scores file add a few roundings (<= 8 u) of values <= 1 or <= max |logit|.
  const double u = evl::test::unit_roundoff(torch::kFloat);
  const double scale = logits.abs().max().item<double>();
  evl::HeadConfig head_cfg;
  head_cfg.width = ref.at("C").toInt(), head_cfg.decoder_layers = ref.at("layers").toInt();
  head_cfg.frames = ref.at("T").toInt(), head_cfg.grid = ref.at("grid").toInt();
  const double logit_err = evl::test::rounding_budget(head_cfg) / 2 * u * scale;
  const double logits_tol = logit_err + 8 * u * scale, prob_tol = 2 * logit_err + 8 * u;

  for (const std::string fuse : {"prob", "logits"}) {
    const auto out = tmp.path() / ("scores_" + fuse + ".h5");
    const auto json = tmp.path() / ("report_" + fuse + ".json");
    const auto r = run(tool("evl_eval") + " --cache '" + (tmp.path() / "cache").string() +
                           "' --checkpoint '" + kOfficial + "' --scores '" + out.string() +
                           "' --json '" + json.string() + "' --batch-size 2 --fuse " + fuse,
                       tmp.path());
    ASSERT_EQ(r.code, 0) << r.err;
    const ScoreFile s = read_scores(out.string());
    EXPECT_EQ(s.kind, fuse == "prob" ? ScoreKind::kProbabilities : ScoreKind::kLogits);
    EXPECT_EQ(s.num_views, 3);
    EXPECT_EQ(s.model, "official_ddp.pth");
    EXPECT_EQ(s.video_ids, std::vector<std::string>{"ref_video"});
    EXPECT_EQ(s.labels, std::vector<int64_t>{1});
    expect_near(s.scores, fuse == "prob" ? want_prob : want_logits,
                fuse == "prob" ? prob_tol : logits_tol, fuse);
    const auto report = nlohmann::json::parse(slurp(json));
    EXPECT_EQ(report["checkpoint_format"], "official");
    const auto argmax = std::max_element(want_prob.begin(), want_prob.end()) - want_prob.begin();
    EXPECT_DOUBLE_EQ(report["metrics"]["top1"].get<double>(), argmax == 1 ? 1.0 : 0.0);
    EXPECT_EQ(report["metrics"]["confusion"].size(), 5u);
  }
  // The bare state dict (no 'model', no 'module.') gives the same scores.
  const auto bare = tmp.path() / "bare.h5";
  const auto r =
      run(tool("evl_eval") + " --cache '" + (tmp.path() / "cache").string() + "' --checkpoint '" +
              kSource + "/tests/fixtures/head/official_bare.pth' --scores '" + bare.string() + "'",
          tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_near(read_scores(bare.string()).scores, want_prob, prob_tol, "bare");
}

// Videos that failed extraction (in the list, not in the cache) are reported,
// and top-1 is given both over the evaluated videos and counting them as wrong.
TEST(EvlEval, MissingVideosAreCountedAndReported) {
  TempDir tmp("evl_eval_missing");
  const auto ref = head_reference();
  SyntheticClip clip = reference_clip(ref);
  const auto prob = ref.at("logits").toTensor().softmax(-1).mean(0);
  clip.label = prob.argmax().item<int64_t>();  // a hit: top-1 1 over the evaluated video
  const fs::path dir = tmp.path() / "cache";
  write_cache(dir, {clip}, ref.at("heads").toInt());
  cache::Manifest m = cache::Manifest::load(dir.string());
  m.num_clips = 4;  // 3 videos of the list failed to decode
  m.save(dir.string());
  const auto json = tmp.path() / "report.json";
  const auto r =
      run(tool("evl_eval") + " --cache '" + dir.string() + "' --checkpoint '" + kOfficial +
              "' --scores '" + (tmp.path() / "s.h5").string() + "' --json '" + json.string() + "'",
          tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto report = nlohmann::json::parse(slurp(json));
  EXPECT_EQ(report["num_videos"], 1);
  EXPECT_EQ(report["missing_videos"], 3);
  EXPECT_DOUBLE_EQ(report["metrics"]["top1"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(report["top1_counting_missing_as_wrong"].get<double>(), 0.25);
  EXPECT_NE(r.out.find("3 videos of the list are not in the cache"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("top-1 25.00% counting the 3 missing videos as wrong"), std::string::npos)
      << r.out;
}

// int8/fp8 caches: evl_eval scores them exactly as it scores a float32 cache
// of the values their codes and scales decode to (the same float32 head on
// the same inputs).
TEST(EvlEval, QuantizedCachesScoreTheirDequantizedValues) {
  TempDir tmp("evl_eval_quantized");
  const auto ref = head_reference();
  const SyntheticClip clip = reference_clip(ref);
  auto score = [&](const std::string& name, cache::DType dtype, bool as_read) {
    write_cache(tmp.path() / name, {clip}, ref.at("heads").toInt(), dtype, as_read);
    const auto out = tmp.path() / (name + ".h5");
    const auto r =
        run(tool("evl_eval") + " --cache '" + (tmp.path() / name).string() + "' --checkpoint '" +
                kOfficial + "' --scores '" + out.string() + "' --batch-size 2",
            tmp.path());
    EXPECT_EQ(r.code, 0) << r.err;
    return read_scores(out.string()).scores;
  };
  for (const auto dtype : {cache::DType::kI8, cache::DType::kFP8}) {
    const std::string n = cache::to_string(dtype);
    const auto got = score(n, dtype, false), want = score(n + "_as_read", dtype, true);
    ASSERT_EQ(got.size(), 5u);  // one video, 5 classes
    EXPECT_EQ(got, want) << n;
  }
}

// (d) Caches that do not fit the head are refused, naming the field.
TEST(EvlEval, RefusesMismatchedCacheNamingTheField) {
  TempDir tmp("evl_eval_mismatch");
  struct Case {
    std::string name, field;
    int64_t layers, frames, tokens, width;
  };
  // The official fixture's head: M=2, T=4, grid 3 (L=10), C=16.
  const std::vector<Case> cases = {{"frames", "frames", 2, 3, 10, 16},
                                   {"grid", "grid", 2, 4, 5, 16},
                                   {"width", "width", 2, 4, 10, 8},
                                   {"layers", "decoder layers", 1, 4, 10, 16}};
  for (const auto& c : cases) {
    const auto dir = tmp.path() / c.name;
    SyntheticClip clip{"v", 0, {}};
    auto t = torch::randn({c.layers, c.frames, c.tokens, c.width});
    clip.views.push_back({t, t, t});
    write_cache(dir, {clip}, 2);
    const auto r = run(tool("evl_eval") + " --cache '" + dir.string() + "' --checkpoint '" +
                           kOfficial + "' --scores '" + (tmp.path() / "s.h5").string() + "'",
                       tmp.path());
    EXPECT_EQ(r.code, 1) << c.name << ": " << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.field + ":"), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(dir.string()), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp.path() / "s.h5"));
  }
}

// (d) Missing checkpoint, labels beyond the head's classes, wrong label file.
TEST(EvlEval, BadInputsAreClearErrors) {
  TempDir tmp("evl_eval_bad");
  const auto ref = head_reference();
  auto clip = reference_clip(ref);
  write_cache(tmp.path() / "cache", {clip}, 2);
  const std::string base = tool("evl_eval") + " --cache '" + (tmp.path() / "cache").string() +
                           "' --scores '" + (tmp.path() / "s.h5").string() + "'";
  auto r = run(base + " --checkpoint '" + (tmp.path() / "nope.pth").string() + "'", tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("nope.pth"), std::string::npos) << r.err;

  std::ofstream(tmp.path() / "junk.pth") << "not a checkpoint";
  r = run(base + " --checkpoint '" + (tmp.path() / "junk.pth").string() + "'", tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("junk.pth"), std::string::npos) << r.err;

  std::ofstream(tmp.path() / "names.txt") << "a\nb\n";  // 2 names, 5 classes
  r = run(base + " --checkpoint '" + kOfficial + "' --labels '" +
              (tmp.path() / "names.txt").string() + "'",
          tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("names.txt"), std::string::npos) << r.err;

  clip.label = 7;  // the head has 5 classes
  write_cache(tmp.path() / "cache7", {clip}, 2);
  r = run(tool("evl_eval") + " --cache '" + (tmp.path() / "cache7").string() + "' --checkpoint '" +
              kOfficial + "' --scores '" + (tmp.path() / "s.h5").string() + "'",
          tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("label 7"), std::string::npos) << r.err;

  r = run(base + " --checkpoint '" + kOfficial + "' --fuse median", tmp.path());
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_FALSE(fs::exists(tmp.path() / "s.h5"));
}

// (a) + (b) On real decoded videos: evl_extract (fp32) -> evl_train_head (a
// few steps) -> evl_eval, checked against a brute-force loop over the cache's
// records; evl_predict on the same files gives the same probabilities.
TEST(EvlEvalPredict, MotionVideosEndToEnd) {
  TempDir tmp("evl_eval_motion");
  const auto data = tmp.path() / "motion", cache_dir = tmp.path() / "cache",
             run_dir = tmp.path() / "run";
  const std::string backbone = kSource + "/tests/fixtures/backbone/tiny_clip_openai.pt";
  auto r =
      run(std::string(EVL_PYTHON) + " '" + kSource + "/scripts/make_motion_dataset.py' --out '" +
              data.string() + "' --classes 3 --per-class 2 --frames 16 --size 48x40 --jobs 2",
          tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> videos;  // relative paths, as in the list
  {
    std::ofstream all(tmp.path() / "all.txt");
    for (const char* part : {"train.txt", "val.txt"}) {
      std::istringstream in(slurp(data / part));
      std::string path, label;
      while (in >> path >> label) {
        all << path << ' ' << label << '\n';
        videos.push_back(path);
      }
    }
  }
  ASSERT_EQ(videos.size(), 6u);
  r = run(tool("evl_extract") + " --list '" + (tmp.path() / "all.txt").string() + "' --root '" +
              data.string() + "' --backbone '" + backbone + "' --out '" + cache_dir.string() +
              "' --layers last2 --dtype fp32 --frames 4 --stride 3 --temporal-views 2"
              " --spatial-views 3 --threads 1 --batch-size 5",
          tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  r = run(tool("evl_train_head") + " --cache '" + cache_dir.string() + "' --out '" +
              run_dir.string() +
              "' --steps 4 --batch-size 3 --lr 0.01 --eval-every 0 --save-every 0 --threads 1",
          tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string ckpt = (run_dir / "last.pth").string();
  const auto scores = tmp.path() / "scores.h5", report = tmp.path() / "report.json";
  r = run(tool("evl_eval") + " --cache '" + cache_dir.string() + "' --checkpoint '" + ckpt +
              "' --scores '" + scores.string() + "' --json '" + report.string() + "' --labels '" +
              (data / "labels.txt").string() + "' --batch-size 5 --threads 1",
          tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("top-1"), std::string::npos) << r.out;
  const ScoreFile got = read_scores(scores.string());
  ASSERT_EQ(got.num_videos(), 6);
  ASSERT_EQ(got.num_classes(), 3);
  EXPECT_EQ(got.num_views, 6);
  EXPECT_EQ(got.model, "run");       // the run directory's name, recorded in the checkpoint
  EXPECT_EQ(got.video_ids, videos);  // the cache's ids, in list order

  // Brute force: every record alone through the head, softmax, mean per video.
  std::map<std::string, std::pair<torch::Tensor, int64_t>> sum;  // id -> (sum of probs, views)
  std::map<std::string, int64_t> label_of;
  double max_logit = 0, logit_budget = 0;
  {
    torch::NoGradGuard no_grad;
    cache::CacheReader reader(cache_dir.string());
    FeatureConverter conv(reader.manifest(), cache_dir.string(), 0);
    auto loaded = load_head_checkpoint(ckpt);
    auto head = loaded.head;
    logit_budget = evl::test::rounding_budget(loaded.config) / 2;  // forward pass
    for (int64_t i = 0; i < reader.size(); ++i) {
      const cache::Record rec = reader.get(i);
      const auto b = conv.convert({rec});
      const auto logits = head->forward(b.x, b.q, b.k).to(torch::kDouble);
      max_logit = std::max(max_logit, logits.abs().max().item<double>());
      const auto p = logits.softmax(-1)[0];
      auto& slot = sum[rec.video_id];
      slot.first = slot.first.defined() ? slot.first + p : p;
      ++slot.second;
      label_of[rec.video_id] = rec.label;
    }
  }
  // evl_eval (batches of 5) and this loop (batches of 1) both run the head in
  // float32 on the same features: each set of logits is within the forward
  // budget of the exact ones, so they differ by <= 2 logit_budget u max |logit|,
  // a softmax by twice that, plus <= 8 u of roundings of the softmax, the mean
  // and the float32 file.
  const double u = evl::test::unit_roundoff(torch::kFloat);
  const double eval_tol = 2 * (2 * logit_budget * u * max_logit) + 8 * u;
  int64_t hits = 0;
  for (int64_t n = 0; n < 6; ++n) {
    const auto& id = got.video_ids[static_cast<size_t>(n)];
    ASSERT_EQ(sum[id].second, 6) << id;
    const auto want = to_vector(sum[id].first / 6.0);
    const std::vector<float> row(got.scores.begin() + n * 3, got.scores.begin() + n * 3 + 3);
    expect_near(row, want, eval_tol, id);
    EXPECT_EQ(got.labels[static_cast<size_t>(n)], label_of[id]);
    hits += std::max_element(want.begin(), want.end()) - want.begin() == label_of[id];
  }
  const auto rep = nlohmann::json::parse(slurp(report));
  EXPECT_DOUBLE_EQ(rep["metrics"]["top1"].get<double>(), static_cast<double>(hits) / 6.0);
  EXPECT_EQ(rep["metrics"]["class_names"].size(), 3u);
  EXPECT_EQ(rep["metrics"]["per_class_accuracy"].size(), 3u);

  // evl_predict: one process from the video files, settings from the cache the
  // checkpoint recorded (no cache needed); good videos and an undecodable one.
  std::ofstream(tmp.path() / "bad.mp4") << "this is not a video";
  std::string cmd = tool("evl_predict") + " --backbone '" + backbone + "' --checkpoint '" + ckpt +
                    "' --json --topk 3 --threads 1 --labels '" + (data / "labels.txt").string() +
                    "' --video";
  for (const auto& v : videos) cmd += " '" + (data / v).string() + "'";
  r = run(cmd, tmp.path());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("settings from the provenance recorded in checkpoint"), std::string::npos)
      << r.err;
  const auto pred = nlohmann::json::parse(r.out);
  ASSERT_EQ(pred["videos"].size(), 6u);
  for (size_t n = 0; n < 6; ++n) {
    const auto& v = pred["videos"][n];
    EXPECT_EQ(v["video"], (data / videos[n]).string());
    EXPECT_EQ(v["views"], 6);
    std::vector<float> probs(3, -1.f);
    for (const auto& t : v["top"]) probs[t["class"].get<size_t>()] = t["probability"].get<float>();
    const std::vector<float> row(got.scores.begin() + static_cast<int64_t>(n) * 3,
                                 got.scores.begin() + static_cast<int64_t>(n) * 3 + 3);
    // evl_predict recomputes the features with the float32 backbone as well:
    // a second float32 pipeline with its own (at most as large) rounding.
    expect_near(probs, row, 2 * eval_tol, videos[n]);
    EXPECT_GE(v["top"][0]["probability"].get<float>(), v["top"][1]["probability"].get<float>());
    EXPECT_TRUE(v["top"][0].contains("name"));
  }

  // (d) An undecodable video among good ones: the good one is reported, exit 1
  // with an error naming the file.
  r = run(tool("evl_predict") + " --backbone '" + backbone + "' --checkpoint '" + ckpt +
              "' --json --threads 1 '" + (tmp.path() / "bad.mp4").string() + "' '" +
              (data / videos[0]).string() + "'",
          tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bad.mp4"), std::string::npos) << r.err;
  const auto mixed = nlohmann::json::parse(r.out);
  ASSERT_EQ(mixed["videos"].size(), 2u);
  EXPECT_TRUE(mixed["videos"][0].contains("error"));
  EXPECT_EQ(mixed["videos"][1]["top"].size(), 3u);

  // Views that do not fit the head, and a missing checkpoint.
  r = run(tool("evl_predict") + " --backbone '" + backbone + "' --checkpoint '" + ckpt +
              "' --frames 8 '" + (data / videos[0]).string() + "'",
          tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("frames:"), std::string::npos) << r.err;
  r = run(tool("evl_predict") + " --backbone '" + backbone + "' --checkpoint '" +
              (tmp.path() / "missing.pth").string() + "' '" + (data / videos[0]).string() + "'",
          tmp.path());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("missing.pth"), std::string::npos) << r.err;
}
