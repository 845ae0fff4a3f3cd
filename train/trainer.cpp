// evl_train_head's loop (see trainer.h). The official order per step: LR for
// this step, zero grads, forward/backward over the micro-batches (loss / split),
// AdamW step; the schedule is a closed-form function of the step.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/atomic_file.h"
#include "common/check.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/random.h"
#include "evaluate/metrics.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"
#include "train/mixed_precision.h"
#include "train/scoring.h"
#include "train/tensorboard.h"

namespace fs = std::filesystem;

namespace evl {

HeadConfig head_config_for(const TrainConfig& cfg, const cache::Manifest& manifest, int64_t layers,
                           int64_t num_classes) {
  HeadConfig h;
  h.width = manifest.backbone.width;
  h.heads = cfg.heads > 0 ? cfg.heads
                          : (manifest.backbone.heads > 0 ? manifest.backbone.heads : h.width / 64);
  h.decoder_layers = layers;
  h.frames = manifest.frames;
  h.grid = manifest.backbone.grid;
  h.num_classes = num_classes;
  h.mlp_dropout = cfg.mlp_dropout;
  h.cls_dropout = cfg.cls_dropout;
  h.temporal_conv = !cfg.no_temporal_conv;
  h.temporal_pos_embed = !cfg.no_temporal_pos_embed;
  h.temporal_cross_attention = !cfg.no_temporal_cross_attention;
  EVL_CHECK(h.width > 0 && h.grid > 0 && h.frames > 0 && h.heads > 0 && h.width % h.heads == 0,
            "cache manifest: width ", h.width, ", grid ", h.grid, ", frames ", h.frames, ", heads ",
            h.heads, " do not describe a usable backbone");
  return h;
}

EvalResult evaluate(EvlHead& head, const FeatureSource& data, int64_t batch,
                    const torch::Device& device, Distributed* dist) {
  const ClipScores scores =
      score_clips(head, data, batch, device, FuseMode::kProbabilities, nullptr, dist);
  const Metrics m =
      compute_metrics(scores.scores.data(), scores.num_clips(), scores.num_classes, scores.labels);
  EvalResult out;
  out.clips = m.num_labelled;
  if (m.num_labelled > 0) out.top1 = m.top1, out.top5 = m.top5;
  return out;
}

namespace {

// The final classifier (proj.2 = Linear after LayerNorm and Dropout): not
// scaled by --init-lr-scale, and re-initialised by --init when the class count differs.
bool is_classifier(const std::string& name) { return name.rfind("proj.2.", 0) == 0; }

// --init: parameters from an evl or official checkpoint. A classifier of
// another class count (fine-tuning UCF-101 from a Kinetics-400 head) keeps
// this run's fresh initialisation; every other parameter must fit exactly.
void init_from_checkpoint(EvlHead& head, const std::string& path) {
  auto state = read_state_dict(path);
  const auto own = head_state(head);
  for (auto& [name, t] : state) {
    if (!is_classifier(name)) continue;
    for (const auto& [own_name, p] : own)
      if (own_name == name && p.sizes() != t.sizes()) {
        log::info("--init '", path, "': '", name, "' has shape ", t.sizes(), ", this head ",
                  p.sizes(), ": the classifier is trained from scratch");
        t = p.detach().to(torch::kCPU).clone();
      }
  }
  load_head_state(head, state, path);
}

// The provenance a checkpoint records (CheckpointMeta): the source's manifest
// without shards, its layers cut to the last `layers` blocks the head reads.
cache::Manifest used_provenance(const cache::Manifest& m, int64_t layers) {
  cache::Manifest p = m;
  p.shards.clear();
  if (static_cast<int64_t>(p.layers.size()) > layers)
    p.layers.erase(p.layers.begin(), p.layers.end() - layers);
  return p;
}

// The model name a run records: --name, else the run directory's own name.
std::string run_name(const TrainConfig& cfg) {
  if (!cfg.name.empty()) return cfg.name;
  fs::path p = fs::weakly_canonical(fs::absolute(cfg.out));
  if (p.filename().empty()) p = p.parent_path();  // "runs/x/"
  return p.filename().string();
}

// best.json's val_top1 (what best.pth scored); throws naming the file.
double read_best(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path)).at("val_top1").get<double>();
  } catch (const nlohmann::json::exception& e) {
    EVL_THROW(Error, "'", path, "': not the best.json evl_train_head writes (", e.what(), ")");
  }
}

}  // namespace

