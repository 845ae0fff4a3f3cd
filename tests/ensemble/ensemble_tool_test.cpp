// Tests the evl_ensemble tool end to end against the brute-force numpy search
// (ensemble_reference.py) on a fixture written with h5py at test time
// (make_fixture.py: an evl-style file, an "other model" float64-logits file
// with byte ids and shuffled rows, a logits file): every point's hits, the
// chosen weights, the fused scores and the chosen metrics; plus its errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "evaluate/scores.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

using evl::test::Exec;
using evl::test::run;
using evl::test::slurp;

class EnsembleTool : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("evl_ensemble_tool_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const Exec r =
        run(std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR + "/tests/ensemble/make_fixture.py '" +
                dir_.string() + "' --models 3 --n 400 --k 15 --seed 3",
            dir_);
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string files(const std::string& split, int m) {
    std::string s;
    for (int i = 0; i < m; ++i)
      s += " '" + (dir_ / (split + "_" + std::to_string(i) + ".h5")).string() + "'";
    return s;
  }
  static std::string tool() { return std::string(EVL_TOOLS_DIR) + "/evl_ensemble"; }

  // Runs evl and the numpy reference on the same inputs and compares them.
  static void compare(int models, bool with_test, const std::string& step) {
    const std::string val = files("val", models), test = with_test ? files("test", models) : "";
    const fs::path report = dir_ / "report.json", fused = dir_ / "fused.h5",
                   ref = dir_ / "ref.json";
    const Exec e = run(tool() + " --val" + val + (with_test ? " --test" + test : "") +
                           " --alpha-step " + step + " --json '" + report.string() + "' --out '" +
                           fused.string() + "' --threads 2",
                       dir_);
    ASSERT_EQ(e.code, 0) << e.err;
    const Exec p = run(std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
                           "/tests/ensemble/ensemble_reference.py --val" + val +
                           (with_test ? " --test" + test : "") + " --step " + step + " --json '" +
                           ref.string() + "'",
                       dir_);
    ASSERT_EQ(p.code, 0) << p.err;
    nlohmann::json a, b;
    std::ifstream(report) >> a;
    std::ifstream(ref) >> b;
    ASSERT_EQ(a["num_points"], b["num_points"]);
    EXPECT_NE(e.out.find("grid: " + std::to_string(b["num_points"].get<int>()) + " weight vectors"),
              std::string::npos)
        << e.out;
    for (size_t i = 0; i < b["points"].size(); ++i) {
      SCOPED_TRACE(i);
      const auto &pa = a["points"][i], &pb = b["points"][i];
      EXPECT_EQ(pa["weights"], pb["weights"]);
      EXPECT_EQ(pa["val_top1_hits"], pb["val_top1_hits"]);
      EXPECT_EQ(pa["val_top5_hits"], pb["val_top5_hits"]);
      if (with_test) {
        EXPECT_EQ(pa["test_top1_hits"], pb["test_top1_hits"]);
        EXPECT_EQ(pa["test_top5_hits"], pb["test_top5_hits"]);
      }
    }
    EXPECT_EQ(a["chosen"]["index"], b["chosen"]);
    EXPECT_EQ(a["chosen"]["weights"], b["weights"]);
    const std::string split = with_test ? "test" : "val";
    const auto& want = b[split + "_metrics"];
    const auto& got = a["chosen"][split];
    EXPECT_EQ(got["confusion"], want["confusion"]);
    EXPECT_NEAR(got["mean_class_accuracy"].get<double>(), want["mean_class_accuracy"].get<double>(),
                1e-12);
    // The fused file: probabilities, aligned by id, equal to numpy's fusion.
    const evl::ScoreFile f = evl::read_scores(fused.string());
    EXPECT_EQ(f.kind, evl::ScoreKind::kProbabilities);
    const auto ids = b[split + "_ids"].get<std::vector<std::string>>();
    const auto ref_fused = b[split + "_fused"].get<std::vector<std::vector<double>>>();
    ASSERT_EQ(f.video_ids, ids);
    const int64_t k = f.num_classes();
    for (size_t i = 0; i < ids.size(); ++i)
      for (int64_t c = 0; c < k; ++c)
        ASSERT_NEAR(f.scores[i * k + c], ref_fused[i][c], 1e-6) << ids[i] << " class " << c;
  }

  static fs::path dir_;
};
fs::path EnsembleTool::dir_;

}  // namespace

TEST_F(EnsembleTool, TwoModelsMatchNumpy) { compare(2, false, "0.1"); }
TEST_F(EnsembleTool, ThreeModelSimplexWithTestMatchesNumpy) { compare(3, true, "0.1"); }
TEST_F(EnsembleTool, FineStepMatchesNumpy) { compare(2, true, "0.02"); }

