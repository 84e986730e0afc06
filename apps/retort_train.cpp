// retort-train: trains a model with cross-entropy from a JSON experiment config (teachers and
// baseline students). See docs/cli.md.
//
//   retort-train configs/fmnist/teacher_resnet8x4.json [--set solver.epochs=3] [--resume auto]
#include <CLI/CLI.hpp>
#include <omp.h>

#include <cstdio>

#include "apps/app_common.h"
#include "engine/backend.h"
#include "distill/experiment.h"
#include "distill/trainer.h"
#include "models/registry.h"

using namespace retort;

int main(int argc, char** argv) {
  CLI::App cli{"Retort: train a model (cross-entropy) from a JSON experiment config"};
  std::string config_path, resume, run_dir_override, device;
  std::vector<std::string> overrides;
  int64_t seed = -1;
  int threads = 0;
  double label_smoothing = 0.0;
  cli.add_option("config", config_path, "Experiment config (JSON)")->required();
  cli.add_option("--set", overrides, "Override a config value: key.path=value (repeatable)");
  cli.add_option("--resume", resume, "'auto' (newest checkpoint of this run) or a checkpoint path");
  cli.add_option("--run-dir", run_dir_override, "Run directory (default: <output_dir>/<name>)");
  cli.add_option("--seed", seed, "Override experiment.seed");
  cli.add_option("--device", device, "cpu (cuda: not implemented yet)");
  cli.add_option("--threads", threads, "OpenMP/BLAS threads (default: all cores)");
  cli.add_option("--label-smoothing", label_smoothing, "Cross-entropy label smoothing");
  CLI11_PARSE(cli, argc, argv);

  return app::run_guarded("retort-train", [&] {
    if (seed >= 0) overrides.push_back("experiment.seed=" + std::to_string(seed));
    if (!device.empty()) overrides.push_back("experiment.device=\"" + device + "\"");
    const ExperimentConfig cfg = app::as_usage([&] { return ExperimentConfig::load(config_path, overrides); });
    app::as_usage([&] {
      const Device d = Device::parse(cfg.device);
      RETORT_CHECK(d.is_cpu(), "experiment.device: ", cfg.device,
                   " is not available yet (the CUDA kernels are the [cuda] issue; see docs/STATUS.md)");
      RETORT_CHECK(label_smoothing >= 0 && label_smoothing < 1, "--label-smoothing must be in [0, 1)");
      return 0;
    });
    if (threads > 0) omp_set_num_threads(threads);

    const DataSplits data = load_datasets(cfg.data);
    const Shape s = data.train->sample_shape();
    Generator gen(cfg.seed);
    ModelOptions mo{data.train->num_classes(), s[0], s[1]};
    auto model = app::as_usage([&] { return create_model(cfg.arch, mo, gen); });
    ClassifierTask task(model, label_smoothing);
    RunDir run(run_dir_override.empty() ? cfg.output_dir + "/" + cfg.name : run_dir_override);

    std::printf("retort-train: %s\n  model   %s, %.3f M parameters\n  data    %s (train %zu, test %zu)\n"
                "  solver  %s lr %g, %d epochs, batch %lld\n  cpu     %s\n  run     %s\n",
                cfg.name.c_str(), cfg.arch.c_str(), static_cast<double>(model->num_parameters()) / 1e6,
                data.train->describe().c_str(), data.train->size(), data.test->size(), cfg.solver.optimizer.c_str(),
                cfg.solver.lr, cfg.solver.epochs, static_cast<long long>(cfg.data.batch_size), cpu_backend_info().c_str(),
                run.path().c_str());
    Trainer trainer(cfg, task, data, run);
    const TrainSummary sum = trainer.fit(resume);
    std::printf("retort-train: done: best top-1 %.2f%% (epoch %d), last top-1 %.2f%%, %.0f s, %.0f img/s\n"
                "  model saved to %s\n",
                sum.best_top1, sum.best_epoch, sum.last_top1, sum.wall_seconds, sum.images_per_second,
                run.file("model.safetensors").c_str());
    return app::kOk;
  });
}