// Fields that decide what the head's inputs mean: the features of a resumed
// run's cache and of the cache evl_eval scores must match the checkpoint's
// recorded provenance in all of them (views and dtype may differ).
const std::vector<std::string>& feature_fields() {
  static const std::vector<std::string> fields = {"backbone.hash",
                                                  "backbone.width",
                                                  "backbone.depth",
                                                  "backbone.heads",
                                                  "backbone.patch",
                                                  "backbone.grid",
                                                  "backbone.input_size",
                                                  "layers",
                                                  "frames",
                                                  "stride",
                                                  "sampling",
                                                  "mean",
                                                  "std"};
  return fields;
}

void check_recorded_provenance(const std::string& recorded_json, const cache::Manifest& found,
                               int64_t layers, const std::string& checkpoint,
                               const std::string& source) {
  if (recorded_json.empty()) return;  // official files and older evl checkpoints
  const cache::Manifest rec =
      cache::Manifest::from_json(recorded_json, "checkpoint '" + checkpoint + "' provenance");
  cache::check_matches(
      rec, used_provenance(found, layers),
      source + " (the head of checkpoint '" + checkpoint + "' was trained on " + "other features)",
      feature_fields());
}

TrainSummary train_head(const TrainConfig& cfg, const std::string& config_ini,
                        const DistEnv& dist) {
  EVL_CHECK_USAGE(!cfg.cache.empty() && !cfg.out.empty(), "--cache and --out are required");
  CachedDataset train(cfg.cache, cfg.decoder_layers);
  std::unique_ptr<CachedDataset> val;
  if (!cfg.val_cache.empty()) val = std::make_unique<CachedDataset>(cfg.val_cache, train.layers());
  return train_head(cfg, config_ini, train, val.get(), dist);
}

namespace {

// The parameters' gradients that autograd produced (the same set on every
// rank: the graph is the same), for the allreduce.
std::vector<torch::Tensor> defined_grads(EvlHead& head) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : head->parameters())
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

}  // namespace

