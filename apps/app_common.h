// Shared by the apps: exit codes and the mapping from exceptions to them (DESIGN §4).
//   0 ok, 1 usage or config error, 2 runtime error (data, checkpoint, device), 3 non-finite loss.
#pragma once
#include <CLI/CLI.hpp>
#include <omp.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <string>

#include "distill/experiment.h"
#include "distill/trainer.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "models/registry.h"

namespace retort::app {

enum ExitCode { kOk = 0, kUsage = 1, kRuntime = 2, kNonFinite = 3, kInterrupted = 130 };  // 130: as a shell reports SIGINT

// A mistake in what the user asked for (config, flags): exit code 1.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Runs body, printing any error as "<app>: <message>" and returning the matching exit code.
inline int run_guarded(const char* app, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kUsage;
  } catch (const NonFiniteLoss& e) {
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kNonFinite;
  } catch (const Interrupted& e) {  // the Trainer stopped cleanly on SIGINT/SIGTERM, checkpoint written
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kInterrupted;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", app, e.what());
    return kRuntime;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of host memory: the system refused an allocation (outside the tensor allocator, "
                 "which names the tensor); a smaller batch or smaller sizes (e.g. a strategy's nce_k) need less\n", app);
    return kRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", app, e.what());
    return kRuntime;
  }
}

// Runs f, turning a retort::Error into a UsageError (for config parsing and flag validation).
template <class F>
auto as_usage(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

// Refuses a device this build or machine cannot use, naming where it came from (a flag or a key).
inline void check_device(Device d, const std::string& source) {
  if (d.is_cpu()) return;
  RETORT_CHECK(cuda_built(), source, ": ", d.str(),
               " needs the CUDA backend, which this build does not have (reconfigure with -DRETORT_CUDA=ON where "
               "nvcc is installed)");
  const int n = cuda_device_count();
  RETORT_CHECK(d.index < n, source, ": ", d.str(), " is not available: ", n, " CUDA device(s) visible",
               n == 0 ? " (no GPU or no driver on this machine)" : "");
}

// The flags retort-train and retort-distill share.
struct RunFlags {
  std::string config_path, resume, run_dir, device;
  std::vector<std::string> overrides;
  int64_t seed = -1;
  int threads = 0;
  bool allow_config_change = false;
};

inline void add_run_flags(CLI::App& cli, RunFlags& f) {
  cli.add_option("config", f.config_path, "Experiment config (JSON)")->required();
  cli.add_option("--set", f.overrides, "Override a config value: key.path=value (repeatable)");
  cli.add_option("--resume", f.resume, "'auto' (newest checkpoint of this run) or a checkpoint path");
  cli.add_option("--run-dir", f.run_dir, "Run directory (default: <output_dir>/<name>)");
  cli.add_option("--seed", f.seed, "Override experiment.seed");
  cli.add_option("--device", f.device, "cpu | cuda | cuda:N (overrides experiment.device)");
  cli.add_option("--threads", f.threads, "OpenMP/BLAS threads (default: all cores)");
  cli.add_flag("--allow-config-change", f.allow_config_change,
               "On resume, continue with a config that changes what is trained (solver, data, model, terms); "
               "refused otherwise, listing the changes");
}

// Loads the config with the flags' overrides (errors are usage errors), checks the device and sets
// the thread count.
inline ExperimentConfig load_run_config(RunFlags& f) {
  if (f.seed >= 0) f.overrides.push_back("experiment.seed=" + std::to_string(f.seed));
  if (!f.device.empty()) f.overrides.push_back("experiment.device=\"" + f.device + "\"");
  ExperimentConfig cfg = as_usage([&] { return ExperimentConfig::load(f.config_path, f.overrides); });
  as_usage([&] {
    check_device(Device::parse(cfg.device), "experiment.device");
    KernelSwitches probe(cfg, Device::parse(cfg.device));  // a math mode the device lacks: refused now
    return 0;
  });
  if (f.threads > 0) omp_set_num_threads(f.threads);
  return cfg;
}

inline std::string run_dir_of(const RunFlags& f, const ExperimentConfig& cfg) {
  return f.run_dir.empty() ? cfg.output_dir + "/" + cfg.name : f.run_dir;
}

// The student (drawn from gen) and, when the config names one, the teacher (its own generator, then
// its checkpoint) of a distillation config, for inputs described by mo; model.init, when given, replaces
// the student's drawn weights. Unknown architectures are
// usage errors; a missing or mismatched teacher checkpoint is a runtime error naming the file.
struct DistillModels {
  std::shared_ptr<Module> student, teacher;
};
inline DistillModels make_distill_models(const ExperimentConfig& cfg, const ModelOptions& mo, Generator& gen) {
  DistillModels m;
  m.student = as_usage([&] { return create_model(cfg.arch, mo, gen); });
  if (!cfg.init.empty()) load_model_file(*m.student, cfg.init);  // model.init (a resumed checkpoint overrides it)
  if (!cfg.teacher.arch.empty()) {
    Generator tgen(0);
    m.teacher = as_usage([&] { return create_model(cfg.teacher.arch, mo, tgen); });
    load_teacher_file(*m.teacher, cfg.teacher.checkpoint, cfg.data, {mo.in_channels, mo.input_size, mo.input_size});
  }
  return m;
}

}  // namespace retort::app
