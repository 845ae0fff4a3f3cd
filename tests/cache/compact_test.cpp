// Compact storage: Q/K recomputed from a block's input with the frozen ln_1 and
// q/k projections, checked against a brute-force double-precision reference,
// and compact-mode export against a qk-mode cache of the same features
// (within fp16 rounding). The HDF5 export is read back with the HDF5 C API.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>

#include "cache/cache.h"
#include "cache/cache_tools.h"
#include "cache_test_util.h"
#include "common/check.h"

using namespace evl::cache;
using namespace evl::cache::testing;

namespace {

constexpr int64_t kC = 16;

Array f32(std::vector<int64_t> shape, const std::vector<float>& v) {
  return make_array(DType::kF32, std::move(shape), v.data(), v.size());
}

// Frozen weights of blocks 2 and 3 (the tiny manifest's layers).
Record make_weights() {
  Record w;
  w.key = "qk_weights";
  for (int b : {2, 3}) {
    auto s = std::to_string(b);
    auto g = synth_values(100 + b, kC), bias = synth_values(200 + b, kC);
    for (auto& x : g) x = 1.0f + 0.25f * x;
    for (auto& x : bias) x *= 0.1f;
    auto wq = synth_values(300 + b, kC * kC), wk = synth_values(400 + b, kC * kC);
    for (auto& x : wq) x *= 0.25f;
    for (auto& x : wk) x *= 0.25f;
    w.arrays.emplace_back("ln_1.weight." + s, f32({kC}, g));
    w.arrays.emplace_back("ln_1.bias." + s, f32({kC}, bias));
    w.arrays.emplace_back("q_proj.weight." + s, f32({kC, kC}, wq));
    w.arrays.emplace_back("q_proj.bias." + s, f32({kC}, synth_values(500 + b, kC)));
    w.arrays.emplace_back("k_proj.weight." + s, f32({kC, kC}, wk));
    w.arrays.emplace_back("k_proj.bias." + s, f32({kC}, synth_values(600 + b, kC)));
  }
  return w;
}

const float* wdata(const Record& w, const std::string& name) {
  return reinterpret_cast<const float*>(w.array(name).bytes.data());
}

// Brute force in double: y = layer_norm(x) @ W^T + b for every row. With `abs`,
// also |b| + sum_c |layer_norm(x)_c W_oc|, the scale of float32's rounding of y.
std::vector<double> reference(const Record& w, int block, const std::string& which,
                              const std::vector<float>& x, std::vector<double>* abs = nullptr) {
  const std::string s = std::to_string(block);
  const float *g = wdata(w, "ln_1.weight." + s), *bb = wdata(w, "ln_1.bias." + s);
  const float *W = wdata(w, which + "_proj.weight." + s), *b = wdata(w, which + "_proj.bias." + s);
  const size_t rows = x.size() / kC;
  std::vector<double> y(x.size());
  if (abs) abs->assign(x.size(), 0.0);
  for (size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < kC; ++c) mean += x[r * kC + c] / double(kC);
    for (int c = 0; c < kC; ++c) var += std::pow(x[r * kC + c] - mean, 2) / double(kC);
    std::vector<double> n(kC);
    for (int c = 0; c < kC; ++c)
      n[c] = (x[r * kC + c] - mean) / std::sqrt(var + 1e-5) * g[c] + bb[c];
    for (int o = 0; o < kC; ++o) {
      double acc = b[o], mag = std::fabs(b[o]);
      for (int c = 0; c < kC; ++c) {
        acc += n[c] * W[o * kC + c];
        mag += std::fabs(n[c] * W[o * kC + c]);
      }
      y[r * kC + o] = acc;
      if (abs) (*abs)[r * kC + o] = mag;
    }
  }
  return y;
}

std::vector<float> read_dataset(hid_t file, const std::string& path, std::vector<hsize_t>* dims) {
  const hid_t ds = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
  EXPECT_GE(ds, 0) << path;
  const hid_t space = H5Dget_space(ds);
  dims->assign(H5Sget_simple_extent_ndims(space), 0);
  H5Sget_simple_extent_dims(space, dims->data(), nullptr);
  std::vector<float> v(H5Sget_simple_extent_npoints(space));
  H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Sclose(space);
  H5Dclose(ds);
  return v;
}

}  // namespace

TEST(Compact, ComputeQkMatchesBruteForce) {
  const Record w = make_weights();
  const auto x = synth_values(9, 5 * 3 * kC);
  std::vector<float> q(x.size()), k(x.size());
  compute_qk(w, 3, x.data(), 15, kC, q.data(), k.data());
  std::vector<double> aq, ak;
  const auto rq = reference(w, 3, "q", x, &aq), rk = reference(w, 3, "k", x, &ak);
  // float32: the normalised input carries <= 3 roundings (scale, gain, bias; the
  // statistics are double), the dot product of length C <= C (its classical
  // bound gamma_C) and the bias 1, each relative to the magnitudes summed.
  const double u = std::ldexp(1.0, -24), per_mag = (kC + 8) * u;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(q[i], rq[i], per_mag * aq[i]);
    EXPECT_NEAR(k[i], rk[i], per_mag * ak[i]);
  }
  EXPECT_THROW(compute_qk(w, 7, x.data(), 15, kC, q.data(), k.data()), evl::Error);
}

