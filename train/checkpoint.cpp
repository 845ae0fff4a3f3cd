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

const torch::Tensor* find(const StateDict& state, const std::string& name) {
  for (const auto& [n, t] : state)
    if (n == name) return &t;
  return nullptr;
}

}  // namespace

StateDict read_state_dict(const std::string& path, std::string* config_ini) {
  const auto root = read_torch_file(path);
  EVL_CHECK(root.isGenericDict(), "checkpoint '", path, "' does not hold a dict");
  auto dict = root.toGenericDict();
  if (config_ini) *config_ini = "";
  if (has_key(dict, "model")) {
    if (config_ini && has_key(dict, "config") && dict.at("config").isString())
      *config_ini = dict.at("config").toStringRef();
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
                              const std::string& config_ini, const GradScaler* scaler) {
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
                                 torch::optim::AdamW& optimizer, GradScaler* scaler) {
  const auto root = read_torch_file(path);
  EVL_CHECK(root.isGenericDict(), "checkpoint '", path, "' does not hold a dict");
  auto dict = root.toGenericDict();
  EVL_CHECK(has_key(dict, "format") && dict.at("format").isString() &&
                dict.at("format").toStringRef() == kFormat,
            "checkpoint '", path,
            "' is not an evl training checkpoint (official files go to --init)");
  EVL_CHECK(dict.at("format_version").toInt() <= kCheckpointVersion, "checkpoint '", path,
            "' has format version ", dict.at("format_version").toInt(), ", newer than this evl (",
            kCheckpointVersion, ")");
  load_head_state(head, to_state_dict(dict.at("model").toGenericDict(), path), path);
  auto states = dict.at("optimizer").toGenericDict().at("state").toGenericDict();
  optimizer.state().clear();
  for (const auto& [name, p] : head_state(head)) {
    if (!states.contains(name)) continue;
    auto entry = states.at(name).toGenericDict();
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    st->step(entry.at("step").toInt());
    st->exp_avg(entry.at("exp_avg").toTensor().clone().to(p.device()));
    st->exp_avg_sq(entry.at("exp_avg_sq").toTensor().clone().to(p.device()));
    EVL_CHECK(st->exp_avg().sizes() == p.sizes(), "checkpoint '", path, "': optimizer state of '",
              name, "' has the wrong shape");
    optimizer.state()[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(st);
  }
  if (scaler && scaler->enabled() && has_key(dict, "loss_scaler")) {
    auto ls = dict.at("loss_scaler").toGenericDict();
    scaler->load_state(ls.at("scale").toDouble(), ls.at("growth_tracker").toInt());
  }
  return dict.at("next_step").toInt();
}

}  // namespace evl