TEST_F(EnsembleTool, ErrorsNameTheFiles) {
  const std::string val = files("val", 2);
  // Val and test ids differ -> as val vs test of the same model they mismatch.
  Exec r = run(tool() + " --val '" + (dir_ / "val_0.h5").string() + "' '" +
                   (dir_ / "test_1.h5").string() + "'",
               dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cover different videos"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("test_1.h5"), std::string::npos) << r.err;
  std::ofstream(dir_ / "bogus.h5") << "not hdf5";
  r = run(tool() + " --val" + val + " --test '" + (dir_ / "test_0.h5").string() + "' '" +
              (dir_ / "bogus.h5").string() + "'",
          dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("score file '" + (dir_ / "bogus.h5").string() + "': not an HDF5 file"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  r = run(tool() + " --val '" + (dir_ / "val_0.h5").string() + "'", dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("at least 2"), std::string::npos) << r.err;
  r = run(tool() + " --val" + val + " --alpha-step 0.3", dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("must divide 1"), std::string::npos) << r.err;
  r = run(tool() + " --val" + val + " --test" + files("test", 3), dir_);
  EXPECT_EQ(r.code, 2);
}

TEST_F(EnsembleTool, IntersectUsesCommonVideosAndClassCountsMustMatch) {
  // A third model over a subset of the videos and with a different class count.
  const std::string script =
      "import h5py, numpy as np, sys\n"
      "src = h5py.File(sys.argv[1], 'r')\n"
      "for name, k in (('subset.h5', None), ('wider.h5', 20)):\n"
      "  with h5py.File(sys.argv[2] + '/' + name, 'w') as f:\n"
      "    s = src['scores'][::2]\n"
      "    if k: s = np.concatenate([s, np.zeros((s.shape[0], k - s.shape[1]), s.dtype)], 1)\n"
      "    f['scores'] = s; f['labels'] = src['labels'][::2]; f['video_ids'] = "
      "src['video_ids'][::2]\n"
      "    f.attrs['kind'] = src.attrs['kind']\n";
  std::ofstream(dir_ / "subset.py") << script;
  ASSERT_EQ(run(std::string(EVL_PYTHON) + " '" + (dir_ / "subset.py").string() + "' '" +
                    (dir_ / "val_0.h5").string() + "' '" + dir_.string() + "'",
                dir_)
                .code,
            0);
  const std::string a = " '" + (dir_ / "val_1.h5").string() + "'";
  Exec r = run(tool() + " --val" + a + " '" + (dir_ / "subset.h5").string() + "'", dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--intersect"), std::string::npos) << r.err;
  r = run(tool() + " --val" + a + " '" + (dir_ / "subset.h5").string() + "' --intersect", dir_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("videos: val 200 "), std::string::npos) << r.out;
  r = run(tool() + " --val" + a + " '" + (dir_ / "wider.h5").string() + "' --intersect", dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("different class counts (15 vs 20)"), std::string::npos) << r.err;
}

// The picture scripts (scripts/plot/) turn a report, a confusion matrix and a
// metrics.jsonl into non-empty PNG files; bad input is an error naming the file.
TEST_F(EnsembleTool, PictureScriptsWritePngs) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "no gnuplot";
  const std::string plot = std::string(EVL_SOURCE_DIR) + "/scripts/plot/";
  const fs::path r2 = dir_ / "r2.json", r3 = dir_ / "r3.json", jsonl = dir_ / "metrics.jsonl";
  ASSERT_EQ(run(tool() + " --val" + files("val", 2) + " --test" + files("test", 2) + " --json '" +
                    r2.string() + "'",
                dir_)
                .code,
            0);
  ASSERT_EQ(run(tool() + " --val" + files("val", 3) + " --json '" + r3.string() + "'", dir_).code,
            0);
  {
    std::ofstream os(jsonl);
    for (int s = 0; s <= 200; s += 10) {
      os << "{\"step\":" << s << ",\"loss\":" << 2.0 / (1 + s)
         << ",\"lr\":4e-4,\"samples_per_s\":100";
      if (s % 50 == 0) os << ",\"val_top1\":" << 0.3 + s / 1000.0 << ",\"val_top5\":0.8";
      os << "}\n";
    }
  }
  const std::vector<std::pair<std::string, fs::path>> jobs = {{"alpha_curve.sh", r2},
                                                              {"alpha_curve.sh", r3},
                                                              {"confusion.sh", r2},
                                                              {"confusion.sh", r3},
                                                              {"training_curves.sh", jsonl}};
  int i = 0;
  for (const auto& [script, input] : jobs) {
    SCOPED_TRACE(script + " " + input.string());
    const fs::path png = dir_ / ("pic" + std::to_string(i++) + ".png");
    const Exec r =
        run("'" + plot + script + "' '" + input.string() + "' '" + png.string() + "'", dir_);
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(fs::exists(png));
    EXPECT_GT(fs::file_size(png), 2000u);
    EXPECT_EQ(slurp(png).substr(1, 3), "PNG");
  }
  const Exec bad = run("'" + plot + "alpha_curve.sh' '" + (dir_ / "nope.json").string() + "' '" +
                           (dir_ / "x.png").string() + "'",
                       dir_);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("nope.json"), std::string::npos) << bad.err;
}
