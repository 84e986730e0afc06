// Shared by the apps: exit codes and the mapping from exceptions to them (DESIGN §4).
//   0 ok, 1 usage or config error, 2 runtime error (data, checkpoint, device), 3 non-finite loss,
//   4 a gradcheck failed.
#pragma once
#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "distill/experiment.h"
#include "distill/trainer.h"
#include "engine/backend.h"
#include "engine/env.h"
#include "engine/error.h"
#include "layers/layers.h"
#include "models/registry.h"

namespace retort::app {

// 130: as a shell reports a process stopped by SIGINT (the Trainer stops cleanly on SIGINT and SIGTERM).
enum ExitCode { kOk = 0, kUsage = 1, kRuntime = 2, kNonFinite = 3, kGradcheckFailed = 4, kInterrupted = 130 };

// A mistake in what the user asked for (config, flags, environment): exit code 1. The library throws
// the same type (retort::ConfigError) for such mistakes it finds itself, e.g. a resume whose config changed.
using UsageError = ConfigError;

// Parses the command line. Returns nothing to go on, or the exit code to end with: 0 after --help
// (CLI11 prints it), 1 for any parse error (CLI11's own codes, 105 and up, are not the apps'), printed
// as one line "<app>: <message>". An unknown argument is reported as such even when a required one
// is missing too (CLI11 checks requirements first: `retort-train --bogus` would say "config is required").
// CLI11 takes the next word as an option's value even when that word is another flag: `--resume
// --threads 2` made "--threads" the checkpoint and then refused "2" as unexpected. An option whose value
// is one of the app's own flags is reported as missing its value instead. An empty value (`--resume
// "$UNSET"`) is refused too: every app read it as the option left out (a fresh run, the CPU).
inline std::string flag_taken_as_value(const CLI::App& cli) {
  for (const CLI::Option* opt : cli.get_options()) {
    if (opt->get_positional() && opt->get_name().rfind("-", 0) != 0) continue;  // FILE / CONFIG: checked later
    for (const std::string& v : opt->results()) {
      if (v.size() > 1 && v[0] == '-' && cli.get_option_no_throw(v.substr(0, v.find('='))) != nullptr)
        return opt->get_name() + ": expected a value, got the flag " + v + " (give " + opt->get_name() +
               " its value before the next flag)";
      if (v.empty() && opt->get_expected_max() > 0 && !opt->get_type_name().empty())
        return opt->get_name() + ": empty value (leave the option out for its default)";
    }
  }
  return "";
}

// A comma-separated list with an empty entry (`--batch 8,,16`, `--models resnet8,`): CLI11 drops the empty
// entries silently, so the raw words are read before it parses them. "" when there is none.
inline std::string empty_list_entry(const CLI::App& cli, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    const size_t eq = arg.find('=');
    const CLI::Option* opt = cli.get_option_no_throw(arg.substr(0, eq));
    if (opt == nullptr || opt->get_delimiter() == '\0') continue;
    if (eq == std::string::npos && i + 1 >= argc) continue;  // (no value: CLI11 says so)
    const std::string v = eq == std::string::npos ? argv[i + 1] : arg.substr(eq + 1);
    const char d = opt->get_delimiter();
    if (v.empty()) continue;  // (the empty value: flag_taken_as_value says so)
    if (v.front() == d || v.back() == d || v.find(std::string(2, d)) != std::string::npos)
      return detail::cat(opt->get_name(), " '", v, "': an empty entry in the list (expected entries separated by '", d,
                         "')");
  }
  return "";
}

inline std::optional<int> parse_command_line(CLI::App& cli, const char* app, int argc, char** argv) {
  try {
    if (const std::string empty = empty_list_entry(cli, argc, argv); !empty.empty()) {
      std::fprintf(stderr, "%s: %s (see --help)\n", app, empty.c_str());
      return kUsage;
    }
    cli.parse(argc, argv);
    if (const std::string taken = flag_taken_as_value(cli); !taken.empty()) {
      std::fprintf(stderr, "%s: %s (see --help)\n", app, taken.c_str());
      return kUsage;
    }
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return cli.exit(e);  // --help
    if (const std::string taken = flag_taken_as_value(cli); !taken.empty()) {
      std::fprintf(stderr, "%s: %s (see --help)\n", app, taken.c_str());
      return kUsage;
    }
    const std::vector<std::string> extras = cli.remaining();
    std::string what = extras.empty() || dynamic_cast<const CLI::ExtrasError*>(&e) ? e.what()
                                                                                 : CLI::ExtrasError(extras).what();
    // CLI11 words a value of the wrong type "Could not convert: --threads = abc": name the flag first,
    // then the value and the type it takes.
    const std::string prefix = "Could not convert: ";
    if (dynamic_cast<const CLI::ConversionError*>(&e) && what.rfind(prefix, 0) == 0) {
      const size_t eq = what.find(" = ", prefix.size());
      if (eq != std::string::npos) {
        const std::string name = what.substr(prefix.size(), eq - prefix.size()), value = what.substr(eq + 3);
        std::string type;
        try {
          type = cli.get_option(name)->get_type_name();
        } catch (const CLI::Error&) {
        }
        const std::string expected = type == "INT" ? "an integer" : type == "UINT" ? "a non-negative integer"
                                     : type == "FLOAT" ? "a number" : type.empty() ? "" : type;
        what = name + ": '" + value + "' is not " + (expected.empty() ? "a valid value" : expected);
      }
    }
    // A flag given twice: CLI11 says "--threads: At Most 1 required but received 2".
    const std::string twice = ": At Most 1 required but received ";
    if (const size_t at = what.find(twice); dynamic_cast<const CLI::ArgumentMismatch*>(&e) && at != std::string::npos)
      what = what.substr(0, at) + " is given " + what.substr(at + twice.size()) + " times; give it once";
    std::fprintf(stderr, "%s: %s (see --help)\n", app, what.c_str());
    return kUsage;
  }
}

