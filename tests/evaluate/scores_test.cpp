// Tests the HDF5 score file: round trips, atomic writes, files written by h5py
// in other exporters' styles, the corruption catalogue of make_bad_scores.py
// (each error must name the file and what is wrong), and h5py reading evl's files.
#include "evaluate/scores.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "common/check.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("evl_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

using evl::test::sh;

evl::ScoreFile sample(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  evl::ScoreFile f;
  f.kind = evl::ScoreKind::kLogits;
  f.scores.resize(n * k);
  for (auto& v : f.scores) v = g(rng);
  for (int64_t i = 0; i < n; ++i) {
    f.labels.push_back(i % 5 == 4 ? -1 : static_cast<int64_t>(rng() % k));
    f.video_ids.push_back("clip/é" + std::to_string(i) + ".mp4");
  }
  f.num_views = 3;
  f.model = "evl-b16-8x16";
  return f;
}

}  // namespace

TEST(Scores, RoundTripKeepsEverything) {
  const fs::path dir = temp_dir("scores_rt");
  const std::string path = (dir / "s.h5").string();
  const evl::ScoreFile f = sample(37, 11, 1);
  evl::write_scores(path, f);
  const evl::ScoreFile g = evl::read_scores(path);
  EXPECT_EQ(g.scores, f.scores);
  EXPECT_EQ(g.labels, f.labels);
  EXPECT_EQ(g.video_ids, f.video_ids);
  EXPECT_EQ(g.kind, evl::ScoreKind::kLogits);
  EXPECT_EQ(g.num_views, 3);
  EXPECT_EQ(g.model, "evl-b16-8x16");
  EXPECT_FALSE(g.evl_version.empty());
  EXPECT_EQ(g.num_videos(), 37);
  EXPECT_EQ(g.num_classes(), 11);
  fs::remove_all(dir);
}

TEST(Scores, WriteIsAtomicAndOverwrites) {
  const fs::path dir = temp_dir("scores_atomic");
  const std::string path = (dir / "s.h5").string();
  evl::write_scores(path, sample(5, 3, 2));
  evl::write_scores(path, sample(8, 4, 3));
  EXPECT_EQ(evl::read_scores(path).num_videos(), 8);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1) << "a temporary file was left behind";
  // A failed write (invalid content) leaves the old file untouched.
  evl::ScoreFile bad = sample(4, 3, 4);
  bad.scores[5] = NAN;
  EXPECT_THROW(evl::write_scores(path, bad), evl::Error);
  EXPECT_EQ(evl::read_scores(path).num_videos(), 8);
  // Unwritable destination: error names the path.
  try {
    evl::write_scores((dir / "no/such/dir/s.h5").string(), sample(2, 2, 5));
    FAIL();
  } catch (const evl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/s.h5"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Scores, WriteValidates) {
  evl::ScoreFile f = sample(4, 3, 6);
  f.video_ids[2] = f.video_ids[0];
  EXPECT_THROW(evl::write_scores("/tmp/evl_never_written.h5", f), evl::Error);
  f = sample(4, 3, 6);
  f.labels[1] = 3;
  EXPECT_THROW(evl::write_scores("/tmp/evl_never_written.h5", f), evl::Error);
  f = sample(4, 3, 6);
  f.scores.pop_back();
  EXPECT_THROW(evl::write_scores("/tmp/evl_never_written.h5", f), evl::Error);
  EXPECT_FALSE(fs::exists("/tmp/evl_never_written.h5"));
}

TEST(Scores, ToProbabilitiesIsARowSoftmax) {
  evl::ScoreFile f = sample(9, 7, 8);
  f.scores[0] = 80.0f;  // large logits must not overflow
  const auto p = evl::to_probabilities(f);
  for (int64_t i = 0; i < 9; ++i) {
    long double z = 0;
    for (int64_t j = 0; j < 7; ++j) z += std::exp(static_cast<long double>(f.scores[i * 7 + j]));
    for (int64_t j = 0; j < 7; ++j) {
      const long double want = std::exp(static_cast<long double>(f.scores[i * 7 + j])) / z;
      EXPECT_NEAR(p[i * 7 + j], static_cast<double>(want), 1e-7) << i << "," << j;
    }
  }
  f.kind = evl::ScoreKind::kProbabilities;
  EXPECT_EQ(evl::to_probabilities(f), f.scores);
}

TEST(Scores, MissingFileIsNamed) {
  try {
    evl::read_scores("/nonexistent/scores.h5");
    FAIL();
  } catch (const evl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'/nonexistent/scores.h5': no such file"),
              std::string::npos)
        << e.what();
  }
}