TEST(Compact, ExportedQkMatchesDirectlyStoredQk) {
  const Record w = make_weights();
  const Manifest mq = tiny_manifest(StorageMode::kQK, DType::kF16);
  const Manifest mc = tiny_manifest(StorageMode::kCompact, DType::kF16);
  const int64_t T = 3, L = 5, per = T * L * kC;
  TempDir dq("export_qk"), dc("export_compact");
  std::vector<std::vector<float>> blocks;  // per clip: outputs of blocks 1, 2, 3 (fp32)
  {
    ShardWriter wq(dq / "features-00000-of-00001"), wc(dc / "features-00000-of-00001");
    for (int clip = 0; clip < 3; ++clip) {
      const auto b = synth_values(77 + clip, 3 * per);
      blocks.push_back(b);
      Record rc{make_key(clip, 0), "v" + std::to_string(clip), clip, clip, 0, "t0 s0", {}};
      Record rq = rc;
      rc.arrays.emplace_back("x", make_array(DType::kF16, {3, T, L, kC}, b.data(), b.size()));
      // Direct storage: X of layers (blocks 2, 3) and Q/K of those blocks from
      // their fp32 inputs (blocks 1, 2), as the backbone would produce them.
      std::vector<float> q, k;
      for (int l = 0; l < 2; ++l) {
        const std::vector<float> in(b.begin() + l * per, b.begin() + (l + 1) * per);
        for (double v : reference(w, 2 + l, "q", in)) q.push_back(float(v));
        for (double v : reference(w, 2 + l, "k", in)) k.push_back(float(v));
      }
      rq.arrays.emplace_back("x", make_array(DType::kF16, {2, T, L, kC}, b.data() + per, 2 * per));
      rq.arrays.emplace_back("q", make_array(DType::kF16, {2, T, L, kC}, q.data(), q.size()));
      rq.arrays.emplace_back("k", make_array(DType::kF16, {2, T, L, kC}, k.data(), k.size()));
      wq.put(rq);
      wc.put(rc);
    }
  }
  for (auto [dir, m] : {std::pair{dq.str(), mq}, std::pair{dc.str(), mc}}) {
    m.shards = {{"features-00000-of-00001", 3}};
    m.num_clips = 3;
    m.save(dir);
  }
  save_qk_weights(dc.str(), w);
  EXPECT_TRUE(verify_cache(dc.str()).ok());
  EXPECT_EQ(export_h5(dq.str(), dq / "out.h5", -1), 3);
  const std::string cmd = std::string(EVL_TOOLS_DIR) + "/evl_cache export '" + dc.str() +
                          "' --h5 '" + (dc / "out.h5") + "' --limit 2 >/dev/null";
  ASSERT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 0);

  const hid_t fq = H5Fopen((dq / "out.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t fc = H5Fopen((dc / "out.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(fq, 0);
  ASSERT_GE(fc, 0);
  EXPECT_EQ(H5Lexists(fc, "/0000000002", H5P_DEFAULT), 0);  // --limit 2
  for (int clip = 0; clip < 2; ++clip) {
    const std::string g = "/" + make_key(clip, 0) + "/";
    std::vector<hsize_t> dims;
    const auto xq = read_dataset(fq, g + "x", &dims);
    EXPECT_EQ(dims, (std::vector<hsize_t>{2, 3, 5, 16}));
    const auto xc = read_dataset(fc, g + "x", &dims);
    EXPECT_EQ(dims, (std::vector<hsize_t>{2, 3, 5, 16}));
    EXPECT_EQ(xq, xc);  // the same fp16 values either way
    for (const char* name : {"q", "k"}) {
      const auto direct = read_dataset(fq, g + name, &dims);
      const auto recomputed = read_dataset(fc, g + name, &dims);
      EXPECT_EQ(dims, (std::vector<hsize_t>{2, 3, 5, 16}));
      for (size_t i = 0; i < direct.size(); ++i) {
        // Both sides carry fp16 rounding (of Q, or of the block input): a few ulps.
        const double tol = 4.0 / 1024 * (1 + std::fabs(direct[i]));
        ASSERT_NEAR(recomputed[i], direct[i], tol) << name << " " << i;
      }
    }
    // Attributes.
    const hid_t grp = H5Gopen2(fc, g.c_str(), H5P_DEFAULT);
    int64_t label = -2;
    const hid_t a = H5Aopen(grp, "label", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, &label);
    H5Aclose(a);
    EXPECT_EQ(label, clip);
    const hid_t av = H5Aopen(grp, "video_id", H5P_DEFAULT);
    const hid_t t = H5Aget_type(av);
    char* s = nullptr;
    H5Aread(av, t, &s);
    EXPECT_STREQ(s, ("v" + std::to_string(clip)).c_str());
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(av);
    H5Gclose(grp);
  }
  H5Fclose(fq);
  H5Fclose(fc);
}

TEST(Compact, MissingWeightsAreReported) {
  TempDir dir("noweights");
  write_cache(dir.str(), tiny_manifest(StorageMode::kCompact), 0, 2);
  const VerifyReport report = verify_cache(dir.str());
  ASSERT_EQ(report.bad.size(), 1u);
  EXPECT_EQ(report.bad[0].key, "qk_weights.evl");
  EXPECT_THROW(export_h5(dir.str(), dir / "x.h5", 1), evl::Error);
}