TrainSummary train_head(const TrainConfig& cfg, const std::string& config_ini,
                        const FeatureSource& train, const FeatureSource* val,
                        const DistEnv& dist_env) {
  EVL_CHECK_USAGE(!cfg.out.empty(), "--out is required");
  EVL_CHECK_USAGE(cfg.steps > 0 && cfg.batch_size > 0 && cfg.batch_split > 0 &&
                      cfg.batch_size % cfg.batch_split == 0,
                  "--batch-size (", cfg.batch_size,
                  ") must be a positive multiple of --batch-split (", cfg.batch_split,
                  ") and --steps positive");
  EVL_CHECK_USAGE(std::isfinite(cfg.init_lr_scale) && cfg.init_lr_scale > 0,
                  "--init-lr-scale must be positive, got ", cfg.init_lr_scale);
  // Bounds far above any real run: past them a value is a typo (or NaN), and
  // would fail later as a bad_alloc or a silently NaN run instead of here.
  EVL_CHECK_USAGE(cfg.steps <= (int64_t(1) << 40), "--steps ", cfg.steps, " is absurd");
  EVL_CHECK_USAGE(cfg.batch_size <= (1 << 20), "--batch-size must be <= 1048576, got ",
                  cfg.batch_size);
  EVL_CHECK_USAGE(std::isfinite(cfg.lr) && cfg.lr >= 0, "--lr must be a finite number >= 0, got ",
                  cfg.lr);
  EVL_CHECK_USAGE(std::isfinite(cfg.weight_decay) && cfg.weight_decay >= 0,
                  "--weight-decay must be >= 0, got ", cfg.weight_decay);
  EVL_CHECK_USAGE(cfg.warmup_steps >= 0 && cfg.warmup_steps <= cfg.steps,
                  "--warmup-steps must be in [0, --steps], got ", cfg.warmup_steps);
  EVL_CHECK_USAGE(cfg.eval_every >= 0 && cfg.save_every >= 0 && cfg.log_every >= 0,
                  "--eval-every, --save-every and --log-every must be >= 0");
  EVL_CHECK_USAGE(
      cfg.mlp_dropout >= 0 && cfg.mlp_dropout < 1 && cfg.cls_dropout >= 0 && cfg.cls_dropout < 1,
      "--mlp-dropout and --cls-dropout must be in [0, 1)");
  EVL_CHECK_USAGE(cfg.num_classes >= 0 && cfg.num_classes <= (1 << 20),
                  "--num-classes must be in [0, 1048576] (0: from the labels), got ",
                  cfg.num_classes);
  EVL_CHECK_USAGE(cfg.heads >= 0 && cfg.heads <= 4096, "--heads must be in [0, 4096], got ",
                  cfg.heads);
  EVL_CHECK_USAGE(cfg.decoder_layers >= 0 && cfg.decoder_layers <= 1024,
                  "--decoder-layers must be in [0, 1024], got ", cfg.decoder_layers);
  EVL_CHECK_USAGE(cfg.threads >= 0 && cfg.threads <= 4096, "--threads must be in [0, 4096], got ",
                  cfg.threads);
  const int world = dist_env.world_size, rank = dist_env.rank;
  EVL_CHECK_USAGE(cfg.batch_size % (int64_t(world) * cfg.batch_split) == 0, "--batch-size (",
                  cfg.batch_size, ") must be a multiple of the world size (", world,
                  " ranks) times --batch-split (", cfg.batch_split,
                  "): each rank takes an equal share of the global batch");
  if (cfg.threads > 0) torch::set_num_threads(static_cast<int>(cfg.threads));
  // One process per GPU: a plain --device cuda is the rank's cuda:LOCAL_RANK
  // (modulo the GPUs it sees: Slurm's --gpus-per-task leaves each task one).
  const torch::Device device =
      (dist_env.distributed() && cfg.device == "cuda" && torch::cuda::device_count() > 0)
          ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dist_env.local_rank %
                                                                      torch::cuda::device_count()))
          : torch::Device(cfg.device);
  EVL_CHECK_USAGE(!device.is_cuda() || torch::cuda::is_available(), "--device ", cfg.device,
                  ": this LibTorch has no CUDA device available");
  const Precision precision =
      resolve_precision(cfg.precision, PrecisionUse::kTraining, device.is_cuda(), "--precision");

  const auto& manifest = train.manifest();
  const int64_t layers = train.layers();
  const int64_t max_label = train.max_label();
  const int64_t classes = cfg.num_classes > 0 ? cfg.num_classes : max_label + 1;
  if (cfg.num_classes <= 0 && classes > 0)
    log::info("classes: ", classes, " (1 + the largest label in ", train.where(),
              "); pass --num-classes if the dataset has more");
  EVL_CHECK(classes > 0, train.where(),
            " has no labels; pass --num-classes or extract with labels");
  EVL_CHECK(max_label < classes, train.where(), " has label ", max_label, " but --num-classes is ",
            classes);
  if (val) {
    EVL_CHECK(val->layers() == layers, "validation ", val->where(), " gives ", val->layers(),
              " decoder layers, training gives ", layers);
    cache::check_matches(
        manifest, val->manifest(), "validation " + val->where(),
        {"backbone.hash", "backbone.width", "backbone.heads", "backbone.patch", "backbone.grid",
         "backbone.input_size", "layers", "frames", "stride", "sampling", "mean", "std"});
  }

  // The rendezvous: every rank runs the same configuration (config_ini holds
  // no per-rank flags), checked before any rank writes or trains.
  std::unique_ptr<Distributed> dist;
  if (dist_env.distributed()) dist = std::make_unique<Distributed>(dist_env, config_ini, device);
  const bool writer = rank == 0;  // rank 0 alone writes the run directory
  try {
    const auto head_cfg = head_config_for(cfg, manifest, layers, classes);
    torch::manual_seed(rng::step_seed(cfg.seed, -1));  // initial weights are a function of --seed
    EvlHead head(head_cfg);
    head->to(device);
    // Param groups: [0] everything scaled by --init-lr-scale (1: the plain
    // recipe), [1] the classifier at the base LR and weight decay.
    std::vector<torch::Tensor> body, classifier;
    for (const auto& item : head->named_parameters(true))
      (is_classifier(item.key()) ? classifier : body).push_back(item.value());
    const double scale = cfg.init_lr_scale;
    torch::optim::AdamW opt(
        std::vector<torch::optim::OptimizerParamGroup>{
            {body, std::make_unique<torch::optim::AdamWOptions>(
                       torch::optim::AdamWOptions(cfg.lr * scale)
                           .weight_decay(cfg.weight_decay * scale))},
            {classifier, std::make_unique<torch::optim::AdamWOptions>(
                             torch::optim::AdamWOptions(cfg.lr).weight_decay(cfg.weight_decay))}},
        torch::optim::AdamWOptions(cfg.lr).weight_decay(cfg.weight_decay));
    GradScaler scaler(precision == Precision::kFp16);

    const fs::path out(cfg.out), last = out / "last.pth";
    if (writer) fs::create_directories(out);
    int64_t start = 0;
    std::string last_good;
    if (cfg.resume) {
      EVL_CHECK_USAGE(fs::exists(last), "--resume: '", last.string(), "' does not exist");
      CheckpointMeta recorded;
      start = load_training_checkpoint(last.string(), head, opt, &scaler, &recorded);
      check_recorded_provenance(recorded.provenance, manifest, layers, last.string(),
                                train.where());
      EVL_CHECK_USAGE(recorded.total_steps == 0 || recorded.total_steps == cfg.steps, "--steps ",
                      cfg.steps, " differs from the resumed run's ", recorded.total_steps,
                      " (its cosine schedule has that length): resume with --steps ",
                      recorded.total_steps, ", or start a new --out with --init ", last.string());
      EVL_CHECK_USAGE(start <= cfg.steps, "--resume: '", last.string(), "' is at step ", start,
                      ", past --steps ", cfg.steps);
      last_good = last.string();
      // A requeued batch job repeats its command line: --init only seeds a new run.
      log::info("resuming '", cfg.out, "' at step ", start,
                cfg.init.empty() ? "" : " (--init is ignored: the run already holds its weights)");
    } else {
      EVL_CHECK_USAGE(
          !fs::exists(last), "run directory '", cfg.out,
          "' already holds last.pth: pass --resume to continue it, or choose another --out");
      if (!cfg.init.empty()) {
        init_from_checkpoint(head, cfg.init);
        log::info("initialised from '", cfg.init, "'");
      }
    }
    // [data]: where the training features came from and how their views were
    // augmented (a cache's manifest 'augment'), so a checkpoint says what it saw.
    const std::string data_ini =
        str("[data]\nsource = ", train.where(), "\naugment = ", manifest.augment, "\n");
    const std::string name = run_name(cfg);
    const std::string full_ini = config_ini + "\n" + head_cfg.to_ini() + data_ini + run_ini(name);
    // Every rank starts from rank 0's parameters (the same seed gives the same
    // ones; a resumed run's ranks read the same last.pth), checked bit for bit.
    if (dist) {
      dist->broadcast_from_root(head->parameters(), "the initial parameters");
      dist->check_identical(head->parameters(), "the initial parameters");
    }
    if (writer) write_file_atomic((out / "config.ini").string(), full_ini);
    std::ofstream metrics;
    if (writer) metrics.open(out / "metrics.jsonl", std::ios::app);
    CheckpointMeta meta;
    meta.provenance = used_provenance(manifest, layers).to_json();
    meta.test_provenance =
        val ? used_provenance(val->manifest(), layers).to_json() : meta.provenance;
    meta.total_steps = cfg.steps;
    std::unique_ptr<EventWriter> events;  // TensorBoard: the scalars of metrics.jsonl
    if (writer) events = std::make_unique<EventWriter>(out.string());
    // best.pth: the checkpoint of the best validation top-1 so far (best.json says
    // which step), so a resumed run keeps improving on the same record.
    const fs::path best = out / "best.pth", best_json = out / "best.json";
    double best_top1 = -1;
    if (cfg.resume && fs::exists(best_json) && fs::exists(best))
      best_top1 = read_best(best_json.string());
    std::string val_note;  // the latest validation figures, shown on the progress line

    TrainSummary summary;
    // This rank's share of the global batch, and its micro-batches.
    const int64_t share = cfg.batch_size / world, micro = share / cfg.batch_split;
    std::unique_ptr<Progress> progress;
    if (writer) progress = std::make_unique<Progress>("train", cfg.steps - start, "steps");
    // The next step's first micro-batch, read while the allreduce runs.
    std::optional<FeatureBatch> prefetched;
    auto micro_items = [&](const std::vector<int64_t>& global, int64_t s) {
      const auto first = global.begin() + rank * share + s * micro;
      return std::vector<int64_t>(first, first + micro);
    };
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t step = start; step < cfg.steps; ++step) {
      const double lr = lr_at_step(cfg.lr, step, cfg.steps, cfg.warmup_steps);
      auto& groups = opt.param_groups();
      static_cast<torch::optim::AdamWOptions&>(groups[0].options()).lr(lr * scale);
      static_cast<torch::optim::AdamWOptions&>(groups[1].options()).lr(lr);
      // Dropout masks are a function of (seed, step, sample): the same for any
      // --batch-split and world size (DropoutRows, head.h).
      torch::manual_seed(rng::step_seed(cfg.seed, step));
      DropoutRows dropout_rows(rng::step_seed(cfg.seed, step), cfg.batch_size);
      head->train();
      opt.zero_grad();
      if (dist) dist->set_step(step);
      const auto indices = train.train_batch(cfg.seed, step, cfg.batch_size);
      double loss_sum = 0;
      for (int64_t s = 0; s < cfg.batch_split; ++s) {
        FeatureBatch b;
        if (s == 0 && prefetched) {
          b = std::move(*prefetched);
          prefetched.reset();
        } else {
          b = train.load(micro_items(indices, s));
        }
        EVL_CHECK(b.labels.min().item<int64_t>() >= 0, train.where(),
                  ": a training item has no label");
        to_device(b, device);
        dropout_rows.begin_forward(rank * share + s * micro);
        torch::Tensor logits;
        {
          AutocastGuard autocast(precision, device);
          logits = head->forward(b.x, b.q, b.k);
        }
        auto loss =
            torch::cross_entropy_loss(logits.to(torch::kFloat), b.labels) / double(cfg.batch_split);
        scaler.scale(loss).backward();
        loss_sum += loss.item<double>();
      }
      bool stop_requested = training_stop_flag().load();
      if (dist) {
        // Sum the gradients (and each rank's loss and stop request) over ranks;
        // meanwhile read this rank's first micro-batch of the next step.
        auto grads = defined_grads(head);
        auto extra = torch::tensor({loss_sum, stop_requested ? 1.0 : 0.0}, torch::kDouble);
        grads.push_back(extra);
        auto pending =
            dist->start_sum(grads, "the gradient allreduce of step " + std::to_string(step));
        if (step + 1 < cfg.steps)
          prefetched =
              train.load(micro_items(train.train_batch(cfg.seed, step + 1, cfg.batch_size), 0));
        pending.wait();
        grads.pop_back();
        for (auto& g : grads) g.div_(static_cast<double>(world));
        loss_sum = extra[0].item<double>() / world;
        stop_requested = extra[1].item<double>() > 0;
      }
      // The L2 norm of the step's gradient of the mean loss (unscaled): the same
      // figure for one process and for W ranks (whose gradients are averaged).
      std::vector<torch::Tensor> norms;
      for (const auto& g : defined_grads(head)) norms.push_back(g.norm().to(torch::kDouble));
      const double grad_norm =
          (norms.empty() ? 0.0 : torch::stack(norms).pow(2).sum().sqrt().item<double>()) /
          (scaler.enabled() ? scaler.current_scale() : 1.0);
      EVL_CHECK(std::isfinite(loss_sum), "non-finite loss (", loss_sum, ") at step ", step,
                "; training stopped. Last good checkpoint: ",
                last_good.empty() ? std::string("none (nothing saved yet)") : last_good);
      if (!scaler.step(opt))
        log::info("step ", step, ": gradient overflow at loss scale ", scaler.current_scale() * 2,
                  ", step skipped");
      const int64_t done = step + 1;
      summary.last_loss = loss_sum;
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      summary.samples_per_s =
          static_cast<double>((done - start) * cfg.batch_size) / std::max(secs, 1e-9);
      const bool final_step = done == cfg.steps;
      const double loss_scale = scaler.enabled() ? scaler.current_scale() : 1.0;
      nlohmann::json line = {{"step", done},
                             {"loss", loss_sum},
                             {"grad_norm", grad_norm},
                             {"lr", lr},
                             {"samples_per_s", summary.samples_per_s},
                             {"loss_scale", loss_scale},
                             {"val_top1", nullptr},
                             {"val_top5", nullptr}};
      std::vector<std::pair<std::string, double>> scalars = {
          {"train/loss", loss_sum},
          {"train/grad_norm", grad_norm},
          {"train/lr", lr},
          {"train/samples_per_s", summary.samples_per_s},
          {"train/loss_scale", loss_scale}};
      bool write_line = final_step || (cfg.log_every > 0 && done % cfg.log_every == 0);
      if (val && (final_step || (cfg.eval_every > 0 && done % cfg.eval_every == 0))) {
        const auto r = evaluate(head, *val, micro, device, dist.get());
        summary.val_top1 = r.top1, summary.val_top5 = r.top5;
        line["val_top1"] = r.top1, line["val_top5"] = r.top5;
        scalars.push_back({"val/top1", r.top1});
        scalars.push_back({"val/top5", r.top5});
        val_note =
            str(" | val top-1 ", 100 * r.top1, "% top-5 ", 100 * r.top5, "% (step ", done, ")");
        if (writer)
          log::info("step ", done, ": val top-1 ", 100 * r.top1, "%, top-5 ", 100 * r.top5, "% on ",
                    r.clips, " clips");
        if (r.top1 > best_top1 && writer) {
          best_top1 = r.top1;
          save_training_checkpoint(best.string(), head, opt, done, full_ini, &scaler, meta);
          write_file_atomic(
              best_json.string(),
              nlohmann::json{{"step", done}, {"val_top1", r.top1}, {"val_top5", r.top5}}.dump() +
                  "\n");
        }
        write_line = true;
      }
      if (progress) {
        progress->set_note(str("loss ", loss_sum, " lr ", lr, " ",
                               static_cast<int64_t>(summary.samples_per_s), " samples/s",
                               val_note));
        progress->advance();
      }
      if (write_line && writer) {
        metrics << line.dump() << "\n" << std::flush;
        events->add_scalars(done, scalars);
      }
      const bool stop = !final_step && stop_requested;
      if (final_step || stop || (cfg.save_every > 0 && done % cfg.save_every == 0)) {
        const auto path = out / ("checkpoint-" + std::to_string(done) + ".pth");
        if (dist)
          dist->check_identical(head->parameters(),
                                "the parameters after step " + std::to_string(done));
        if (writer) {
          save_training_checkpoint(path.string(), head, opt, done, full_ini, &scaler, meta);
          AtomicFile last_file(last.string());
          fs::copy_file(path, last_file.temp_path(), fs::copy_options::overwrite_existing);
          last_file.commit();
        }
        last_good = path.string();
        summary.last_checkpoint = path.string();
      }
      if (stop) {
        if (writer)
          log::info("stopped after step ", done, " of ", cfg.steps, ": saved ", last.string(),
                    "; rerun with --resume to continue");
        summary.interrupted = true;
        summary.steps = done;
        if (dist) dist->finish();
        return summary;
      }
    }
    if (progress) progress->finish();
    summary.steps = cfg.steps;
    if (dist) dist->finish();
    return summary;
  } catch (const DistributedError&) {
    throw;  // the group failed: another rank is named in the message
  } catch (const std::exception& e) {
    if (dist) dist->report_failure(e.what());
    throw;
  }
}

namespace {
// Constant-initialised (no guard), so a signal handler may set it at any time.
std::atomic<bool> g_stop_training{false};
}  // namespace

std::atomic<bool>& training_stop_flag() { return g_stop_training; }

}  // namespace evl