TEST(Scores, CorruptionCatalogueAndForeignFiles) {
  const fs::path dir = temp_dir("scores_catalogue");
  ASSERT_EQ(sh(std::string(EVL_PYTHON) + " " + EVL_SOURCE_DIR +
               "/tests/evaluate/make_bad_scores.py '" + dir.string() + "'"),
            0);
  nlohmann::json cat;
  std::ifstream(dir / "catalogue.json") >> cat;
  ASSERT_GE(cat["bad"].size(), 15u);
  for (const auto& [name, expected] : cat["bad"].items()) {
    SCOPED_TRACE(name);
    const std::string path = (dir / name).string();
    try {
      evl::read_scores(path);
      ADD_FAILURE() << "no error for " << name;
    } catch (const evl::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("score file '" + path + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(expected.get<std::string>()), std::string::npos) << msg;
    }
  }
  const auto& want = cat["foreign"];
  const evl::ScoreFile f = evl::read_scores((dir / want["file"].get<std::string>()).string());
  EXPECT_EQ(f.kind, evl::ScoreKind::kLogits);
  EXPECT_EQ(f.num_views, 1);
  EXPECT_EQ(f.model, "foreign");  // the file's stem when there is no `model` attribute
  EXPECT_EQ(f.video_ids, want["video_ids"].get<std::vector<std::string>>());
  EXPECT_EQ(f.labels, want["labels"].get<std::vector<int64_t>>());
  const auto scores = want["scores"].get<std::vector<std::vector<double>>>();
  for (int64_t i = 0; i < f.num_videos(); ++i)
    for (int64_t j = 0; j < f.num_classes(); ++j)
      EXPECT_EQ(f.scores[i * f.num_classes() + j], static_cast<float>(scores[i][j]));
  fs::remove_all(dir);
}

TEST(Scores, DamagedStringReferencesAreErrorsNotCrashes) {
  // Variable-length strings (video_ids, the string attributes) live in HDF5's
  // global heap ("GCOL" collections); each element of the dataset or attribute
  // holds (length u32, collection address u64, object index u32). Before reads
  // were isolated, a flipped high byte of an index or of a heap object's size
  // crashed libhdf5 (SIGSEGV) or made it loop. Each such flip must now be an
  // evl::Error naming the file (this test process would die otherwise).
  const fs::path dir = temp_dir("scores_flip");
  const std::string good = (dir / "good.h5").string(), bad = (dir / "bad.h5").string();
  evl::write_scores(good, sample(6, 4, 3));
  std::ifstream in(good, std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(in)), {});
  const size_t gcol = raw.find("GCOL");
  ASSERT_NE(gcol, std::string::npos);
  std::vector<size_t> at;  // the high bytes of every object index referring to the collection
  const std::string addr(reinterpret_cast<const char*>(&gcol), 8);  // little-endian
  for (size_t p = raw.find(addr); p != std::string::npos; p = raw.find(addr, p + 1))
    if (p >= 4 && p + 12 <= raw.size()) at.push_back(p + 11);
  ASSERT_GE(at.size(), 6u) << "expected a reference per video id";
  at.push_back(gcol + 16 + 8 + 7);  // the high byte of the first heap object's size
  int errors = 0, read_ok = 0;
  for (const size_t p : at) {
    std::string b = raw;
    b[p] = static_cast<char>(b[p] ^ 0x80);
    std::ofstream(bad, std::ios::binary) << b;
    try {
      evl::read_scores(bad);
      ++read_ok;  // a flip HDF5 reads past (e.g. a slot it never uses) is fine
    } catch (const evl::Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find("score file '" + bad + "'"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_GE(errors, 6) << read_ok << " damaged files read without an error";
  fs::remove_all(dir);
}

TEST(Scores, H5pyReadsEvlFiles) {
  const fs::path dir = temp_dir("scores_h5py");
  const std::string path = (dir / "s.h5").string(), out = (dir / "s.json").string();
  const evl::ScoreFile f = sample(6, 4, 9);
  evl::write_scores(path, f);
  const std::string script =
      "import h5py, json, sys\n"
      "f = h5py.File(sys.argv[1], 'r')\n"
      "json.dump({'scores': f['scores'][...].tolist(), 'dtype': str(f['scores'].dtype),\n"
      "  'labels': f['labels'][...].tolist(), 'ldtype': str(f['labels'].dtype),\n"
      "  'ids': [s.decode() for s in f['video_ids'][...]], 'kind': f.attrs['kind'],\n"
      "  'num_views': int(f.attrs['num_views']), 'model': f.attrs['model']},\n"
      "  open(sys.argv[2], 'w'))\n";
  std::ofstream(dir / "read.py") << script;
  ASSERT_EQ(sh(std::string(EVL_PYTHON) + " '" + (dir / "read.py").string() + "' '" + path + "' '" +
               out + "'"),
            0);
  nlohmann::json j;
  std::ifstream(out) >> j;
  EXPECT_EQ(j["dtype"], "float32");
  EXPECT_EQ(j["ldtype"], "int64");
  EXPECT_EQ(j["kind"], "logits");
  EXPECT_EQ(j["num_views"], 3);
  EXPECT_EQ(j["model"], "evl-b16-8x16");
  EXPECT_EQ(j["ids"].get<std::vector<std::string>>(), f.video_ids);
  EXPECT_EQ(j["labels"].get<std::vector<int64_t>>(), f.labels);
  const auto s = j["scores"].get<std::vector<std::vector<double>>>();
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(static_cast<float>(s[i][c]), f.scores[i * 4 + c]);
  fs::remove_all(dir);
}