// Runs body, printing any error as "<app>: <message>" and returning the matching exit code.
inline int run_guarded(const char* app, const std::function<int()>& body) {
  try {
    check_environment();   // a bad RETORT_* variable is refused before any work
    eval_fusion_enabled();  // (RETORT_FUSE_EVAL, read by the layers library)
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

// A device flag's value ("cpu", "cuda", "cuda:1"), checked as check_device does: a value that names no
// device, or one this build or machine cannot use, is a usage error naming the flag.
inline Device device_flag(const std::string& text, const std::string& flag = "--device") {
  try {
    const Device d = Device::parse(text);
    check_device(d, flag);
    return d;
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    const std::string what = e.what();
    throw UsageError(what.rfind(flag + ": ", 0) == 0 ? what : flag + ": " + what);
  }
}

// The most OpenMP threads a --threads flag takes: four per processor this process may use, and at
// least 64. More only oversubscribe the machine, and libgomp fails on tens of thousands (a crash at
// 100000, "Thread creation failed" at 40000) or all but hangs creating them (5000).
inline int max_threads() { return std::max(64, 4 * omp_get_num_procs()); }

// Refuses a thread count outside [1, max_threads()], naming the flag.
inline void check_threads(int64_t n, const std::string& flag = "--threads") {
  if (n < 1 || n > max_threads())
    throw UsageError(detail::cat(flag, " ", n, ": expected a thread count in [1, ", max_threads(),
                                 "] (the larger of 64 and 4 per processor; ", omp_get_num_procs(), " processors here)"));
}

// --threads N of every app: without it OpenMP's default stands (OMP_NUM_THREADS, else all cores); a
// count given is checked (0 included) and set for OpenMP and the BLAS.
inline void add_threads_flag(CLI::App& cli, std::optional<int>& threads) {
  cli.add_option_function<int>(
      "--threads", [&threads](const int& n) { threads = n; },
      detail::cat("OpenMP/BLAS threads, 1 to ", max_threads(), " (default: OMP_NUM_THREADS, else all cores)"));
}
inline void set_threads(const std::optional<int>& threads) {
  if (!threads) return;
  check_threads(*threads);
  omp_set_num_threads(*threads);
}

// A seed flag's value: an integer in [0, 2^64 - 1], as experiment.seed takes. Read as text: CLI11's
// integer options wrap -1 (to 2^64 - 1 for an unsigned) and clamp what does not fit.
inline uint64_t parse_seed(const std::string& text, const std::string& flag = "--seed") {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end)
    throw UsageError(detail::cat(flag, ": expected an integer in [0, ", std::numeric_limits<uint64_t>::max(), "], got '",
                                 text, "'"));
  return v;
}

// Reads an experiment config with overrides; every error is a usage error. A directory is refused as
// such (the JSON parser would call it empty input).
inline ExperimentConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {},
                                    const std::vector<std::string>& sources = {}) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw UsageError(path + " is a directory, expected a JSON config file");
  return as_usage([&] { return ExperimentConfig::load(path, overrides, sources); });
}

// The flags retort-train and retort-distill share.
struct RunFlags {
  std::string config_path, resume, run_dir, device, seed;
  std::vector<std::string> overrides;  // --set, in order
  std::optional<int> threads;
  bool seed_given = false, allow_config_change = false;
  // An app's flags that set a config key (--seed, --device, retort-train's --label-smoothing): applied
  // after the --set ones, named by errors as the flag, and refused together with a --set of that key.
  struct FlagOverride {
    std::string key, json_value, flag;  // "experiment.device", "\"cuda\"", "--device cuda"
  };
  std::vector<FlagOverride> flag_overrides;
};

