// retort-bench: throughput and peak memory of the zoo on random CIFAR-shaped batches — a training
// step (forward, cross-entropy, backward, SGD), a KD step (frozen teacher + student, CE + KD) and
// inference — printed as a table or as one JSON object per line. See bench/README.md.
//
//   retort-bench [--models a,b] [--pairs t:s,...] [--batch 64,128] [--threads 1,2] [--steps 10]
//                [--warmup 3] [--mode train,kd,infer] [--input 3x32x32] [--classes 100] [--json]
//                [--math ieee|bf16|winograd|tf32] [--profile]
//
// --profile times every backend kernel of `--steps` further steps (after the timed ones, so the
// throughput is measured without the timers) and reports the time per kernel type and each
// convolution's achieved GFLOP/s beside this machine's SGEMM peak, measured in the same process.
//
// Peak memory is VmHWM from /proc/self/status, a high-water mark of the whole process, so one row's
// peak would hide the next row's. A single row therefore runs in this process; with more rows this
// binary re-runs itself once per row (posix_spawn of /proc/self/exe, exec'd straight away so no
// OpenMP pool crosses a fork) and passes the children's JSON lines on.
//
// The steps go through the code the apps run — ClassifierTask / Distiller losses, the Trainer's
// sum-item-zero_grad-backward-step sequence, make_optimizer — so a speed-up measured here is one
// retort-train and retort-distill get. Data loading and augmentation are not part of a step: every
// step reuses one pre-drawn batch.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "apps/app_common.h"
#include "distill/distiller.h"
#include "distill/json_reader.h"
#include "distill/trainer.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/functions.h"
#include "engine/optim/optim.h"
#include "engine/profile.h"
#include "models/registry.h"
#ifdef RETORT_WITH_CUDA
#include "engine/cuda/context.h"
#include "engine/cuda/cuda_device.h"
#endif

extern char** environ;

using namespace retort;

namespace {

// The issue's matrix ([perf]): the defaults when neither --models nor --pairs is given.
const std::vector<std::string> kDefaultModels{"resnet20", "resnet56",    "resnet8x4", "resnet32x4",
                                              "wrn_40_2", "mobile_half", "ShuffleV2"};
const std::vector<std::string> kDefaultPairs{"resnet56:resnet20", "resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2"};

struct Options {
  std::vector<std::string> models, pairs, modes{"train", "kd", "infer"};
  std::vector<int> batches{64, 128}, threads{1, 2};
  int steps = 10, warmup = 3;
  std::string input = "3x32x32";
  std::string device = "cpu";
  std::string math = "ieee";  // as experiment.math: ieee | bf16, winograd (CPU) | tf32 (CUDA)
  int64_t classes = 100;
  std::string seed_text = "0";  // --seed, parsed into seed
  uint64_t seed = 0;
  bool json = false, profile = false;
  bool modes_given = false;  // --mode on the command line (not its default)
  int64_t c = 3, hw = 32;  // parsed from input
};

struct Row {
  std::string mode, model;  // model: "name", or "teacher:student" for kd
  int batch = 0, threads = 0;
};

std::vector<Row> expand(const Options& o) {
  std::vector<Row> rows;
  auto add = [&](const std::string& mode, const std::string& model) {
    for (int b : o.batches)
      for (int t : o.threads) rows.push_back({mode, model, b, t});
  };
  // Model outermost, so a long run finishes whole models first.
  for (const auto& m : o.models)
    for (const auto& mode : o.modes)
      if (mode != "kd") add(mode, m);
  for (const auto& p : o.pairs)
    for (const auto& mode : o.modes)
      if (mode == "kd") add(mode, p);
  return rows;
}

// ---- facts about this process and machine ---------------------------------------------------------

// A "VmHWM:   1234 kB" style field of /proc/self/status, in MiB (0 when absent).
double status_mb(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field + ":", 0) == 0) return std::strtod(line.c_str() + field.size() + 1, nullptr) / 1024.0;
  return 0.0;
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(line.find_first_not_of(" \t", p + 1));
    }
  return "unknown";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

// ---- one row, in this process ------------------------------------------------------------------

