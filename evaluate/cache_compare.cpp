// compare_caches (cache_compare.h): both caches through the loader's
// FeatureConverter, errors summed in float64, then the head's per-clip fused
// scores on each. Flag parsing lives in cache/cache_main.cpp; no verdict here
// beyond the optional thresholds.
#include "evaluate/cache_compare.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/check.h"
#include "common/progress.h"
#include "evaluate/evaluator.h"
#include "evaluate/metrics.h"
#include "train/cached_dataset.h"
#include "train/scoring.h"

namespace evl {

double ArrayError::rel_rms() const {
  if (sum_sq_ref > 0) return std::sqrt(sum_sq_error / sum_sq_ref);
  return sum_sq_error > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

void ArrayError::add(const ArrayError& o) {
  sum_sq_error += o.sum_sq_error;
  sum_sq_ref += o.sum_sq_ref;
  max_abs = std::max(max_abs, o.max_abs);
  values += o.values;
}

namespace {

// Every provenance field check_matches knows that decides what the features
// are, except the two a comparison is about: storage and dtype.
std::vector<std::string> provenance_fields(const cache::Manifest& m) {
  // Not the two compared, nor where the values came from (list, version, conversions).
  static const std::set<std::string> kNot = {"format_version", "storage",    "dtype",
                                             "has_inputs",     "seed",       "list_file",
                                             "num_clips",      "conversions"};
  std::vector<std::string> f;
  for (const std::string& field : cache::provenance_fields())
    if (!kNot.count(field)) f.push_back(field);
  if (m.train_views > 0) f.push_back("seed");  // augmented views are drawn from the seed
  return f;
}

ArrayError measure(const torch::Tensor& a, const torch::Tensor& b) {  // (B, T, L, C) each
  const auto a64 = a.to(torch::kDouble), d = b.to(torch::kDouble) - a64;
  ArrayError e;
  e.sum_sq_error = d.square().sum().item<double>();
  e.sum_sq_ref = a64.square().sum().item<double>();
  e.max_abs = d.abs().max().item<double>();
  e.values = a.numel();
  return e;
}

struct ComparedClip {
  std::string video_id;
  int64_t label = -1;
  bool fused = false;         // same views in both caches
  std::vector<size_t> pairs;  // into the pair list
};

int64_t argmax(const float* row, int64_t k) {  // ties to the lower class (metrics.h)
  int64_t best = 0;
  for (int64_t j = 1; j < k; ++j)
    if (row[j] > row[best]) best = j;
  return best;
}

std::vector<torch::Tensor> last(const std::vector<torch::Tensor>& v, int64_t m) {
  return {v.end() - m, v.end()};
}

void keys_only_in(const cache::CacheReader& here, const cache::CacheReader& other,
                  CompareSide& side) {
  for (const auto& key : here.keys())
    if (other.index_of(key) < 0 && side.only_here++ < static_cast<int64_t>(kListedKeys))
      side.only_keys.push_back(key);
}

}  // namespace

CompareReport compare_caches(const CompareConfig& cfg) {
  EVL_CHECK_USAGE(!cfg.reference.empty() && !cfg.candidate.empty(),
                  "compare needs two caches: the reference A and the candidate B");
  EVL_CHECK_USAGE(cfg.limit == -1 || cfg.limit > 0, "--limit must be positive (or -1: all), got ",
                  cfg.limit);
  EVL_CHECK_USAGE(cfg.batch_size > 0, "--batch-size must be positive, got ", cfg.batch_size);
  EVL_CHECK_USAGE(cfg.min_top1_agreement < 0 || !cfg.checkpoint.empty(),
                  "--min-top1-agreement needs --checkpoint (the head whose top-1 is compared)");
  EVL_CHECK_USAGE(cfg.min_top1_agreement <= 1, "--min-top1-agreement is a fraction in [0, 1], got ",
                  cfg.min_top1_agreement);
  const FuseMode fuse = parse_fuse_mode(cfg.fuse);
  std::error_code ec;  // (LMDB also forbids opening one environment twice in a process)
  EVL_CHECK_USAGE(!std::filesystem::equivalent(cfg.reference, cfg.candidate, ec), "caches '",
                  cfg.reference, "' and '", cfg.candidate, "' are the same directory");

  const CachedDataset a(cfg.reference, 0), b(cfg.candidate, 0);
  const cache::Manifest &ma = a.manifest(), &mb = b.manifest();
  cache::check_matches(
      ma, mb,
      str("cache '", cfg.candidate, "' is not an extraction of the clips of '", cfg.reference, "'"),
      provenance_fields(ma));

  CompareReport report;
  report.limit = cfg.limit;
  report.reference = {cfg.reference, ma.dtype, ma.storage, a.size(), 0, {}};
  report.candidate = {cfg.candidate, mb.dtype, mb.storage, b.size(), 0, {}};
  keys_only_in(a.reader(), b.reader(), report.reference);
  keys_only_in(b.reader(), a.reader(), report.candidate);
  report.common_records = a.size() - report.reference.only_here;
  EVL_CHECK(report.common_records > 0, "caches '", cfg.reference, "' (", a.size(),
            " records) and '", cfg.candidate, "' (", b.size(),
            " records) have no key in common: compare needs the same clips extracted twice (the "
            "same list, e.g. both with --limit N)");

  // The first `limit` clips of A with a common record, and their (A, B) record pairs.
  std::map<int64_t, const cache::CacheReader::Clip*> clips_b;
  for (const auto& c : b.reader().clips()) clips_b[c.clip_index] = &c;
  std::vector<std::pair<int64_t, int64_t>> pairs;
  std::vector<ComparedClip> clips;
  for (const auto& ca : a.reader().clips()) {
    if (cfg.limit > 0 && static_cast<int64_t>(clips.size()) == cfg.limit) break;
    ComparedClip clip{ca.video_id, ca.label, false, {}};
    for (const int64_t ia : ca.records) {
      const int64_t ib = b.reader().index_of(a.reader().keys()[static_cast<size_t>(ia)]);
      if (ib < 0) continue;
      clip.pairs.push_back(pairs.size());
      pairs.emplace_back(ia, ib);
    }
    if (clip.pairs.empty()) continue;
    const auto& cb = *clips_b.at(ca.clip_index);
    EVL_CHECK(cb.video_id == ca.video_id && cb.label == ca.label, "clip ", ca.clip_index,
              " is video '", ca.video_id, "' label ", ca.label, " in cache '", cfg.reference,
              "' but video '", cb.video_id, "' label ", cb.label, " in cache '", cfg.candidate,
              "': the caches were extracted from different lists");
    clip.fused = clip.pairs.size() == ca.records.size() && cb.records.size() == ca.records.size();
    clips.push_back(std::move(clip));
  }
  report.compared_clips = static_cast<int64_t>(clips.size());
  report.compared_records = static_cast<int64_t>(pairs.size());

  std::optional<InferenceHead> head;
  if (!cfg.checkpoint.empty()) {
    head = load_inference_head(cfg.checkpoint, ma.backbone.heads);
    check_head_fits_cache(head->config, ma, cfg.reference, cfg.checkpoint);
    check_head_fits_cache(head->config, mb, cfg.candidate, cfg.checkpoint);
    for (const auto& c : clips)
      EVL_CHECK(c.label < head->config.num_classes, "cache '", cfg.reference, "': video '",
                c.video_id, "' has label ", c.label, ", but checkpoint '", cfg.checkpoint,
                "' has only ", head->config.num_classes, " classes");
    head->head->eval();
  }

  // Features (and logits) batch by batch; per-view logits are kept for fusion.
  const int64_t m = a.layers();
  report.layers.resize(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i)
    report.layers[static_cast<size_t>(i)].block = ma.layers[static_cast<size_t>(i)];
  std::vector<torch::Tensor> logits_a(pairs.size()), logits_b(pairs.size());  // (K) each
  torch::NoGradGuard no_grad;
  Progress progress("compare", report.compared_records, "views");
  for (size_t start = 0; start < pairs.size(); start += static_cast<size_t>(cfg.batch_size)) {
    const size_t end = std::min(pairs.size(), start + static_cast<size_t>(cfg.batch_size));
    std::vector<int64_t> ia, ib;
    for (size_t p = start; p < end; ++p) {
      ia.push_back(pairs[p].first);
      ib.push_back(pairs[p].second);
    }
    const FeatureBatch fa = a.load(ia), fb = b.load(ib);
    for (size_t i = 0; i < static_cast<size_t>(m); ++i) {
      LayerError& e = report.layers[i];
      e.x.add(measure(fa.x[i], fb.x[i]));
      e.q.add(measure(fa.q[i], fb.q[i]));
      e.k.add(measure(fa.k[i], fb.k[i]));
    }
    if (head) {
      const int64_t hm = head->config.decoder_layers;  // the head reads the last hm layers
      auto forward = [&](const FeatureBatch& f, const CachedDataset& d,
                         const std::vector<int64_t>& items, std::vector<torch::Tensor>& out) {
        const auto logits = head->head->forward(last(f.x, hm), last(f.q, hm), last(f.k, hm));
        EVL_CHECK(torch::isfinite(logits).all().item<bool>(), "non-finite logits for ", d.where(),
                  " items ", d.item_name(items.front()), " .. ", d.item_name(items.back()));
        for (size_t p = start; p < end; ++p) out[p] = logits[static_cast<int64_t>(p - start)];
      };
      forward(fa, a, ia, logits_a);
      forward(fb, b, ib, logits_b);
    }
    progress.advance(static_cast<int64_t>(end - start));
  }
  progress.finish();
  for (const auto& e : report.layers) {
    report.x.add(e.x);
    report.q.add(e.q);
    report.k.add(e.k);
  }

  if (head) {
    HeadAgreement h;
    h.checkpoint = cfg.checkpoint;
    h.fuse = fuse == FuseMode::kLogits ? "logits" : "prob";
    h.num_classes = head->config.num_classes;
    std::vector<float> scores_a, scores_b;
    std::vector<int64_t> labels;
    int64_t agree = 0;
    for (const auto& c : clips) {
      if (!c.fused) {
        ++h.skipped_clips;
        continue;
      }
      std::vector<torch::Tensor> va, vb;
      for (const size_t p : c.pairs) {
        va.push_back(logits_a[p]);
        vb.push_back(logits_b[p]);
      }
      const auto sa = fuse_views(torch::stack(va), fuse), sb = fuse_views(torch::stack(vb), fuse);
      h.max_abs_diff = std::max(h.max_abs_diff, (sb - sa).abs().max().item<double>());
      scores_a.insert(scores_a.end(), sa.data_ptr<float>(), sa.data_ptr<float>() + sa.numel());
      scores_b.insert(scores_b.end(), sb.data_ptr<float>(), sb.data_ptr<float>() + sb.numel());
      agree += argmax(sa.data_ptr<float>(), h.num_classes) ==
               argmax(sb.data_ptr<float>(), h.num_classes);
      labels.push_back(c.label);
    }
    h.clips = static_cast<int64_t>(labels.size());
    const double nan = std::numeric_limits<double>::quiet_NaN();
    h.top1_agreement =
        h.clips > 0 ? static_cast<double>(agree) / static_cast<double>(h.clips) : nan;
    h.top1_reference = h.top1_candidate = nan;
    if (h.clips > 0) {
      const Metrics ra = compute_metrics(scores_a.data(), h.clips, h.num_classes, labels);
      const Metrics rb = compute_metrics(scores_b.data(), h.clips, h.num_classes, labels);
      h.labelled = ra.num_labelled;
      if (h.labelled > 0) h.top1_reference = ra.top1, h.top1_candidate = rb.top1;
    }
    report.head = h;
  }

  if (cfg.max_rel_rms >= 0)
    for (const auto& e : report.layers)
      for (const auto& [name, err] :
           std::initializer_list<std::pair<const char*, const ArrayError*>>{
               {"x", &e.x}, {"q", &e.q}, {"k", &e.k}})
        if (err->rel_rms() > cfg.max_rel_rms)
          report.failures.push_back(str("block ", e.block, " ", name, ": relative RMS error ",
                                        err->rel_rms(), " > --max-rel-rms ", cfg.max_rel_rms));
  if (cfg.min_top1_agreement >= 0) {
    const HeadAgreement& h = *report.head;
    if (h.clips == 0)
      report.failures.push_back(
          "top-1 agreement: no clip holds the same views in both caches (--min-top1-agreement)");
    else if (h.top1_agreement < cfg.min_top1_agreement)
      report.failures.push_back(str("top-1 agreement ", h.top1_agreement,
                                    " < --min-top1-agreement ", cfg.min_top1_agreement));
  }
  return report;
}

namespace {

nlohmann::json number(double v) {  // NaN and inf -> null
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

nlohmann::json error_json(const ArrayError& e) {
  return {{"rel_rms", number(e.rel_rms())}, {"max_abs", number(e.max_abs)}, {"values", e.values}};
}

nlohmann::json side_json(const CompareSide& s) {
  return {{"dir", s.dir},
          {"dtype", cache::to_string(s.dtype)},
          {"storage", cache::to_string(s.storage)},
          {"records", s.records},
          {"only_here", s.only_here},
          {"only_keys", s.only_keys}};
}

std::string side_line(const char* role, const CompareSide& s) {
  std::string keys;
  for (const auto& k : s.only_keys) keys += " " + k;
  if (s.only_here > static_cast<int64_t>(s.only_keys.size())) keys += " ...";
  return str(role, " '", s.dir, "': ", cache::to_string(s.dtype), " ", cache::to_string(s.storage),
             ", ", s.records, " records, ", s.only_here, " only here", s.only_here > 0 ? ":" : "",
             keys, "\n");
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

}  // namespace

std::string CompareReport::to_json() const {
  nlohmann::json layer_list = nlohmann::json::array();
  for (const auto& e : layers)
    layer_list.push_back({{"block", e.block},
                          {"x", error_json(e.x)},
                          {"q", error_json(e.q)},
                          {"k", error_json(e.k)}});
  nlohmann::json j = {
      {"reference", side_json(reference)},
      {"candidate", side_json(candidate)},
      {"common_records", common_records},
      {"compared_clips", compared_clips},
      {"compared_records", compared_records},
      {"limit", limit},
      {"features",
       {{"layers", layer_list},
        {"overall", {{"x", error_json(x)}, {"q", error_json(q)}, {"k", error_json(k)}}}}},
      {"head", nullptr},
      {"failures", failures}};
  if (head)
    j["head"] = {{"checkpoint", head->checkpoint},
                 {"fuse", head->fuse},
                 {"num_classes", head->num_classes},
                 {"clips", head->clips},
                 {"skipped_clips", head->skipped_clips},
                 {"max_abs_diff", number(head->max_abs_diff)},
                 {"top1_agreement", number(head->top1_agreement)},
                 {"labelled_clips", head->labelled},
                 {"top1_reference", number(head->top1_reference)},
                 {"top1_candidate", number(head->top1_candidate)}};
  return j.dump(2) + "\n";
}

std::string CompareReport::to_text() const {
  std::string out = side_line("A (reference)", reference) + side_line("B (candidate)", candidate);
  out += str("compared: ", compared_records, " of ", common_records, " common records, ",
             compared_clips, " clips", limit > 0 ? str(" (--limit ", limit, ")") : "", "\n\n");
  auto line = [&](const std::string& label, const std::string& a, const std::string& b) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "  %-32s %-10s  %s", label.c_str(), a.c_str(), b.c_str());
    std::string text = buf;
    out += text.erase(text.find_last_not_of(' ') + 1) + "\n";
  };
  out += "decoder inputs, B against A\n";
  line("", "rel RMS", "max |B-A|");
  auto row = [&](const std::string& label, const ArrayError& e) {
    line(label, fmt("%.3e", e.rel_rms()), fmt("%.3e", e.max_abs));
  };
  for (const auto& e : layers) {
    row(str("block ", e.block, " x"), e.x);
    row(str("block ", e.block, " q"), e.q);
    row(str("block ", e.block, " k"), e.k);
  }
  row("all layers x", x);
  row("all layers q", q);
  row("all layers k", k);
  if (head) {
    const HeadAgreement& h = *head;
    out += str("\nhead '", h.checkpoint, "' (fuse ", h.fuse, "): ", h.clips,
               " clips fused in both, ", h.skipped_clips, " skipped (their views differ)\n");
    line(h.fuse == "prob" ? "max |B-A| of a fused probability" : "max |B-A| of a fused logit",
         fmt("%.3e", h.max_abs_diff), "");
    line("top-1 agreement", fmt("%.2f%%", 100 * h.top1_agreement), str("(", h.clips, " clips)"));
    if (h.labelled > 0)
      line("top-1 accuracy", str("A ", fmt("%.2f%%", 100 * h.top1_reference)),
           str("B ", fmt("%.2f%%", 100 * h.top1_candidate), "  (", h.labelled, " labelled clips)"));
    else
      line("top-1 accuracy", "no labelled clips", "");
  }
  if (!failures.empty()) out += "\n";
  for (const auto& f : failures) out += "check failed: " + f + "\n";
  return out;
}

}  // namespace evl
