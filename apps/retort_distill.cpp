// retort-distill: trains a student from a JSON experiment config with a frozen teacher and weighted
// distillation terms (ce, kd, dkd, fitnet, at, cwd, reviewkd, ...). Evaluates the teacher first.
// A config with a single "ce" term and no teacher is a baseline student. See docs/cli.md.
//
//   retort-distill configs/fmnist/student_kd.json [--set distill.terms.1.weight=0.9] [--resume auto]
#include <CLI/CLI.hpp>

#include <cstdio>

#include "apps/app_common.h"
#include "distill/distiller.h"
#include "distill/experiment.h"
#include "distill/trainer.h"
#include "engine/backend.h"
#include "models/registry.h"

using namespace retort;

int main(int argc, char** argv) {
  CLI::App cli{"Retort: distill a student from a teacher with the terms of a JSON experiment config"};
  app::RunFlags flags;
  app::add_run_flags(cli, flags);
  if (const auto rc = app::parse_command_line(cli, "retort-distill", argc, argv)) return *rc;

  return app::run_guarded("retort-distill", [&] {
    const ExperimentConfig cfg = app::load_run_config(flags);
    if (cfg.terms.empty()) throw app::UsageError(flags.config_path + ": no distill.terms (use retort-train for plain training)");
    if (cfg.solver.label_smoothing != 0)
      throw app::UsageError(flags.config_path + ": solver.label_smoothing is retort-train's; a distillation smooths its "
                            "ce term's labels with that term's params.label_smoothing");

    const DataSplits data = load_datasets(cfg.data);
    const Shape s = data.train->sample_shape();
    const ModelOptions mo{data.train->num_classes(), s[0], s[1]};
    Generator gen(cfg.seed);
    const auto [student, teacher] = app::make_distill_models(cfg, mo, gen);
    // The terms and what they need of both networks (taps, bridgeable shapes) are the config's: checked
    // before the teacher's evaluation, and refused as config errors (exit code 1).
    std::vector<DistillTerm> terms = app::as_usage([&] { return parse_terms(cfg.terms, flags.config_path); });
    Distiller distiller = app::as_usage([&] {
      return Distiller(student, teacher, std::move(terms), DistillerOptions::from_config(cfg, mo), s, gen);
    });
    double teacher_top1 = -1;
    Tensor teacher_logits;  // on the test set: the student's agreement with the teacher at every evaluation
    if (teacher) {
      // In the run's arithmetic (experiment.math), as the teacher's forwards in the run will be.
      const KernelSwitches switches(cfg, Device::parse(cfg.device));
      DataLoader tl(data.test, LoaderOptions{cfg.data.eval_batch_size, false, false, cfg.data.num_workers, 0},
                    eval_transform(cfg.data));
      teacher_top1 = evaluate(*teacher, tl, nullptr, &teacher_logits).top1;
      std::printf("retort-distill: teacher %s from %s: test top-1 %.2f%%\n", cfg.teacher.arch.c_str(),
                  cfg.teacher.checkpoint.c_str(), teacher_top1);
    }
    RunDir run(app::run_dir_of(flags, cfg));
    Trainer trainer(cfg, distiller, data, run);  // (sets the kernel switches the cpu line reports)
    std::printf("retort-distill: %s\n  student %s, %.3f M parameters (+%lld in distillation modules)\n  loss    %s\n",
                cfg.name.c_str(), cfg.arch.c_str(), static_cast<double>(student->num_parameters()) / 1e6,
                static_cast<long long>(distiller.extra_parameter_count()), distiller.describe().c_str());
    app::print_run_lines(cfg, data, trainer, run);
    for (const std::string& line : distiller.tap_lines()) std::printf("  taps    %s\n", line.c_str());
    if (!cfg.init.empty()) std::printf("  init    student weights from %s\n", cfg.init.c_str());
    if (teacher) {
      trainer.add_summary_field("teacher_top1", teacher_top1);
      trainer.set_reference_logits(teacher_logits);
    }
    trainer.add_summary_field("terms", distiller.terms_json());
    trainer.add_summary_field("extra_parameters", distiller.extra_parameter_count());
    trainer.set_allow_config_change(flags.allow_config_change);
    const TrainSummary sum = trainer.fit(flags.resume);
    char teacher_part[64] = "";
    if (teacher) std::snprintf(teacher_part, sizeof teacher_part, " (teacher %.2f%%)", teacher_top1);
    std::printf("retort-distill: done: student best top-1 %.2f%% (epoch %d), last %.2f%%%s, %.0f s, %.0f img/s\n"
                "  model saved to %s\n",
                sum.best_top1, sum.best_epoch, sum.last_top1, teacher_part, sum.wall_seconds, sum.images_per_second,
                run.file("model.safetensors").c_str());
    return app::kOk;
  });
}
