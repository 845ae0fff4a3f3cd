// Checkpoint read/write (see the header). Official files are recognised by
// their keys ('module.decoder.cls_token' ...); evl files by 'format'.
#include "train/checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/atomic_file.h"
#include "common/check.h"
#include "train/pickle_reader.h"

namespace evl {

namespace {

const std::string kFormat = "evl-head";

bool has_key(const c10::impl::GenericDict& d, const std::string& key) {
  return d.contains(c10::IValue(key));
}

StateDict to_state_dict(const c10::impl::GenericDict& d, const std::string& where) {
  StateDict out;
  bool all_prefixed = !d.empty();
  for (const auto& kv : d) {
    EVL_CHECK(kv.key().isString() && kv.value().isTensor(), "checkpoint '", where,
              "': the state dict has a non-tensor entry");
    all_prefixed = all_prefixed && kv.key().toStringRef().rfind("module.", 0) == 0;
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor().contiguous());
  }
  if (all_prefixed)  // DDP-wrapped model, as the official checkpoint.py saves it
    for (auto& [name, t] : out) name = name.substr(7);
  return out;
}

// Typed access to a checkpoint's dict entries: a missing key or a value of
// another type is an error naming the file and the entry (IValue's own
// to*() would end in an INTERNAL ASSERT that blames PyTorch).
const c10::IValue& entry(const c10::impl::GenericDict& d, const std::string& key,
                         const std::string& path) {
  auto it = d.find(c10::IValue(key));
  EVL_CHECK(it != d.end(), "checkpoint '", path, "': missing entry '", key, "'");
  return it->value();
}
int64_t int_entry(const c10::impl::GenericDict& d, const std::string& key, const std::string& path,
                  int64_t lo, int64_t hi) {
  const c10::IValue& v = entry(d, key, path);
  EVL_CHECK(v.isInt(), "checkpoint '", path, "': entry '", key, "' is not an integer");
  EVL_CHECK(v.toInt() >= lo && v.toInt() <= hi, "checkpoint '", path, "': entry '", key, "' is ",
            v.toInt(), ", outside [", lo, ", ", hi, "]");
  return v.toInt();
}
double double_entry(const c10::impl::GenericDict& d, const std::string& key,
                    const std::string& path) {
  const c10::IValue& v = entry(d, key, path);
  EVL_CHECK(v.isDouble() && std::isfinite(v.toDouble()), "checkpoint '", path, "': entry '", key,
            "' is not a finite float");
  return v.toDouble();
}
c10::impl::GenericDict dict_entry(const c10::impl::GenericDict& d, const std::string& key,
                                  const std::string& path) {
  const c10::IValue& v = entry(d, key, path);
  EVL_CHECK(v.isGenericDict(), "checkpoint '", path, "': entry '", key, "' is not a dict");
  return v.toGenericDict();
}
torch::Tensor tensor_entry(const c10::impl::GenericDict& d, const std::string& key,
                           const std::string& path) {
  const c10::IValue& v = entry(d, key, path);
  EVL_CHECK(v.isTensor(), "checkpoint '", path, "': entry '", key, "' is not a tensor");
  return v.toTensor();
}
// Optional string entry ("" when absent).
std::string string_entry(const c10::impl::GenericDict& d, const std::string& key,
                         const std::string& path) {
  if (!has_key(d, key)) return "";
  const c10::IValue& v = entry(d, key, path);
  EVL_CHECK(v.isString(), "checkpoint '", path, "': entry '", key, "' is not a string");
  return v.toStringRef();
}
void read_meta(const c10::impl::GenericDict& d, const std::string& path, CheckpointMeta& meta) {
  meta.provenance = string_entry(d, "provenance", path);
  meta.test_provenance = string_entry(d, "test_provenance", path);
  meta.total_steps =
      has_key(d, "total_steps") ? int_entry(d, "total_steps", path, 1, int64_t(1) << 40) : 0;
}

const torch::Tensor* find(const StateDict& state, const std::string& name) {
  for (const auto& [n, t] : state)
    if (n == name) return &t;
  return nullptr;
}

}  // namespace

