// retort-eval: evaluates a trained model (a run's model.safetensors, or a checkpoint; a run directory means
// its model.safetensors, or its newest checkpoint while it has none) on a dataset.
// The architecture comes from the file's metadata (or --arch); the dataset and its normalisation
// default to the ones the model was trained with (or come from --config / --dataset for imported
// models, which carry no training config).
//
//   retort-eval runs/fmnist_teacher/model.safetensors [--split test] [--data-root DIR] [--device cuda] [--json]
//   retort-eval imported_resnet32x4.safetensors --config configs/cifar100/kd_resnet32x4_resnet8x4.json
//   retort-eval runs/kd/model.safetensors --against runs/teacher/model.safetensors
//                                  also: how often the two models' top-1 agree, and KL(against || model)
//   retort-eval runs/kd/model.safetensors --against runs/teacher/model.safetensors --cka
//                                  also: linear CKA between every stage of the one and every stage of the other
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "apps/app_common.h"
#include "distill/similarity.h"
#include "engine/serialize.h"
#include "models/registry.h"

using namespace retort;

int main(int argc, char** argv) {
  CLI::App cli{"Retort: evaluate a trained model on a dataset"};
  std::string path, split = "test", dataset, root, arch, config_path, device = "cpu", math = "ieee", against,
      against_arch;
  int64_t batch_size = 256;
  std::optional<int> threads;
  bool json_out = false, cka = false;
  std::vector<std::string> taps, against_taps;
  cli.add_option("model", path, "model.safetensors of a run, or a checkpoint")->required();
  cli.add_option("--split", split, "test or train")->check(CLI::IsMember({"test", "train"}));
  cli.add_option("--arch", arch, "Architecture (default: the model's metadata)");
  cli.add_option("--config", config_path,
                 "Take the data settings (dataset, root, normalisation, and data.test_limit / data.train_limit for the "
                 "split evaluated) from this config");
  cli.add_option("--dataset", dataset, "Dataset name (default: the one in the model's metadata)");
  cli.add_option("--data-root", root, "Dataset root directory (default: the training run's)");
  cli.add_option("--batch-size", batch_size, "Evaluation batch size");
  cli.add_option("--device", device, "cpu | cuda | cuda:N");
  cli.add_option("--math", math, "Convolution arithmetic, as experiment.math: ieee | bf16, winograd (CPU) | tf32 (CUDA)");
  cli.add_option("--against", against, "A second model (e.g. the teacher): also report the top-1 agreement with it and KL(it || model)");
  cli.add_option("--against-arch", against_arch, "Architecture of --against (default: its metadata)");
  cli.add_flag("--cka", cka, "With --against: linear CKA between the two models' features (every stage, :pooled, logits)");
  cli.add_option("--taps", taps, "With --cka: the model's features to compare (comma-separated tap specs)")->delimiter(',');
  cli.add_option("--against-taps", against_taps, "With --cka: the --against model's features (default: its stages, :pooled, logits)")
      ->delimiter(',');
  cli.add_flag("--json", json_out, "Print the result as one JSON object");
  app::add_threads_flag(cli, threads);
  if (const auto rc = app::parse_command_line(cli, "retort-eval", argc, argv)) return *rc;

  return app::run_guarded("retort-eval", [&] {
    if ((cka || !taps.empty() || !against_taps.empty()) && against.empty())
      throw app::UsageError("--cka, --taps and --against-taps compare two models: give the other with --against");
    if (!against_arch.empty() && against.empty())
      throw app::UsageError("--against-arch is the architecture of the --against model: give that model with --against");
    if (batch_size < 1) throw app::UsageError(detail::cat("--batch-size ", batch_size, ": expected at least 1"));
    app::set_threads(threads);
    if (!taps.empty() || !against_taps.empty()) cka = true;
    const Device dev = app::device_flag(device);
    // A run directory means its model (or, while it has none yet, its newest checkpoint).
    for (std::string* p : {&path, &against})
      if (!p->empty()) *p = app::model_file_arg(*p);
    // Inference may choose kernels by speed (deterministic false), as evaluation always has.
    const auto switches = app::as_usage([&] { return std::make_unique<KernelSwitches>(math, false, dev, "--math"); });
    // A model file's state (exported models hold it as is; checkpoints prefix it with "model.") and
    // metadata.
    struct ModelFile {
      std::map<std::string, std::string> metadata;
      StateDict state;
      std::string meta(const std::string& k) const {
        auto it = metadata.find(k);
        return it == metadata.end() ? std::string() : it->second;
      }
    };
    auto read = [](const std::string& file) {
      ModelFile m;
      m.state = read_model_state(file, &m.metadata);
      return m;
    };
    const ModelFile f = read(path);
    auto meta = [&](const std::string& k) { return f.meta(k); };
    if (arch.empty()) arch = meta("arch");
    if (arch.empty()) throw app::UsageError(path + ": no architecture in the metadata; pass --arch");
    DataConfig data_cfg;
    if (!config_path.empty()) {
      data_cfg = app::load_config(config_path).data;
    } else if (!meta("config").empty()) {
      data_cfg = app::as_usage([&] {
        return ExperimentConfig::from_json(parse_metadata_json(path, "config", meta("config")), path + " (metadata)")
            .data;
      });
    } else if (!meta("dataset").empty() || !dataset.empty()) {
      // No training config (an imported or hand-made model): the dataset is known, its data settings
      // are not. Evaluate without normalisation, and say so.
      if (!meta("dataset").empty()) data_cfg.dataset = meta("dataset");
      std::fprintf(stderr,
                   "note: %s has no training config in its metadata; evaluating on %s without normalisation "
                   "(pass --config with the config it was trained with to use its data settings)\n",
                   path.c_str(), (dataset.empty() ? data_cfg.dataset : dataset).c_str());
    } else {
      throw app::UsageError(path + ": no training config and no dataset in the metadata (an imported or hand-made "
                            "model), so the data it expects is unknown: pass --config with the config it was trained "
                            "with, or --dataset NAME to evaluate on NAME without normalisation");
    }
    ExperimentConfig cfg;
    cfg.data = data_cfg;
    if (!dataset.empty()) cfg.data.dataset = dataset;
    if (!root.empty()) cfg.data.root = root;
    // A model's own training config limited its run's evaluations (data.test_limit), not what a model is
    // judged on: the whole split. --config's data settings apply as they are, limits included.
    if (config_path.empty()) cfg.data.train_limit = cfg.data.test_limit = 0;

    const DataSplits data = load_datasets(cfg.data);
    auto ds = split == "test" ? data.test : data.train;
    const Shape s = ds->sample_shape();
    auto build = [&](const std::string& file, const std::string& name, const char* arch_flag, const ModelFile& mf) {
      // A model for other data (another class count, channel count or image size) cannot be evaluated on
      // this data: say so before the state dict's shapes would.
      const TrainedOn t = app::as_usage([&] { return trained_on(file, mf.metadata); });
      if (!t.agrees_with(cfg.data.dataset, ds->num_classes(), s, false))
        throw app::UsageError(detail::cat(file, ": was trained on ", t.str(), "; the evaluation data (", split,
                                          " split) is ", data_str(cfg.data.dataset, ds->num_classes(), s),
                                          ": evaluate it on the data it was trained on (--dataset / --config)"));
      Generator gen(0);
      auto m = app::as_usage([&] { return create_model(name, ModelOptions{ds->num_classes(), s[0], s[1]}, gen); });
      try {
        m->load_state_dict(mf.state);
      } catch (const Error& e) {
        // (The architecture or the data is not the file's: both are the user's choice here.)
        if (const std::string m = arch_mismatch(mf.metadata, name, arch_flag); !m.empty())
          throw app::UsageError(detail::cat(file, ": ", m));
        std::string what = e.what();
        while (!what.empty() && what.back() == '\n') what.pop_back();
        throw app::UsageError(detail::cat(file, ": ", what, "\n(", name, " was built for the evaluation data, ",
                                          data_str(cfg.data.dataset, ds->num_classes(), s),
                                          "; give the architecture and data the model was trained with: "
                                          "--arch, --config or --dataset)"));
      }
      m->to(dev);
      return m;
    };
    auto model = build(path, arch, "--arch", f);
    DataLoader loader(ds, LoaderOptions{batch_size, false, false, 2, 0}, eval_transform(cfg.data));
    // --against: the second model on the same data first, its logits the reference for the first.
    Tensor reference;
    EvalResult other;
    std::shared_ptr<Module> other_model;
    if (!against.empty()) {
      const ModelFile g = read(against);
      if (against_arch.empty()) against_arch = g.meta("arch");
      if (against_arch.empty()) throw app::UsageError(against + ": no architecture in the metadata; pass --against-arch");
      other_model = build(against, against_arch, "--against-arch", g);
      other = evaluate(*other_model, loader, nullptr, &reference);
    }
    const EvalResult r = evaluate(*model, loader, against.empty() ? nullptr : &reference);
    SimilarityResult sim;
    if (cka) {
      if (taps.empty()) taps = default_similarity_taps(*model);
      if (against_taps.empty()) against_taps = default_similarity_taps(*other_model);
      // Stage aliases ("stage-1", "stages") name each network's own stages.
      app::as_usage([&] {
        taps = model->resolve_taps(taps);
        against_taps = other_model->resolve_taps(against_taps);
        return 0;
      });
      sim = app::as_usage([&] { return representation_similarity(*model, taps, *other_model, against_taps, loader); });
    }
    if (json_out) {
      Json j{{"model", path}, {"arch", arch}, {"dataset", cfg.data.dataset}, {"split", split}, {"samples", r.samples},
             {"top1", r.top1}, {"top5", r.top5}, {"loss", r.loss}, {"math", math}};
      if (!against.empty())
        j["against"] = {{"model", against}, {"arch", against_arch}, {"top1", other.top1},
                        {"agreement", r.agreement}, {"kl", r.kl}};
      if (cka) {
        Json rows = Json::array();
        for (const auto& row : sim.cka) {  // NaN (a constant feature) as null
          Json jr = Json::array();
          for (double c : row) jr.push_back(std::isfinite(c) ? Json(c) : Json());
          rows.push_back(jr);
        }
        j["cka"] = {{"taps", sim.taps}, {"against_taps", sim.other_taps}, {"matrix", rows},
                    {"samples", sim.samples}, {"samples_skipped", sim.samples_skipped}, {"batch_size", batch_size}};
      }
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s (%s) on %s %s, %lld samples: top-1 %.2f%%  top-5 %.2f%%  loss %.4f%s\n", path.c_str(),
                  arch.c_str(), cfg.data.dataset.c_str(), split.c_str(), static_cast<long long>(r.samples),
                  r.top1, r.top5, r.loss, math == "ieee" ? "" : ("  (math " + math + ")").c_str());
      if (!against.empty())
        std::printf("  against %s (%s, top-1 %.2f%%): top-1 agreement %.2f%%, KL(it || model) %.4f\n", against.c_str(),
                    against_arch.c_str(), other.top1, r.agreement, r.kl);
      if (cka) {
        std::printf("  linear CKA, minibatch estimate over %lld samples in batches of %lld%s; rows: the model's features, "
                    "columns: %s's\n",
                    static_cast<long long>(sim.samples), static_cast<long long>(batch_size),
                    sim.samples_skipped ? (" (" + std::to_string(sim.samples_skipped) + " in a batch of <= 3 skipped)").c_str()
                                        : "",
                    against_arch.c_str());
        size_t w0 = 8;
        for (const auto& t : sim.taps) w0 = std::max(w0, t.size() + 2);
        std::printf("    %-*s", static_cast<int>(w0), "");
        std::vector<int> widths;
        for (const auto& t : sim.other_taps) {
          widths.push_back(static_cast<int>(std::max<size_t>(7, t.size()) + 2));
          std::printf("%*s", widths.back(), t.c_str());
        }
        std::printf("\n");
        for (size_t i = 0; i < sim.taps.size(); ++i) {
          std::printf("    %-*s", static_cast<int>(w0), sim.taps[i].c_str());
          for (size_t c = 0; c < sim.other_taps.size(); ++c) std::printf("%*.4f", widths[c], sim.cka[i][c]);
          std::printf("\n");
        }
      }
    }
    return app::kOk;
  });
}
