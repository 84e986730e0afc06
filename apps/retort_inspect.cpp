// retort-inspect: looks inside checkpoints and models.
//
//   retort-inspect FILE.safetensors [--stats]     metadata and every tensor (dtype, shape), optionally
//                                                 with min/max/mean/std
//   retort-inspect --arch resnet8x4 [--classes 100 --channels 3 --size 32]
//                                                 the module tree, parameter count and feature taps
//   retort-inspect --arch resnet8x4 --graph       the autograd graph of forward + cross-entropy as DOT
//   retort-inspect --distill CONFIG [--set K=V] [--checkpoint FILE] [--batch 8] [--epoch E --step S] [--dump OUT.safetensors]
//                  [--images DIR [--scale N]]
//                  [--graph]                      one distillation step of a config on the first test images
//                                                 (eval-mode BN): every term's value, what each strategy
//                                                 shows (SoKD: sub-policy, DAM regions, mask grid), the
//                                                 loss graph as DOT, everything as tensors in a file, or
//                                                 as pictures (PNG + index.html) in a directory
//   retort-inspect FILE --check-arch resnet8x4 [--classes 100 ...]
//                                                 does FILE load into that model? lists every missing,
//                                                 unexpected and wrongly shaped key
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "apps/app_common.h"
#include "distill/distiller.h"
#include "distill/experiment.h"
#include "distill/pictures.h"
#include "distill/run_dir.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/serialize.h"
#include "models/registry.h"

using namespace retort;