StateDict read_state_dict(const std::string& path, std::string* config_ini, CheckpointMeta* meta) {
  const auto root = read_torch_file(path);
  EVL_CHECK(root.isGenericDict(), "checkpoint '", path, "' does not hold a dict");
  auto dict = root.toGenericDict();
  if (config_ini) *config_ini = "";
  if (meta) *meta = CheckpointMeta{};
  if (has_key(dict, "model")) {
    if (config_ini && has_key(dict, "config") && dict.at("config").isString())
      *config_ini = dict.at("config").toStringRef();
    if (meta && has_key(dict, "format")) read_meta(dict, path, *meta);
    EVL_CHECK(dict.at("model").isGenericDict(), "checkpoint '", path,
              "': 'model' is not a state dict");
    return to_state_dict(dict.at("model").toGenericDict(), path);
  }
  return to_state_dict(dict, path);  // a bare state dict
}

HeadConfig infer_head_config(const StateDict& state, const std::string& where, int64_t heads_hint) {
  const auto* cls = find(state, "decoder.cls_token");
  const auto* fc = find(state, "proj.2.weight");
  EVL_CHECK(cls && fc && cls->dim() == 1 && fc->dim() == 2, "checkpoint '", where,
            "' is not an EVL head (no decoder.cls_token / proj.2.weight)");
  HeadConfig cfg;
  cfg.width = cls->size(0);
  cfg.num_classes = fc->size(0);
  cfg.heads = heads_hint > 0 ? heads_hint : std::max<int64_t>(1, cfg.width / 64);
  cfg.decoder_layers = 0;
  while (find(state, str("decoder.decoder_layers.", cfg.decoder_layers, ".norm1.weight")))
    ++cfg.decoder_layers;
  EVL_CHECK(cfg.decoder_layers > 0, "checkpoint '", where, "' has no decoder layers");
  if (const auto* fc1 = find(state, "decoder.decoder_layers.0.mlp.fc1.weight"))
    cfg.mlp_ratio = static_cast<double>(fc1->size(0)) / static_cast<double>(cfg.width);
  cfg.temporal_conv = find(state, "decoder.temporal_conv.0.weight") != nullptr;
  const auto* pos = find(state, "decoder.temporal_pos_embed.0");
  cfg.temporal_pos_embed = pos != nullptr;
  cfg.frames = pos ? pos->size(0) : 0;
  const auto* w1 = find(state, "decoder.cross_attention.0.w1");
  cfg.temporal_cross_attention = w1 != nullptr;
  cfg.grid = 0;
  if (w1) {
    const auto side =
        static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(w1->size(0)))));
    EVL_CHECK(side * side == w1->size(0) && side % 2 == 1, "checkpoint '", where,
              "': cross_attention.0.w1 has ", w1->size(0), " rows, not (2g-1)^2 for a square grid");
    cfg.grid = (side + 1) / 2;
  }
  return cfg;
}

LoadedHead load_head_checkpoint(const std::string& path, int64_t heads_hint) {
  std::string ini;
  const auto state = read_state_dict(path, &ini);
  LoadedHead out;
  out.config = infer_head_config(state, path, heads_hint);
  if (!ini.empty()) {  // shapes decide; the recorded config adds heads and dropouts
    const auto recorded = HeadConfig::from_ini(ini, path);
    if (heads_hint <= 0) out.config.heads = recorded.heads;
    out.config.mlp_dropout = recorded.mlp_dropout;
    out.config.cls_dropout = recorded.cls_dropout;
    if (!out.config.temporal_pos_embed) out.config.frames = recorded.frames;
    if (!out.config.temporal_cross_attention) out.config.grid = recorded.grid;
  }
  out.head = EvlHead(out.config);
  load_head_state(out.head, state, path);
  out.head->eval();
  return out;
}

