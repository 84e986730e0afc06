// retort-train: trains a model with cross-entropy from a JSON experiment config (teachers and
// baseline students). See docs/cli.md.
//
//   retort-train configs/fmnist/teacher_resnet8x4.json [--set solver.epochs=3] [--resume auto]
#include <CLI/CLI.hpp>

#include <cstdio>

#include "apps/app_common.h"
#include "engine/backend.h"
#include "distill/experiment.h"
#include "distill/trainer.h"
#include "models/registry.h"

using namespace retort;

int main(int argc, char** argv) {
  CLI::App cli{"Retort: train a model (cross-entropy) from a JSON experiment config"};
  app::RunFlags flags;
  std::string label_smoothing;
  app::add_run_flags(cli, flags);
  cli.add_option("--label-smoothing", label_smoothing,
                 "Cross-entropy label smoothing in [0, 1): the same as --set solver.label_smoothing=S");
  if (const auto rc = app::parse_command_line(cli, "retort-train", argc, argv)) return *rc;

  return app::run_guarded("retort-train", [&] {
    // Part of the recipe: in the run's config.json, and compared with the checkpoint's when resuming.
    if (!label_smoothing.empty())
      flags.flag_overrides.push_back({"solver.label_smoothing", label_smoothing, "--label-smoothing " + label_smoothing});
    const ExperimentConfig cfg = app::load_run_config(flags);
    if (!cfg.terms.empty() || !cfg.teacher.arch.empty())
      throw app::UsageError(flags.config_path + " has a teacher or distill terms: run it with retort-distill "
                            "(retort-train would silently train with cross-entropy only)");

    const DataSplits data = load_datasets(cfg.data);
    const Shape s = data.train->sample_shape();
    Generator gen(cfg.seed);
    ModelOptions mo{data.train->num_classes(), s[0], s[1]};
    auto model = app::config_model(cfg.arch, "model.arch", mo, gen);
    app::load_init_weights(*model, cfg);
    ClassifierTask task(model, cfg.solver.label_smoothing);
    RunDir run(app::run_dir_of(flags, cfg));

    Trainer trainer(cfg, task, data, run);  // (sets the kernel switches the cpu line reports)
    std::printf("retort-train: %s\n  model   %s, %.3f M parameters\n", cfg.name.c_str(), cfg.arch.c_str(),
                static_cast<double>(model->num_parameters()) / 1e6);
    app::print_run_lines(cfg, data, trainer, run);
    if (!cfg.init.empty()) std::printf("  init    weights from %s\n", cfg.init.c_str());
    trainer.set_allow_config_change(flags.allow_config_change);
    const TrainSummary sum = trainer.fit(flags.resume);
    std::printf("retort-train: done: best top-1 %.2f%% (epoch %d), last top-1 %.2f%%, %.0f s, %.0f img/s\n"
                "  model saved to %s\n",
                sum.best_top1, sum.best_epoch, sum.last_top1, sum.wall_seconds, sum.images_per_second,
                run.file("model.safetensors").c_str());
    return app::kOk;
  });
}