// The Trainer's step (distill/trainer.cpp, Trainer::fit) minus data loading and logging: the loss
// terms, their sum, the finiteness check through item(), zero_grad, backward, step.
void train_step(TrainingTask& task, Optimizer& opt, const Batch& batch, int64_t step) {
  const TrainProgress prog{0, 1, step, 0, 1};
  Tensor logits;
  LossTerms terms = task.losses(batch, prog, logits);
  const Tensor total = total_loss(terms);
  const double loss = total.item();
  if (!std::isfinite(loss)) throw NonFiniteLoss(detail::cat("retort-bench: non-finite loss at step ", step));
  opt.zero_grad();
  total.backward();
  opt.step();
}

// SGD as the CIFAR recipes configure it (configs/cifar100/*.json).
std::unique_ptr<Optimizer> sgd(std::vector<Tensor> params) {
  const Json cfg{{"type", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}, {"weight_decay", 5e-4}, {"nesterov", false}};
  return make_optimizer(cfg, std::move(params));
}

// The machine's SGEMM rate at the current thread count: the best of 5 runs of a 2048^3 product through
// the backend's GEMM (OpenBLAS), the yardstick for the convolutions' GFLOP/s.
double sgemm_peak_gflops(Device dev) {
  const int64_t n = dev.is_cpu() ? 2048 : 8192;
  Generator gen(1);
  Tensor a = Tensor::randn({n, n}, gen).to(dev), b = Tensor::randn({n, n}, gen).to(dev),
         c = Tensor::zeros({n, n}, DType::F32, dev);
  GemmArgs g;
  g.m = g.n = g.k = n;
  g.a = a.raw_data(); g.lda = n;
  g.b = b.raw_data(); g.ldb = n;
  g.c = c.raw_data(); g.ldc = n;
  double best = 0;
  Backend& be = backend_for(a);
  for (int i = 0; i < 5; ++i) {
    be.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    be.gemm(g);
    be.synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

// Runs `steps` more steps with every kernel timed; returns the per-kernel and per-convolution table.
Json profile_steps(const std::function<void(int64_t)>& step, int64_t first, int steps, Device dev) {
  profiling::reset();
  profiling::enable(true);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step(first + i);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  profiling::enable(false);
  const profiling::Table t = profiling::snapshot();
  const double peak = sgemm_peak_gflops(dev);
  double kernels = 0;
  for (const auto& [k, st] : t.by_kernel) kernels += st.seconds;
  Json by_kernel = Json::array(), by_conv = Json::array();
  std::vector<std::pair<std::string, profiling::Stat>> ks(t.by_kernel.begin(), t.by_kernel.end());
  std::sort(ks.begin(), ks.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double other_layout_s = 0;  // blocked activations rewritten to NCHW for kernels that read row-major
  for (const auto& [k, st] : ks) {
    if (k.rfind("conv2d", 0) != 0) other_layout_s += st.layout_seconds;
    Json j{{"kernel", k}, {"ms_per_step", round3(st.seconds * 1e3 / steps)}, {"calls_per_step", st.calls / steps},
           {"percent", round3(100.0 * st.seconds / wall)}};
    if (st.flops > 0) j["gflops"] = round3(st.flops / st.seconds / 1e9);
    by_kernel.push_back(j);
  }
  double conv_s = 0, conv_f = 0, conv_layout_s = 0;
  std::vector<std::pair<std::string, profiling::Stat>> cs(t.by_conv_shape.begin(), t.by_conv_shape.end());
  std::sort(cs.begin(), cs.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  for (const auto& [k, st] : cs) {
    conv_s += st.seconds;
    conv_f += st.flops;
    conv_layout_s += st.layout_seconds;
    const double gf = st.flops / st.seconds / 1e9;
    by_conv.push_back(Json{{"conv", k}, {"ms_per_step", round3(st.seconds * 1e3 / steps)},
                           {"calls_per_step", st.calls / steps}, {"gflops", round3(gf)},
                           {"percent_of_sgemm_peak", round3(100.0 * gf / peak)},
                           {"reorder_percent", round3(100.0 * st.layout_seconds / st.seconds)}});
  }
  return Json{{"steps", steps},
              {"ms_per_step", round3(wall * 1e3 / steps)},
              {"kernel_ms_per_step", round3(kernels * 1e3 / steps)},
              {"outside_kernels_percent", round3(100.0 * (wall - kernels) / wall)},
              {"sgemm_peak_gflops", round3(peak)},
              {"conv_gflops", conv_s > 0 ? round3(conv_f / conv_s / 1e9) : 0.0},
              {"conv_percent_of_sgemm_peak", conv_s > 0 ? round3(100.0 * conv_f / conv_s / 1e9 / peak) : 0.0},
              {"conv_reorder_ms_per_step", round3(conv_layout_s * 1e3 / steps)},
              {"conv_reorder_percent", conv_s > 0 ? round3(100.0 * conv_layout_s / conv_s) : 0.0},
              {"other_layout_ms_per_step", round3(other_layout_s * 1e3 / steps)},
              {"outside_layout_ms_per_step", round3(t.layout_seconds_outside_kernels * 1e3 / steps)},
              {"by_kernel", by_kernel},
              {"by_conv", by_conv},
              {"conv_kernels", dev.type == DeviceType::CPU ? Json(cpu::dnnl_conv_choices()) : Json::array()}};
}

void print_profile(const Json& p) {
  std::printf("\nprofile: %d steps, %.1f ms/step, %.1f ms in kernels (%.1f%% outside them)\n", p["steps"].get<int>(),
              p["ms_per_step"].get<double>(), p["kernel_ms_per_step"].get<double>(),
              p["outside_kernels_percent"].get<double>());
  std::printf("%-32s %10s %7s %7s %9s\n", "kernel", "ms/step", "calls", "%", "GFLOP/s");
  for (const auto& k : p["by_kernel"]) {
    if (k["percent"].get<double>() < 0.1) continue;
    std::printf("%-32s %10.2f %7lld %7.1f %9s\n", k["kernel"].get<std::string>().c_str(), k["ms_per_step"].get<double>(),
                static_cast<long long>(k["calls_per_step"].get<int64_t>()), k["percent"].get<double>(),
                k.contains("gflops") ? detail::cat(std::lround(k["gflops"].get<double>())).c_str() : "");
  }
  std::printf("\nconvolutions: %.0f GFLOP/s overall = %.0f%% of the measured SGEMM peak (%.0f GFLOP/s)\n",
              p["conv_gflops"].get<double>(), p["conv_percent_of_sgemm_peak"].get<double>(),
              p["sgemm_peak_gflops"].get<double>());
  std::printf("of which reorders between NCHW and oneDNN's blocked layouts: %.1f ms/step (%.0f%%)\n",
              p["conv_reorder_ms_per_step"].get<double>(), p["conv_reorder_percent"].get<double>());
  std::printf("layout conversions of blocked activations inside other kernels (rewrites to NCHW, copies into the "
              "layout): %.1f ms/step; outside any kernel (library code reading a blocked tensor's data): %.1f ms/step\n",
              p["other_layout_ms_per_step"].get<double>(), p.value("outside_layout_ms_per_step", 0.0));
  std::printf("%-58s %9s %6s %9s %7s %9s\n", "convolution", "ms/step", "calls", "GFLOP/s", "% peak", "reorder %");
  for (const auto& c : p["by_conv"])
    std::printf("%-58s %9.2f %6lld %9.0f %7.0f %9.0f\n", c["conv"].get<std::string>().c_str(),
                c["ms_per_step"].get<double>(), static_cast<long long>(c["calls_per_step"].get<int64_t>()),
                c["gflops"].get<double>(), c["percent_of_sgemm_peak"].get<double>(), c["reorder_percent"].get<double>());
  if (p.contains("conv_kernels") && !p["conv_kernels"].empty()) {
    std::printf("\noneDNN kernel per convolution (forwards: the faster of the timed candidates)\n");
    for (const auto& k : p["conv_kernels"]) std::printf("  %s\n", k.get<std::string>().c_str());
  }
}

Json run_row(const Row& r, const Options& o) {
  omp_set_num_threads(r.threads);
  const double base_mb = status_mb("VmHWM");
  const Device dev = Device::parse(o.device);
  // As the Trainer: training and KD steps run pinned kernels, inference times its candidates; the
  // convolution arithmetic of --math.
  const KernelSwitches switches(o.math, r.mode != "infer", dev, "--math");
  Generator gen(o.seed);
  const ModelOptions mo{o.classes, o.c, o.hw};
  Batch batch;
  batch.inputs = Tensor::randn({r.batch, o.c, o.hw, o.hw}, gen);
  std::vector<int64_t> labels(static_cast<size_t>(r.batch));
  for (auto& l : labels) l = static_cast<int64_t>(gen.randint(static_cast<uint64_t>(o.classes)));
  batch.targets = Tensor::from_int64(labels, {r.batch});
  batch.to(dev);

  std::shared_ptr<Module> model, teacher;
  std::unique_ptr<TrainingTask> task;
  std::unique_ptr<Optimizer> opt;
  std::function<void(int64_t)> step;
  Json extra = Json::object();
  if (r.mode == "train") {
    model = create_model(r.model, mo, gen);
    task = std::make_unique<ClassifierTask>(model);
    task->to(dev);
    opt = sgd(task->trainable_parameters());
    task->train(true);
    step = [&](int64_t i) { train_step(*task, *opt, batch, i); };
  } else if (r.mode == "kd") {
    const auto colon = r.model.find(':');
    const std::string tname = r.model.substr(0, colon), sname = r.model.substr(colon + 1);
    Generator tgen(o.seed + 1);
    teacher = create_model(tname, mo, tgen);
    model = create_model(sname, mo, gen);
    // The literature's KD recipe: 0.1 CE + 0.9 KD at T = 4, through the config parser retort-distill uses.
    const Json terms = Json::parse(R"([{"type": "ce", "weight": 0.1},
                                       {"type": "kd", "weight": 0.9, "params": {"temperature": 4}}])");
    task = std::make_unique<Distiller>(model, teacher, parse_terms(terms, "retort-bench"), DistillerOptions{},
                                       Shape{o.c, o.hw, o.hw}, gen);
    task->to(dev);
    opt = sgd(task->trainable_parameters());
    task->train(true);
    step = [&](int64_t i) { train_step(*task, *opt, batch, i); };
    extra = {{"teacher", tname}, {"student", sname}};
  } else {  // infer
    model = create_model(r.model, mo, gen);
    model->to(dev);
    model->eval();
    step = [&](int64_t) {
      NoGradGuard ng;
      Tensor logits = (*model)(batch.inputs);
    };
  }

  using Clock = std::chrono::steady_clock;
  Backend& be = backend_for(dev);
  for (int i = 0; i < o.warmup; ++i) step(i);
#ifdef RETORT_WITH_CUDA
  if (dev.is_cuda()) cuda::reset_peak_memory(dev.index);
#endif
  std::vector<double> ms;
  for (int i = 0; i < o.steps; ++i) {
    be.synchronize();  // a GPU step is timed from an idle device to its last kernel's end
    const auto t0 = Clock::now();
    step(o.warmup + i);
    be.synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);

  Json j{{"framework", "retort"}, {"model", r.model}, {"mode", r.mode}, {"batch", r.batch}, {"threads", r.threads}};
  j.update(extra);
  j.update(Json{{"ms_median", round3(median)},
                {"ms_min", round3(sorted.front())},
                {"ms_max", round3(sorted.back())},
                {"images_per_s", round3(r.batch * 1000.0 / median)},
                {"peak_rss_mb", round3(status_mb("VmHWM"))},
                {"base_rss_mb", round3(base_mb)},
                {"steps", o.steps},
                {"warmup", o.warmup},
                {"input", o.input},
                {"classes", o.classes},
                {"device", dev.str()},
                {"kernel_autotune", kernel_autotune()},
                {"math", o.math},
                {"cpu", cpu_model_name()},
                {"backend", cpu_backend_info()},
                {"host", host_name()},
                {"date", utc_now()}});
#ifdef RETORT_WITH_CUDA
  if (dev.is_cuda()) {
    j["gpu"] = cuda::describe_devices();
    j["cuda_libraries"] = cuda::library_versions();
    j["peak_device_mb"] = round3(static_cast<double>(cuda::memory_stats(dev.index).peak_allocated) / (1024.0 * 1024.0));
  }
#endif
  if (o.profile) j["profile"] = profile_steps(step, o.warmup + o.steps, o.steps, dev);
  return j;
}

// ---- many rows, one child process each ---------------------------------------------------------------

// Runs `args` as a child of /proc/self/exe and returns its stdout (stderr passes through).
std::string run_child(const std::vector<std::string>& args, int& status) {
  int fds[2];
  RETORT_CHECK(pipe(fds) == 0, "retort-bench: pipe() failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  std::string out;
  if (rc == 0) {
    char buf[4096];
    ssize_t got = 0;
    while ((got = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  RETORT_CHECK(rc == 0, "retort-bench: cannot re-run /proc/self/exe (posix_spawn error ", rc, ")");
  waitpid(pid, &status, 0);
  return out;
}

std::vector<std::string> child_args(const Row& r, const Options& o) {
  std::vector<std::string> a{"retort-bench", "--mode", r.mode};
  a.insert(a.end(), {r.mode == "kd" ? "--pairs" : "--models", r.model});
  a.insert(a.end(), {"--batch", std::to_string(r.batch), "--threads", std::to_string(r.threads), "--steps",
                     std::to_string(o.steps), "--warmup", std::to_string(o.warmup), "--input", o.input, "--classes",
                     std::to_string(o.classes), "--seed", std::to_string(o.seed), "--device", o.device, "--math", o.math, "--json"});
  if (o.profile) a.push_back("--profile");
  return a;
}

void print_table_header() {
  std::printf("%-24s %-6s %6s %7s %10s %10s %9s\n", "model", "mode", "batch", "threads", "ms/step", "img/s",
              "peak MiB");
}

void print_table_row(const Json& j) {
  std::printf("%-24s %-6s %6d %7d %10.1f %10.1f %9.0f\n", j["model"].get<std::string>().c_str(),
              j["mode"].get<std::string>().c_str(), j["batch"].get<int>(), j["threads"].get<int>(),
              j["ms_median"].get<double>(), j["images_per_s"].get<double>(),
              j.contains("peak_device_mb") ? j["peak_device_mb"].get<double>() : j["peak_rss_mb"].get<double>());
  std::fflush(stdout);
}

void validate(Options& o) {
  const auto known = model_names();
  auto check_model = [&](const std::string& m) {
    if (std::find(known.begin(), known.end(), m) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw app::UsageError("unknown model '" + m + "' (known: " + list + ")");
    }
  };
  if (o.models.empty() && o.pairs.empty()) {
    o.models = kDefaultModels;
    o.pairs = kDefaultPairs;
  }
  for (const auto& m : o.models) check_model(m);
  for (const auto& p : o.pairs) {
    const auto colon = p.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == p.size() || p.find(':', colon + 1) != std::string::npos)
      throw app::UsageError("--pairs: '" + p + "' is not teacher:student");
    check_model(p.substr(0, colon));
    check_model(p.substr(colon + 1));
  }
  for (const auto& m : o.modes)
    if (m != "train" && m != "kd" && m != "infer")
      throw app::UsageError("--mode: '" + m + "' (expected train, kd or infer)");
  // A list naming an entry twice would run its rows twice.
  auto once = [](const auto& list, const char* flag) {
    for (size_t i = 0; i < list.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (list[i] == list[j]) throw app::UsageError(detail::cat(flag, ": '", list[i], "' is given twice"));
  };
  once(o.models, "--models");
  once(o.pairs, "--pairs");
  once(o.modes, "--mode");
  once(o.batches, "--batch");
  once(o.threads, "--threads");
  // A mode asked for by name whose rows have no source would be dropped without a word.
  if (o.modes_given)
    for (const auto& m : o.modes) {
      if (m == "kd" && o.pairs.empty() && !o.models.empty())
        throw app::UsageError("--mode kd needs --pairs teacher:student (--models gives train and infer rows)");
      if (m != "kd" && o.models.empty() && !o.pairs.empty())
        throw app::UsageError("--mode " + m + " needs --models (--pairs gives kd rows)");
    }
  for (int b : o.batches)
    if (b < 1) throw app::UsageError("--batch: sizes must be positive");
  for (int t : o.threads) app::check_threads(t);
  o.seed = app::parse_seed(o.seed_text);
  if (o.steps < 1) throw app::UsageError("--steps must be at least 1");
  if (o.warmup < 0) throw app::UsageError("--warmup must be >= 0");
  if (o.classes < 2) throw app::UsageError("--classes must be at least 2");
  long long c = 0, h = 0, w = 0;
  char tail = 0;
  if (std::sscanf(o.input.c_str(), "%lldx%lldx%lld%c", &c, &h, &w, &tail) != 3 || c < 1 || h < 1 || h != w)
    throw app::UsageError("--input: '" + o.input + "' (expected CxHxW with H == W, e.g. 3x32x32)");
  o.c = c;
  o.hw = h;
  const Device d = app::device_flag(o.device);
  app::as_usage([&] { KernelSwitches probe(o.math, true, d, "--math"); return 0; });  // refused here, not per row
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"Retort: training-step, KD-step and inference throughput and peak memory of zoo models"};
  Options o;
  cli.add_option("--models", o.models, "Models for train/infer rows (comma-separated)")->delimiter(',');
  cli.add_option("--pairs", o.pairs, "teacher:student pairs for kd rows (comma-separated)")->delimiter(',');
  cli.add_option("--batch", o.batches, "Batch sizes (comma-separated)")->capture_default_str()->delimiter(',');
  cli.add_option("--threads", o.threads,
                 detail::cat("OpenMP/BLAS thread counts, each 1 to ", app::max_threads(), " (comma-separated)"))
      ->capture_default_str()
      ->delimiter(',');
  cli.add_option("--steps", o.steps, "Timed steps per row (the median is reported)")->capture_default_str();
  cli.add_option("--warmup", o.warmup, "Untimed steps before timing")->capture_default_str();
  cli.add_option("--mode", o.modes, "train, kd, infer (comma-separated)")->capture_default_str()->delimiter(',');
  cli.add_option("--input", o.input, "Input sample shape CxHxW")->capture_default_str();
  cli.add_option("--classes", o.classes, "Number of classes")->capture_default_str();
  cli.add_option("--device", o.device, "cpu | cuda | cuda:N (GPU rows are timed with a device sync per step)")
      ->capture_default_str();
  cli.add_option("--seed", o.seed_text, "Seed of the weights, inputs and labels (an integer >= 0)")->capture_default_str();
  cli.add_option("--math", o.math, "Convolution arithmetic, as experiment.math: ieee | bf16, winograd (CPU) | tf32 (CUDA)")
      ->capture_default_str();
  cli.add_flag("--json", o.json, "One JSON object per row on stdout instead of a table");
  cli.add_flag("--profile", o.profile,
               "Also time every kernel of --steps more steps: ms per kernel type, GFLOP/s per convolution");
  cli.footer(
      "With neither --models nor --pairs, the [perf] matrix runs (7 models, 3 KD pairs). kd rows come from\n"
      "--pairs, train/infer rows from --models. More than one row: each runs in a fresh child process,\n"
      "so that peak_rss_mb (VmHWM) is that row's alone.");
  if (const auto rc = app::parse_command_line(cli, "retort-bench", argc, argv)) return *rc;

  return app::run_guarded("retort-bench", [&] {
    o.modes_given = cli.count("--mode") > 0;
    validate(o);
    const std::vector<Row> rows = expand(o);
    if (rows.empty()) throw app::UsageError("no rows: kd needs --pairs, train/infer need --models");

    if (rows.size() == 1) {
      const Json j = run_row(rows[0], o);
      if (o.json) {
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("%s\n", j["backend"].get<std::string>().c_str());
        print_table_header();
        print_table_row(j);
        if (o.profile) print_profile(j["profile"]);
      }
      return static_cast<int>(app::kOk);
    }

    if (!o.json) {
      std::printf("retort-bench: %zu rows, each in its own process; cpu %s\n", rows.size(), cpu_model_name().c_str());
      print_table_header();
    }
    int failed = 0;
    for (const auto& r : rows) {
      int status = 0;
      const std::string out = run_child(child_args(r, o), status);
      Json j;
      bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (ok) {
        try {
          j = Json::parse(out);
        } catch (const std::exception&) {
          ok = false;
        }
      }
      if (!ok) {
        ++failed;
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::fprintf(stderr, "retort-bench: row %s %s batch %d threads %d failed (exit %d)\n", r.model.c_str(),
                     r.mode.c_str(), r.batch, r.threads, code);
        continue;
      }
      if (o.json) {
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
      } else {
        print_table_row(j);
        if (o.profile) {
          print_profile(j["profile"]);
          std::printf("\n");
          print_table_header();
        }
      }
    }
    return static_cast<int>(failed ? app::kRuntime : app::kOk);
  });
}