void save_training_checkpoint(const std::string& path, const EvlHead& head,
                              torch::optim::AdamW& optimizer, int64_t next_step,
                              const std::string& config_ini, const GradScaler* scaler,
                              const CheckpointMeta& meta) {
  c10::Dict<std::string, torch::Tensor> model;
  c10::impl::GenericDict states(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [name, p] : head_state(head)) {
    model.insert(name, p.detach().to(torch::kCPU).contiguous().clone());
    auto it = optimizer.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
    if (it == optimizer.state().end()) continue;
    const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    c10::impl::GenericDict entry(c10::StringType::get(), c10::AnyType::get());
    entry.insert("step", st.step());
    entry.insert("exp_avg", st.exp_avg().to(torch::kCPU).contiguous());
    entry.insert("exp_avg_sq", st.exp_avg_sq().to(torch::kCPU).contiguous());
    states.insert(name, entry);
  }
  const auto& opts =
      static_cast<const torch::optim::AdamWOptions&>(optimizer.param_groups()[0].options());
  c10::impl::GenericDict opt(c10::StringType::get(), c10::AnyType::get());
  opt.insert("type", std::string("AdamW"));
  opt.insert("lr", opts.lr());
  opt.insert("weight_decay", opts.weight_decay());
  opt.insert("state", states);
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("format", kFormat);
  root.insert("format_version", kCheckpointVersion);
  root.insert("model", model);
  root.insert("optimizer", opt);
  root.insert("next_step", next_step);
  root.insert("config", config_ini);
  if (!meta.provenance.empty()) root.insert("provenance", meta.provenance);
  if (!meta.test_provenance.empty()) root.insert("test_provenance", meta.test_provenance);
  if (meta.total_steps > 0) root.insert("total_steps", meta.total_steps);
  if (scaler && scaler->enabled()) {
    c10::impl::GenericDict ls(c10::StringType::get(), c10::AnyType::get());
    ls.insert("scale", scaler->current_scale());
    ls.insert("growth_tracker", scaler->growth_tracker());
    root.insert("loss_scaler", ls);
  }
  const auto bytes = torch::pickle_save(c10::IValue(root));
  write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
}

int64_t load_training_checkpoint(const std::string& path, EvlHead& head,
                                 torch::optim::AdamW& optimizer, GradScaler* scaler,
                                 CheckpointMeta* meta) {
  const auto root = read_torch_file(path);
  EVL_CHECK(root.isGenericDict(), "checkpoint '", path, "' does not hold a dict");
  auto dict = root.toGenericDict();
  EVL_CHECK(has_key(dict, "format") && dict.at("format").isString() &&
                dict.at("format").toStringRef() == kFormat,
            "checkpoint '", path,
            "' is not an evl training checkpoint (official files go to --init)");
  const int64_t version = int_entry(dict, "format_version", path, 1, int64_t(1) << 30);
  EVL_CHECK(version <= kCheckpointVersion, "checkpoint '", path, "' has format version ", version,
            ", newer than this evl (", kCheckpointVersion, ")");
  // Every value below sizes, counts or divides something: range-checked first.
  const int64_t next_step = int_entry(dict, "next_step", path, 0, int64_t(1) << 40);
  if (meta) read_meta(dict, path, *meta);
  load_head_state(head, to_state_dict(dict_entry(dict, "model", path), path), path);
  auto states = dict_entry(dict_entry(dict, "optimizer", path), "state", path);
  optimizer.state().clear();
  for (const auto& [name, p] : head_state(head)) {
    if (!states.contains(name)) continue;
    const std::string where = "optimizer.state." + name;
    auto e = dict_entry(states, name, path);
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    st->step(int_entry(e, "step", path + "' " + where + " '", 0, int64_t(1) << 40));
    const torch::Tensor avg = tensor_entry(e, "exp_avg", path);
    const torch::Tensor avg_sq = tensor_entry(e, "exp_avg_sq", path);
    EVL_CHECK(avg.sizes() == p.sizes() && avg_sq.sizes() == p.sizes(), "checkpoint '", path,
              "': optimizer state of '", name, "' has the wrong shape");
    EVL_CHECK(avg.is_floating_point() && avg_sq.is_floating_point() &&
                  torch::isfinite(avg).all().item<bool>() &&
                  torch::isfinite(avg_sq).all().item<bool>(),
              "checkpoint '", path, "': optimizer state of '", name, "' is not finite floats");
    st->exp_avg(avg.to(p.options()).clone());
    st->exp_avg_sq(avg_sq.to(p.options()).clone());
    optimizer.state()[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(st);
  }
  if (scaler && scaler->enabled() && has_key(dict, "loss_scaler")) {
    auto ls = dict_entry(dict, "loss_scaler", path);
    const double scale = double_entry(ls, "scale", path);
    EVL_CHECK(scale > 0, "checkpoint '", path, "': entry 'scale' of 'loss_scaler' is ", scale);
    scaler->load_state(scale, int_entry(ls, "growth_tracker", path, 0, int64_t(1) << 40));
  }
  return next_step;
}

}  // namespace evl