inline void add_run_flags(CLI::App& cli, RunFlags& f) {
  cli.add_option("config", f.config_path, "Experiment config (JSON)")->required();
  cli.add_option("--set", f.overrides, "Override a config value: key.path=value (repeatable)");
  cli.add_option("--resume", f.resume, "'auto' (newest checkpoint of this run) or a checkpoint path");
  cli.add_option("--run-dir", f.run_dir, "Run directory (default: <output_dir>/<name>)");
  cli.add_option_function<std::string>(
      "--seed", [&f](const std::string& s) { f.seed = s, f.seed_given = true; },
      "Override experiment.seed (an integer >= 0)");
  cli.add_option("--device", f.device, "cpu | cuda | cuda:N (overrides experiment.device)");
  add_threads_flag(cli, f.threads);
  cli.add_flag("--allow-config-change", f.allow_config_change,
               "On resume, continue with a config that changes what is trained (solver, data, model, terms); "
               "refused otherwise, listing the changes");
}

// Loads the config with the flags' overrides (errors are usage errors), checks the device and sets
// the thread count.
inline ExperimentConfig load_run_config(RunFlags& f) {
  if (f.threads) check_threads(*f.threads);
  if (f.allow_config_change && f.resume.empty())
    throw UsageError("--allow-config-change applies to a resumed run: give --resume auto or --resume CHECKPOINT");
  if (f.seed_given) f.flag_overrides.push_back({"experiment.seed", std::to_string(parse_seed(f.seed)), "--seed " + f.seed});
  if (!f.device.empty()) f.flag_overrides.push_back({"experiment.device", Json(f.device).dump(), "--device " + f.device});
  std::vector<std::string> overrides = f.overrides, sources(f.overrides.size());
  for (const auto& fo : f.flag_overrides) {
    for (const std::string& s : f.overrides)
      if (s.substr(0, s.find('=')) == fo.key)
        throw UsageError(detail::cat(fo.flag, " and --set '", s, "' both set ", fo.key, ": give one"));
    overrides.push_back(fo.key + "=" + fo.json_value);
    sources.push_back(fo.flag);
  }
  ExperimentConfig cfg = load_config(f.config_path, overrides, sources);
  as_usage([&] {
    check_device(Device::parse(cfg.device), "experiment.device");
    KernelSwitches probe(cfg, Device::parse(cfg.device));  // a math mode the device lacks: refused now
    return 0;
  });
  set_threads(f.threads);
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
// model.init: the weights a run's model starts from (a resumed checkpoint overrides them); errors name the key.
inline void load_init_weights(Module& model, const ExperimentConfig& cfg) {
  if (cfg.init.empty()) return;
  try {
    load_model_file(model, cfg.init);
  } catch (const Error& e) {
    throw Error(std::string("model.init: ") + e.what());
  }
}

// The model file a FILE argument means (resolve_model_file: a run directory -> its model, or its newest
// checkpoint while it has none, which a note on stderr says).
inline std::string model_file_arg(const std::string& path) {
  std::string note;
  const std::string file = resolve_model_file(path, &note);
  if (!note.empty()) std::fprintf(stderr, "note: %s\n", note.c_str());
  return file;
}

// A config's model (`key`: model.arch or teacher.arch) for the data's images; errors name the key.
inline std::shared_ptr<Module> config_model(const std::string& arch, const char* key, const ModelOptions& mo,
                                            Generator& gen) {
  return as_usage([&] {
    try {
      return create_model(arch, mo, gen);
    } catch (const Error& e) {
      throw Error(detail::cat(key, " '", arch, "': ", e.what()));
    }
  });
}

inline DistillModels make_distill_models(const ExperimentConfig& cfg, const ModelOptions& mo, Generator& gen) {
  DistillModels m;
  m.student = config_model(cfg.arch, "model.arch", mo, gen);
  load_init_weights(*m.student, cfg);
  if (!cfg.teacher.arch.empty()) {
    Generator tgen(0);
    m.teacher = config_model(cfg.teacher.arch, "teacher.arch", mo, tgen);
    load_teacher_file(*m.teacher, cfg.teacher.checkpoint, cfg.data, mo.num_classes,
                      {mo.in_channels, mo.input_size, mo.input_size},
                      cfg.teacher.arch);
  }
  return m;
}

// The start-up lines retort-train and retort-distill print below their model lines: data, solver, cpu
// (the kernel switches the Trainer set), run directory, and the GPU when the run is on one.
inline void print_run_lines(const ExperimentConfig& cfg, const DataSplits& data, const Trainer& trainer,
                            const RunDir& run) {
  std::printf("  data    %s (train %zu, test %zu)\n  solver  %s lr %g, %d epoch%s, batch %lld\n  cpu     %s\n"
              "  kernels %s\n  run     %s\n",
              data.train->describe().c_str(), data.train->size(), data.test->size(), cfg.solver.optimizer.c_str(),
              cfg.solver.lr, cfg.solver.epochs, cfg.solver.epochs == 1 ? "" : "s",
              static_cast<long long>(cfg.data.batch_size), cpu_backend_info().c_str(),
              trainer.switches().describe().c_str(), run.path().c_str());
  if (const Device dev = Device::parse(cfg.device); !dev.is_cpu())
    std::printf("  device  %s\n", cuda_device_description(dev).c_str());
}

}  // namespace retort::app