namespace {

void print_metadata(const std::map<std::string, std::string>& metadata) {
  for (const auto& [k, v] : metadata)
    if (k == kSafetensorsChecksumKey)
      std::printf("meta  %-12s a CRC32 per tensor (checked when the data is read: --stats, loading)\n", k.c_str());
    else
      std::printf("meta  %-12s %s\n", k.c_str(), v.size() > 100 ? (v.substr(0, 97) + "...").c_str() : v.c_str());
}

int inspect_file(const std::string& path, bool stats) {
  const SafetensorsHeader h = read_safetensors_header(path);
  if (!stats) {
    print_metadata(h.metadata);
    int64_t total = 0;
    for (const auto& e : h.entries) {
      std::printf("%-48s %s%s\n", e.name.c_str(), e.dtype.c_str(), shape_str(e.shape).c_str());
      total += shape_numel(e.shape);
    }
    std::printf("%zu tensors, %lld elements\n", h.entries.size(), static_cast<long long>(total));
    return app::kOk;
  }
  const SafetensorsFile f = load_safetensors(path);  // checks the checksums, if the file has them
  print_metadata(f.metadata);
  // The statistics of the finite values (two passes: mean, then the spread around it); NaN and infinite
  // values are counted apart and named, since one of them makes a model's outputs meaningless.
  std::vector<std::string> non_finite;
  for (const auto& [k, t] : f.tensors) {
    const auto v = t.to_vector();
    double lo = INFINITY, hi = -INFINITY, sum = 0, sq = 0;
    int64_t n = 0, nan = 0, pos_inf = 0, neg_inf = 0;
    for (double x : v) {
      if (std::isnan(x)) ++nan;
      else if (std::isinf(x)) ++(x > 0 ? pos_inf : neg_inf);
      else lo = std::min(lo, x), hi = std::max(hi, x), sum += x, ++n;
    }
    const double mean = n ? sum / static_cast<double>(n) : 0.0;
    for (double x : v)
      if (std::isfinite(x)) sq += (x - mean) * (x - mean);
    std::string bad;
    if (nan) bad += detail::cat(", ", nan, " NaN");
    if (pos_inf) bad += detail::cat(", ", pos_inf, " +inf");
    if (neg_inf) bad += detail::cat(", ", neg_inf, " -inf");
    if (!bad.empty()) non_finite.push_back(k);
    std::printf("%-48s %-16s min %11.4g max %11.4g mean %11.4g std %11.4g%s\n", k.c_str(), t.meta_str().c_str(),
                n ? lo : NAN, n ? hi : NAN, n ? mean : NAN, n ? std::sqrt(sq / static_cast<double>(n)) : NAN,
                bad.empty() ? "" : ("  NON-FINITE: " + bad.substr(2) + " (the statistics are of the finite values)").c_str());
  }
  if (!non_finite.empty())
    std::printf("warning: %zu tensor%s hold%s NaN or infinite values (%s): a model with them computes NaN\n",
                non_finite.size(), non_finite.size() == 1 ? "" : "s", non_finite.size() == 1 ? "s" : "",
                detail::join(non_finite).c_str());
  if (h.metadata.count(kSafetensorsChecksumKey))
    std::printf("every tensor's data matches its CRC32 (%zu checked)\n", f.tensors.size());
  return app::kOk;
}

// The input FILE's model was built for, for what no flag gives (given: --classes, --channels, --size):
// what the file says it was trained on (trained_on: a model file's num_classes, in_channels, input_size,
// else what the training config a checkpoint stores implies). Returns where the values came from.
std::string file_model_options(const std::string& path, const std::map<std::string, std::string>& meta,
                               ModelOptions& mo, const bool given[3]) {
  const TrainedOn t = app::as_usage([&] { return trained_on(path, meta); });
  const int64_t values[3] = {t.num_classes, t.in_channels, t.input_size};
  int64_t* fields[3] = {&mo.num_classes, &mo.in_channels, &mo.input_size};
  const char* keys[3] = {"num_classes", "in_channels", "input_size"};
  std::string from;
  for (int i = 0; i < 3; ++i) {
    if (given[i] || values[i] == 0) continue;
    *fields[i] = values[i];
    from += (from.empty() ? "" : ", ") + std::string(keys[i]) + (t.implied[i] ? " of its config's dataset" : "");
  }
  return from.empty() ? std::string() : "; from the file's metadata: " + from;
}

int check_arch(const std::string& path, const std::string& arch, ModelOptions mo, const bool given[3]) {
  std::map<std::string, std::string> metadata;
  const StateDict state = read_model_state(path, &metadata);
  const std::string from = file_model_options(path, metadata, mo, given);
  Generator gen(0);
  auto model = app::as_usage([&] { return create_model(arch, mo, gen); });
  const std::string against = detail::cat(arch, " (", mo.num_classes, " classes, ", mo.in_channels, " channels, ",
                                          mo.input_size, " px", from, ")");
  const Module::LoadReport r = model->load_state_dict(state, /*strict=*/false);
  if (r.ok()) {
    std::printf("%s loads into %s: all %zu tensors match\n", path.c_str(), against.c_str(), state.size());
    return app::kOk;
  }
  std::printf("%s does not match %s:\n%s", path.c_str(), against.c_str(), r.str().c_str());
  return app::kRuntime;
}

int inspect_arch(const std::string& arch, const ModelOptions& mo, bool graph, Device dev) {
  Generator gen(0);
  auto model = app::as_usage([&] { return create_model(arch, mo, gen); });
  model->to(dev);
  if (graph) {
    Tensor x = Tensor::randn({2, mo.in_channels, mo.input_size, mo.input_size}, gen).to(dev);
    Tensor loss = cross_entropy((*model)(x), Tensor::from_int64({0, 1}, {2}).to(dev));
    std::printf("%s", graph_to_dot(loss).c_str());
    return app::kOk;
  }
  std::printf("%s\n\n%s: %lld parameters (%.3f M)\n\nfeature taps (shape for a batch of 1, on %s):\n",
              model->str().c_str(), arch.c_str(), static_cast<long long>(model->num_parameters()),
              static_cast<double>(model->num_parameters()) / 1e6, dev.str().c_str());
  model->eval();
  std::vector<std::pair<std::string, Shape>> seen;
  // Top-level modules, opening one that holds stages (MobileNetV2's blocks: blocks.0, blocks.1, ...); any
  // other module path can be tapped too (the tree above). Stages are marked with their alias.
  const std::vector<std::string> stages = model->stages();
  std::map<std::string, std::string> alias;
  for (size_t k = 0; k < stages.size(); ++k) alias[stages[k]] = "stage" + std::to_string(k + 1);
  auto holds_stage = [&stages](const std::string& path) {
    for (const auto& s : stages)
      if (s.rfind(path + ".", 0) == 0) return true;
    return false;
  };
  // The network's own points (:stem, :pooled), each listed where it fires.
  for (const std::string& point : model->points())
    model->tap(":" + point, [&seen, n = ":" + point](const Tensor& t) { seen.emplace_back(n, t.shape()); });
  for (const auto& [name, m] : model->named_modules()) {
    const size_t dot = name.find('.');
    const bool listed = !name.empty() && !holds_stage(name) &&
                        (dot == std::string::npos || (holds_stage(name.substr(0, dot)) && name.find('.', dot + 1) == std::string::npos));
    if (!listed) continue;
    const std::string label = alias.count(name) ? name + "  (" + alias[name] + ")" : name;
    model->tap(name, [&seen, label](const Tensor& t) { seen.emplace_back(label, t.shape()); });
    for (const std::string& point : m->points())
      model->tap(name + ":" + point, [&seen, n = name + ":" + point](const Tensor& t) { seen.emplace_back(n, t.shape()); });
  }
  NoGradGuard ng;
  (*model)(Tensor::zeros({1, mo.in_channels, mo.input_size, mo.input_size}, DType::F32, dev));
  for (const auto& [n, s] : seen) std::printf("  %-28s %s\n", n.c_str(), shape_str(s).c_str());
  if (!stages.empty())
    std::printf("\nstages (tap them as stage1..stage%zu, stage-1 for the last, \"stages\" for all; add :preact for the\n"
                "pre-activation): %s\n", stages.size(), detail::join(stages).c_str());
  return app::kOk;
}

// "f32[8, 32, 4, 4]": a view's type and shape (views are host copies; the step's device is in the header).
std::string dtype_shape(const Tensor& v) { return std::string(dtype_name(v.dtype())) + shape_str(v.shape()); }

struct DistillInspect {
  std::string config, checkpoint, dump, images;
  int64_t batch = 8, epoch = 0, step = 0, scale = 0;  // scale 0: pictures at least 96 pixels high
  bool epoch_given = false, step_given = false;  // else a checkpoint's position (or 0)
  bool graph = false;
  std::vector<std::string> overrides;  // --set key.path=value, as retort-distill's
};

// Sample 0 of a [B, H, W] mask as a grid of counts ('.' for 0).
void print_mask(const std::string& name, const Tensor& mask) {
  const Tensor m = mask.to(Device::cpu()).to(DType::F64);
  const int64_t h = m.shape()[1], w = m.shape()[2];
  std::printf("  %s, sample 0 (%lldx%lld, boxes counted where they overlap):\n", name.c_str(), static_cast<long long>(h),
              static_cast<long long>(w));
  for (int64_t y = 0; y < h; ++y) {
    std::printf("    ");
    for (int64_t x = 0; x < w; ++x) {
      const double v = m.data<double>()[y * w + x];
      std::printf("%c", v == 0 ? '.' : (v < 10 ? static_cast<char>('0' + static_cast<int>(v)) : '+'));
    }
    std::printf("\n");
  }
  // A sample whose boxes are all empty (SoKD's DAM: boxes clamped one side each can end before they
  // start, docs/methods/sokd.md) has an all-zero mask, so a masked loss is 0 for it this step.
  int64_t empty = 0;
  const int64_t per = h * w;
  for (int64_t i = 0; i < m.shape()[0]; ++i) {
    const double* p = m.data<double>() + i * per;
    empty += std::all_of(p, p + per, [](double v) { return v == 0; }) ? 1 : 0;
  }
  std::printf("  samples whose %s is all zero: %lld of %lld (a masked loss is 0 for them this step)\n", name.c_str(),
              static_cast<long long>(empty), static_cast<long long>(m.shape()[0]));
}

int inspect_distill(DistillInspect o, Device dev) {
  // --dump onto a file the step reads (the config, the checkpoint) would replace it with the dump.
  auto refuse_dump_onto = [&](const std::string& read) {
    std::error_code ec;
    if (!o.dump.empty() && std::filesystem::equivalent(o.dump, read, ec))
      throw app::UsageError(detail::cat("--dump ", o.dump, " is the file the step reads (", read,
                                        "): writing the dump there would replace it; give another path"));
  };
  refuse_dump_onto(o.config);
  // Where the dump goes is checked before the step runs (a teacher's forward can take a while).
  if (!o.dump.empty()) app::as_usage([&] { check_output_path("--dump " + o.dump, o.dump); });
  const ExperimentConfig cfg = app::load_config(o.config, o.overrides);
  if (cfg.terms.empty()) throw app::UsageError(o.config + ": no distill.terms to inspect");
  const DataSplits data = load_datasets(cfg.data);
  const Shape s = data.train->sample_shape();
  const ModelOptions mo{data.train->num_classes(), s[0], s[1]};
  Generator gen(cfg.seed);
  const auto [student, teacher] = app::make_distill_models(cfg, mo, gen);
  Distiller d(student, teacher, app::as_usage([&] { return parse_terms(cfg.terms, o.config); }),
              DistillerOptions::from_config(cfg, mo), s, gen);
  d.set_training_data(*data.train);  // as the Trainer does (CRD sizes its memory to receive the checkpoint's)
  if (!o.checkpoint.empty()) {
    // A run directory or its checkpoints/latest pointer (the newest checkpoint), a run's checkpoint
    // (model.*, extra.*) or a plain model file (the student's weights).
    const std::string file = resolve_checkpoint(o.checkpoint);
    refuse_dump_onto(file);
    StateDict extra;
    std::map<std::string, std::string> meta;
    try {
      load_model_file(*student, file, &extra, &meta);
    } catch (const Error&) {
      // A file of another architecture: say so rather than only list every key that does not fit.
      if (const std::string m = arch_mismatch(meta, cfg.arch, "the config's student (model.arch)"); !m.empty())
        throw app::UsageError(file + ": " + m);
      throw;
    }
    if (!extra.empty()) d.load_extra_state(extra);
    // The run's own config, where the file keeps it: the step is CONFIG's (with --set), so say where it
    // differs from what the run trained with (a teacher.checkpoint or a term given by --set then, say).
    if (auto it = meta.find("config"); it != meta.end() && !it->second.empty()) {
      Json saved = Json::parse(it->second, nullptr, false);
      try {
        saved = ExperimentConfig::from_json(saved, file).to_json();  // defaults filled in, as cfg's
      } catch (const Error&) {
      }
      std::vector<std::string> diffs;
      for (const ConfigChange& c : config_changes(saved, cfg.to_json()))
        if (!c.under({"experiment.name", "experiment.output_dir", "log", "solver", "data.num_workers",
                      "data.eval_batch_size", "data.root", "model.init", "experiment.device"}))  // nothing the step computes
          diffs.push_back(c.str());
      if (!diffs.empty())
        std::fprintf(stderr, "note: %s was trained with a config that differs from %s%s in: %s. The step uses the "
                     "latter (the run's own config.json holds what it trained with)\n", file.c_str(), o.config.c_str(),
                     o.overrides.empty() ? "" : " with --set", detail::join(diffs, "; ").c_str());
    }
    // A checkpoint's position in training is the step's, unless --epoch / --step say otherwise: the next
    // step it would take (a checkpoint at an epoch's end: the first step of the next epoch).
    if (auto it = meta.find("trainer"); it != meta.end()) {
      const Json t = Json::parse(it->second, nullptr, false);
      if (t.is_object() && t.value("epoch", -1) >= 0 && t.value("step", int64_t{-1}) >= 0) {
        const auto nb = static_cast<int64_t>((data.train->size() + static_cast<size_t>(cfg.data.batch_size) - 1) /
                                             static_cast<size_t>(cfg.data.batch_size));
        const int64_t ep = t.value("epoch", int64_t{0}) + (t.value("batch", int64_t{0}) >= nb ? 1 : 0);
        if (!o.epoch_given) o.epoch = ep;
        if (!o.step_given) o.step = t.value("step", int64_t{0});
      }
    }
  }
  d.to(dev);
  d.train(false);  // eval-mode BN: the numbers are a function of the batch alone
  if (static_cast<size_t>(o.batch) > data.test->size()) {
    std::fprintf(stderr, "note: --batch %lld: the test split has %zu images; the step takes them all\n",
                 static_cast<long long>(o.batch), data.test->size());
    o.batch = static_cast<int64_t>(data.test->size());
  }
  DataLoader loader(data.test, LoaderOptions{o.batch, false, false, 0, 0}, eval_transform(cfg.data));
  loader.start_epoch(0);
  Batch b;
  loader.next(b);
  b.to(dev);
  Tensor logits;
  const LossTerms terms = d.losses(b, TrainProgress{static_cast<int>(o.epoch), cfg.solver.epochs, o.step, 0, 1}, logits);
  const Tensor total = total_loss(terms);
  if (o.graph) {
    std::printf("%s", graph_to_dot(total).c_str());
    return app::kOk;
  }
  // Epoch as the log numbers it (from 1), and the global step's 0-based index as --step takes it.
  std::printf("%s: %s on the first %lld test images, epoch %lld (--epoch %lld), step index %lld%s, on %s\n",
              o.config.c_str(), d.describe().c_str(), static_cast<long long>(b.size()),
              static_cast<long long>(o.epoch + 1), static_cast<long long>(o.epoch), static_cast<long long>(o.step),
              o.checkpoint.empty() ? " (fresh weights)" : "", dev.str().c_str());
  for (const auto& [n, t] : terms) std::printf("  %-28s %.6g\n", n.c_str(), t.item());
  std::printf("  %-28s %.6g\n", "total", total.item());
  std::vector<std::pair<std::string, Tensor>> dumped{{"input", b.inputs.to(Device::cpu())},
                                                     {"targets", b.targets.to(Device::cpu())},
                                                     {"student_logits", logits.detach().to(Device::cpu())}};
  const std::vector<std::pair<std::string, Tensor>> views = d.views();  // the taps, then the terms' views
  auto starts = [](const std::string& s, const std::string& head) { return s.compare(0, head.size(), head) == 0; };
  bool tapped = false;
  for (const auto& [name, v] : views)
    if (starts(name, "student.") || starts(name, "teacher.")) {
      if (!tapped) std::printf("\ntapped features\n");
      tapped = true;
      std::printf("  %-28s %s\n", name.c_str(), dtype_shape(v).c_str());
    }
  for (const auto& t : d.terms()) {
    const std::string text = t.strategy->inspect_text(), head = "term." + t.name + ".";
    std::vector<std::pair<std::string, Tensor>> shown;
    for (const auto& [name, v] : views)
      if (starts(name, head)) shown.emplace_back(name.substr(head.size()), v);
    if (text.empty() && shown.empty()) continue;
    std::printf("\nterm %s (%s)%s%s\n", t.name.c_str(), t.strategy->type_name().c_str(), text.empty() ? "" : ": ",
                text.c_str());
    for (const auto& [k, v] : shown) std::printf("  %-20s %s\n", k.c_str(), dtype_shape(v).c_str());
    for (const auto& [k, v] : shown)
      if (k == "mask" && v.dim() == 3) print_mask(k, v);
  }
  dumped.insert(dumped.end(), views.begin(), views.end());
  if (!o.images.empty()) {
    const int64_t n = write_step_pictures(o.images, dumped[0].second, dumped[1].second, dumped[2].second, views,
                                          cfg.data.mean, cfg.data.std, o.scale,
                                          o.config + ": " + d.describe() + ", epoch " + std::to_string(o.epoch + 1) +
                                              ", step " + std::to_string(o.step), d.view_notes(), d.relation_views());
    std::printf("\nwrote %lld pictures and %s/index.html\n", static_cast<long long>(n), o.images.c_str());
  }
  if (!o.dump.empty()) {
    save_safetensors(o.dump, dumped, {{"config", o.config}, {"checkpoint", o.checkpoint}});
    std::printf("\nwrote %zu tensors to %s\n", dumped.size(), o.dump.c_str());
  }
  return app::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Retort: inspect checkpoints, models and architectures"};
  std::string path, arch, check, device = "cpu";
  bool stats = false, graph = false;
  std::optional<int> threads;
  ModelOptions mo;
  cli.add_option("file", path, "A .safetensors checkpoint or model, or a run directory (its model)");
  cli.add_option("--arch", arch, "Describe an architecture of the model zoo instead of a file");
  cli.add_option("--classes", mo.num_classes, "Classes (with --arch or --check-arch; default 100, or FILE's)");
  cli.add_option("--channels", mo.in_channels, "Input channels (with --arch or --check-arch; default 3, or FILE's)");
  cli.add_option("--size", mo.input_size, "Input height and width (with --arch or --check-arch; default 32, or FILE's)");
  cli.add_option("--check-arch", check, "Check that FILE loads into this architecture (strict names and shapes)");
  cli.add_flag("--stats", stats, "Per-tensor min/max/mean/std (reads all data)");
  cli.add_flag("--graph", graph, "Print the autograd graph as Graphviz DOT (with --arch: forward + cross-entropy; with --distill: the step's loss)");
  cli.add_option("--device", device, "cpu | cuda | cuda:N: where --arch and --distill run (files are read on the host)");
  app::add_threads_flag(cli, threads);
  DistillInspect di;
  cli.add_option("--distill", di.config, "One distillation step of this experiment config: terms, strategy views");
  cli.add_option("--checkpoint", di.checkpoint, "With --distill: a run's checkpoint or model file to load first");
  cli.add_option("--batch", di.batch, "With --distill: how many test images (default 8)");
  cli.add_option("--epoch", di.epoch, "With --distill: the 0-based epoch the step belongs to (search phases, warmups)");
  cli.add_option("--step", di.step, "With --distill: the global step (SoKD draws its augmentation from it)");
  cli.add_option("--set", di.overrides, "With --distill: override a config value, key.path=value (repeatable)");
  cli.add_option("--dump", di.dump, "With --distill: write inputs, logits, tapped features and every strategy view to this .safetensors");
  cli.add_option("--images", di.images, "With --distill: draw the inputs, tapped features and strategy views as PNG files in this directory, with an index.html");
  cli.add_option("--scale", di.scale, "With --images: enlarge every picture to the input's size times this, 1 to 64 (default: at least 96 pixels high)");
  if (const auto rc = app::parse_command_line(cli, "retort-inspect", argc, argv)) return *rc;
  return app::run_guarded("retort-inspect", [&] {
    // What each mode reads; a flag no chosen mode reads would do nothing, and is refused naming it.
    auto given = [&](const char* flag) { return cli.count(flag) > 0; };
    const std::string mode = !di.config.empty() ? "--distill"
                             : !check.empty()     ? "--check-arch"
                             : !arch.empty()      ? "--arch"
                                                  : "FILE";
    if (!di.config.empty() && !check.empty()) throw app::UsageError("--distill and --check-arch are two tools: give one");
    if ((!di.config.empty() || !check.empty()) && !arch.empty())
      throw app::UsageError(detail::cat("--arch describes an architecture on its own; with ", mode, " it does nothing",
                                        !check.empty() ? " (--check-arch names the architecture to check FILE against)" : ""));
    if (!path.empty() && (!di.config.empty() || !arch.empty()))
      throw app::UsageError(detail::cat(mode, " reads no FILE, and ", path, " was given too (",
                                        !arch.empty() ? "to check a file against an architecture: FILE --check-arch NAME"
                                                      : "to load weights into the step: --checkpoint FILE",
                                        ")"));
    if (mode == "FILE" && path.empty()) throw app::UsageError("give a file, --arch NAME or --distill CONFIG (see --help)");
    if (mode == "--check-arch" && path.empty()) throw app::UsageError("--check-arch needs a file");
    for (const char* flag : {"--checkpoint", "--batch", "--epoch", "--step", "--set", "--dump", "--images", "--scale"})
      if (given(flag) && di.config.empty())
        throw app::UsageError(detail::cat(flag, " is for --distill; with ", mode, " it does nothing"));
    if (given("--scale") && di.images.empty())
      throw app::UsageError("--scale sizes the --images pictures; without --images it does nothing");
    for (const char* flag : {"--classes", "--channels", "--size"})
      if (given(flag) && (mode == "FILE" || mode == "--distill"))
        throw app::UsageError(detail::cat(flag, " is for --arch and --check-arch; with ", mode,
                                          mode == "FILE" ? " it does nothing" : " the config's data decides it"));
    if (graph && (mode == "FILE" || mode == "--check-arch"))
      throw app::UsageError(
          detail::cat("--graph draws --arch NAME's forward or a --distill step; with ", mode, " it does nothing"));
    if (graph && (!di.dump.empty() || !di.images.empty()))
      throw app::UsageError(detail::cat("--graph prints the step's loss graph and nothing else; with ",
                                        !di.dump.empty() ? "--dump" : "--images", " it would write nothing"));
    if (stats && mode != "FILE")
      throw app::UsageError(detail::cat("--stats reads FILE's tensors; with ", mode, " it does nothing"));
    if (given("--device") && (mode == "FILE" || mode == "--check-arch"))
      throw app::UsageError(detail::cat("--device is where --arch and --distill run; ", mode, " is read on the host"));
    if (di.batch < 1) throw app::UsageError(detail::cat("--batch ", di.batch, ": expected at least 1"));
    if (di.epoch < 0) throw app::UsageError(detail::cat("--epoch ", di.epoch, ": expected an epoch >= 0 (0-based)"));
    if (di.step < 0) throw app::UsageError(detail::cat("--step ", di.step, ": expected a step >= 0"));
    if (given("--scale") && (di.scale < 1 || di.scale > 64))
      throw app::UsageError(
          detail::cat("--scale ", di.scale, ": expected 1 to 64 (leave it out for pictures at least 96 pixels high)"));
    for (const auto& [flag, v] : {std::pair{"--classes", mo.num_classes}, {"--channels", mo.in_channels}, {"--size", mo.input_size}})
      if (v < 1) throw app::UsageError(detail::cat(flag, " ", v, ": expected a positive count"));
    app::set_threads(threads);
    const Device dev = app::device_flag(device);
    if (!path.empty()) path = app::model_file_arg(path);  // a run directory: its model
    if (!check.empty()) {
      const bool flags_given[3] = {given("--classes"), given("--channels"), given("--size")};
      return check_arch(path, check, mo, flags_given);
    }
    if (!di.config.empty()) {
      di.graph = graph;
      di.epoch_given = given("--epoch");
      di.step_given = given("--step");
      return inspect_distill(di, dev);
    }
    if (!arch.empty()) return inspect_arch(arch, mo, graph, dev);
    return inspect_file(path, stats);
  });
}
