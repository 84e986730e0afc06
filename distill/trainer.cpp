// Trainer, ClassifierTask, evaluation and dataset setup (see trainer.h).
#include "distill/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <exception>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "data/file_io.h"
#include "distill/pictures.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/functions.h"
#include "engine/serialize.h"
#include "layers/layers.h"

namespace retort {

namespace fs = std::filesystem;

// ---- tasks and evaluation --------------------------------------------------------------------------

Tensor total_loss(const LossTerms& terms) {
  RETORT_CHECK(!terms.empty(), "total_loss: no loss terms");
  Tensor total = terms[0].second;
  for (size_t i = 1; i < terms.size(); ++i) total = add(total, terms[i].second);
  return total;
}

LossTerms ClassifierTask::losses(const Batch& batch, const TrainProgress&, Tensor& logits) {
  logits = (*model_)(batch.inputs);
  return {{"ce", cross_entropy(logits, batch.targets, label_smoothing_)}};
}

std::pair<int64_t, int64_t> count_topk_correct(const Tensor& logits, const Tensor& targets_any) {
  const Tensor l = logits.detach().to(DType::F32).to(Device::cpu());
  const Tensor targets = targets_any.to(Device::cpu());
  const int64_t n = l.size(0), c = l.size(1);
  const float* p = l.data<float>();
  const int64_t* t = targets.data<int64_t>();
  int64_t top1 = 0, top5 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = p + i * c;
    const float target_logit = row[t[i]];
    if (std::isnan(target_logit)) continue;
    int64_t rank = 0;  // classes ranked above the target: larger, NaN, or equal with a lower index
    for (int64_t j = 0; j < c; ++j) rank += row[j] > target_logit || std::isnan(row[j]) || (row[j] == target_logit && j < t[i]);
    top1 += rank < 1;
    top5 += rank < 5;
  }
  return {top1, top5};
}

namespace {
// Adds row i's agreement (0/1) and KL(softmax(ref_i) || softmax(z_i)) over k classes, in float64.
void compare_row(const double* z, const double* ref, int64_t k, int64_t& agree, double& kl) {
  auto log_softmax = [k](const double* v, std::vector<double>& out) {
    const double m = *std::max_element(v, v + k);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(v[j] - m);
    const double lse = m + std::log(sum);
    out.resize(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) out[static_cast<size_t>(j)] = v[j] - lse;
  };
  std::vector<double> ls, lr;
  log_softmax(z, ls);
  log_softmax(ref, lr);
  agree += std::max_element(z, z + k) - z == std::max_element(ref, ref + k) - ref;
  for (int64_t j = 0; j < k; ++j) {
    const double p = std::exp(lr[static_cast<size_t>(j)]);
    if (p > 0) kl += p * (lr[static_cast<size_t>(j)] - ls[static_cast<size_t>(j)]);
  }
}
}  // namespace

EvalResult evaluate(Module& model, DataLoader& loader, const Tensor* reference, Tensor* logits_out) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  EvalResult r;
  double loss_sum = 0, kl_sum = 0;
  int64_t top1 = 0, top5 = 0, agree = 0, k = 0;
  std::vector<double> all, ref;
  if (reference) {
    RETORT_CHECK(reference->dim() == 2, "evaluate: reference logits must be [samples, classes], got ",
                 shape_str(reference->shape()));
    ref = reference->to(Device::cpu()).to_vector();
  }
  loader.start_epoch(0);
  const Device device = model.device();
  Batch b;
  while (loader.next(b)) {
    b.to(device);
    Tensor logits = model(b.inputs);
    loss_sum += cross_entropy(logits, b.targets).item() * static_cast<double>(b.size());
    auto [c1, c5] = count_topk_correct(logits, b.targets);
    top1 += c1;
    top5 += c5;
    if (reference || logits_out) {
      const std::vector<double> z = logits.to(Device::cpu()).to_vector();
      k = logits.size(1);
      if (reference) {
        RETORT_CHECK(reference->size(1) == k && reference->size(0) >= r.samples + b.size(), "evaluate: reference logits ",
                     shape_str(reference->shape()), " do not cover the evaluated samples (", r.samples + b.size(),
                     " so far, ", k, " classes)");
        for (int64_t i = 0; i < b.size(); ++i)
          compare_row(z.data() + i * k, ref.data() + (r.samples + i) * k, k, agree, kl_sum);
      }
      if (logits_out) all.insert(all.end(), z.begin(), z.end());
    }
    r.samples += b.size();
  }
  model.train(was_training);
  if (reference)
    RETORT_CHECK(reference->size(0) == r.samples, "evaluate: reference logits for ", reference->size(0),
                 " samples, but the loader gave ", r.samples);
  if (r.samples > 0) {
    r.top1 = 100.0 * static_cast<double>(top1) / static_cast<double>(r.samples);
    r.top5 = 100.0 * static_cast<double>(top5) / static_cast<double>(r.samples);
    r.loss = loss_sum / static_cast<double>(r.samples);
    if (reference) {
      r.agreement = 100.0 * static_cast<double>(agree) / static_cast<double>(r.samples);
      r.kl = kl_sum / static_cast<double>(r.samples);
    }
  }
  if (logits_out) *logits_out = Tensor::from_vector(all, {r.samples, k}, DType::F32);
  return r;
}

// ---- datasets --------------------------------------------------------------------------------------

namespace {
// Samples begin .. begin + n of a dataset (the first `limit` for quick demos; the held-out tail).
class RangeDataset final : public Dataset {
 public:
  RangeDataset(std::shared_ptr<const Dataset> base, size_t begin, size_t n, std::string what)
      : base_(std::move(base)), begin_(begin), n_(n), what_(std::move(what)) {}
  size_t size() const override { return n_; }
  Example get(size_t i) const override {
    Example e = base_->get(begin_ + i);
    e.index = static_cast<int64_t>(i);
    return e;
  }
  Shape sample_shape() const override { return base_->sample_shape(); }
  int64_t num_classes() const override { return base_->num_classes(); }
  std::string describe() const override { return detail::cat(base_->describe(), " (", what_, ")"); }
  int64_t label(size_t i) const override { return base_->label(begin_ + i); }

 private:
  std::shared_ptr<const Dataset> base_;
  size_t begin_, n_;
  std::string what_;
};

std::shared_ptr<const Dataset> limit(std::shared_ptr<const Dataset> d, int64_t n) {
  if (n <= 0 || static_cast<size_t>(n) >= d->size()) return d;
  return std::make_shared<RangeDataset>(std::move(d), 0, static_cast<size_t>(n), detail::cat("first ", n));
}
}  // namespace

DataSplits load_datasets(const DataConfig& cfg) {
  DataSplits s;
  const std::string& root = cfg.root;
  // A root the config names is checked here, naming its key; the loaders' own checks still speak for the
  // default Fashion-MNIST root (with the Debian package's name) and image_folder's train/ and test/.
  RETORT_CHECK(root.empty() || cfg.dataset == "synthetic" || std::filesystem::is_directory(root), "data.root: ", root,
               std::filesystem::exists(root) ? " is not a directory" : " does not exist", " (the ", cfg.dataset,
               " dataset is read from it)");
  if (cfg.dataset == "fashion_mnist") {
    s.train = load_fashion_mnist(root.empty() ? kFashionMnistRoot : root, true);
    s.test = load_fashion_mnist(root.empty() ? kFashionMnistRoot : root, false);
  } else if (cfg.dataset == "mnist") {
    RETORT_CHECK(!root.empty(), "data.root: the mnist dataset needs a root directory");
    s.train = load_mnist(root, true);
    s.test = load_mnist(root, false);
  } else if (cfg.dataset == "cifar10" || cfg.dataset == "cifar100") {
    RETORT_CHECK(!root.empty(), "data.root: the ", cfg.dataset, " dataset needs a root directory (the binary version)");
    const bool c10 = cfg.dataset == "cifar10";
    s.train = c10 ? load_cifar10(root, true) : load_cifar100(root, true);
    s.test = c10 ? load_cifar10(root, false) : load_cifar100(root, false);
  } else if (cfg.dataset == "image_folder") {
    RETORT_CHECK(!root.empty(), "data.root: image_folder needs a root with train/ and test/ subfolders");
    ImageFolderOptions o;
    o.channels = static_cast<int>(cfg.channels);
    o.height = o.width = static_cast<int>(cfg.image_size);
    s.train = load_image_folder(root + "/train", o);
    s.test = load_image_folder(root + "/test", o);
  } else if (cfg.dataset == "synthetic") {
    const Shape shape{cfg.channels, cfg.image_size, cfg.image_size};
    s.train = std::make_shared<SyntheticDataset>(cfg.synthetic_size, shape, cfg.num_classes, 1);
    s.test = std::make_shared<SyntheticDataset>(cfg.synthetic_size, shape, cfg.num_classes, 2);
  } else {
    RETORT_FAIL("data.dataset: unknown dataset '", cfg.dataset, "'");
  }
  check_splits_match(*s.train, *s.test);  // before the limits below wrap them (and hide their class names)
  if (cfg.held_out > 0) {
    const size_t n = s.train->size(), h = static_cast<size_t>(cfg.held_out);
    RETORT_CHECK(h < n, "data.held_out: ", h, " held-out samples leave none to train on in ", s.train->describe());
    s.held_out = std::make_shared<RangeDataset>(s.train, n - h, h, detail::cat("held out: the last ", h));
    s.train = std::make_shared<RangeDataset>(s.train, 0, n - h, detail::cat("without the last ", h, ", held out"));
  }
  s.train = limit(s.train, cfg.train_limit);
  s.test = limit(s.test, cfg.test_limit);
  if (!cfg.mean.empty())
    RETORT_CHECK(cfg.mean.size() == 1 || static_cast<int64_t>(cfg.mean.size()) == s.train->sample_shape()[0],
                 "data.normalize: ", cfg.mean.size(), " channel statistics for ", s.train->describe(), " with ",
                 s.train->sample_shape()[0], " channels");
  return s;
}

TransformPtr train_transform(const DataConfig& cfg, const Shape& shape) {
  auto c = std::make_shared<Compose>();
  if (cfg.random_crop_padding > 0) c->add(std::make_shared<RandomCrop>(shape[1], shape[2], cfg.random_crop_padding));
  if (cfg.hflip) c->add(std::make_shared<RandomHorizontalFlip>(0.5));
  if (!cfg.mean.empty()) c->add(std::make_shared<Normalize>(cfg.mean, cfg.std));
  return c;
}

TransformPtr eval_transform(const DataConfig& cfg) {
  auto c = std::make_shared<Compose>();
  if (!cfg.mean.empty()) c->add(std::make_shared<Normalize>(cfg.mean, cfg.std));
  return c;
}

// ---- kernel switches -------------------------------------------------------------------------------

KernelSwitches::KernelSwitches(const ExperimentConfig& cfg, Device device)
    : KernelSwitches(cfg.math, cfg.deterministic, device, "experiment.math") {}

KernelSwitches::KernelSwitches(const std::string& math, bool deterministic, Device device, const std::string& key)
    : math_(math),
      deterministic_(deterministic),
      prev_autotune_(kernel_autotune()),
      prev_bf16_(cpu_conv_bf16()),
      prev_winograd_(cpu_conv_winograd()),
      prev_tf32_(cuda_allow_tf32()),
      prev_cuda_det_(cuda_deterministic()) {
  math_mode_check(math_, key);
  RETORT_CHECK_CONFIG(!(math_ == "bf16" || math_ == "winograd") || device.is_cpu(), key, " \"", math_,
               "\": these convolutions are built for the CPU only, and this run is on ", device.str(),
               " (on a GPU, \"tf32\" is the reduced-precision mode)");
  RETORT_CHECK_CONFIG(math_ != "tf32" || !device.is_cpu(), key, " \"tf32\": TF32 is a GPU tensor-core format and ",
               "this run is on the CPU (there, \"winograd\" is the faster mode, and \"bf16\" on AVX-512 CPUs)");
  // Off first: bf16 and Winograd refuse to come on while the other is.
  set_cpu_conv_bf16(false);
  set_cpu_conv_winograd(false);
  try {
    if (math_ == "bf16") set_cpu_conv_bf16(true);
    if (math_ == "winograd") set_cpu_conv_winograd(true);
  } catch (const Error& e) {
    set_cpu_conv_bf16(prev_bf16_);
    set_cpu_conv_winograd(prev_winograd_);
    throw ConfigError(detail::cat(key, " \"", math_, "\": ", e.what()));
  }
  set_cuda_allow_tf32(math_ == "tf32");
  // Kernels chosen by timing would make the run's bits depend on the machine's load (backend.h).
  if (deterministic_) set_kernel_autotune(false);
  set_cuda_deterministic(deterministic_);
}

KernelSwitches::~KernelSwitches() {
  set_kernel_autotune(prev_autotune_);
  // (Both were possible before, so cannot throw now; off first, as above.)
  set_cpu_conv_bf16(false);
  set_cpu_conv_winograd(false);
  set_cpu_conv_bf16(prev_bf16_);
  set_cpu_conv_winograd(prev_winograd_);
  set_cuda_allow_tf32(prev_tf32_);
  set_cuda_deterministic(prev_cuda_det_);
}

std::string KernelSwitches::describe() const {
  return detail::cat("math ", math_, deterministic_ ? ", deterministic" : ", kernels chosen by speed");
}

void Trainer::set_reference_logits(Tensor logits) {
  RETORT_CHECK(logits.dim() == 2 && logits.size(0) == static_cast<int64_t>(test_loader_->dataset().size()),
               "reference logits ", shape_str(logits.shape()), " for a test set of ", test_loader_->dataset().size(),
               " samples: expected [", test_loader_->dataset().size(), ", classes]");
  reference_logits_ = std::move(logits);
}

// ---- pictures --------------------------------------------------------------------------------------

// One step of the task on the first test images, in eval mode, drawn into pictures/epoch<E>/ (the
// progress is the epoch's last step's: SoKD draws that step's sub-policy); pictures/index.html lists
// every epoch pictured so far. Nothing here touches what is trained: no backward, eval-mode BN and
// dropout, the task's own state is overwritten by the next step's losses().
void Trainer::write_pictures(int epoch_done, const TrainProgress& progress) {
  task_.train(false);
  Batch b = picture_loader_->make_batch(0, 0);
  b.to(device_);
  Tensor logits;
  {
    const LossTerms terms = task_.losses(b, progress, logits);
    (void)terms;
  }
  char name[32];
  std::snprintf(name, sizeof name, "epoch%04d", epoch_done);
  const std::string dir = run_.file("pictures/") + name;
  const int64_t n = write_step_pictures(dir, b.inputs.to(Device::cpu()), b.targets.to(Device::cpu()),
                                        logits.detach().to(Device::cpu()), task_.views(), cfg_.data.mean,
                                        cfg_.data.std, 0,
                                        detail::cat(cfg_.name, ": ", task_.describe(), ", after epoch ", epoch_done,
                                                    " (step ", progress.step, ")"),
                                        task_.view_notes(), task_.relation_views());
  std::string links;
  for (int e = 1; e <= epoch_done; ++e) {
    std::snprintf(name, sizeof name, "epoch%04d", e);
    if (path_is_directory(run_.file("pictures/") + name))
      links += detail::cat("<li><a href=\"", name, "/index.html\">after epoch ", e, "</a></li>\n");
  }
  write_file_atomic(run_.file("pictures/index.html"),
                    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html_escape(cfg_.name) +
                        "</title></head><body>\n<h3>" + html_escape(cfg_.name) + ": pictures</h3>\n<ul>\n" + links +
                        "</ul>\n</body></html>\n");
  run_.append_metric(Json{{"event", "pictures"}, {"epoch", epoch_done}, {"dir", dir}, {"files", n}});
  log(detail::cat("pictures of epoch ", epoch_done, ": ", dir, "/index.html"));
}

// ---- trainer ---------------------------------------------------------------------------------------

Trainer::Trainer(const ExperimentConfig& cfg, TrainingTask& task, const DataSplits& data, RunDir& run)
    : cfg_(cfg), task_(task), run_(run), tty_(::isatty(STDOUT_FILENO) != 0) {
  LoaderOptions tr{cfg.data.batch_size, true, false, cfg.data.num_workers, cfg.seed};
  LoaderOptions te{cfg.data.eval_batch_size, false, false, cfg.data.num_workers, cfg.seed};
  train_loader_ = std::make_unique<DataLoader>(data.train, tr, train_transform(cfg.data, data.train->sample_shape()));
  test_loader_ = std::make_unique<DataLoader>(data.test, te, eval_transform(cfg.data));
  RETORT_CHECK(train_loader_->num_batches() > 0, "the training set ", data.train->describe(), " yields no batch");
  if (cfg.log.pictures_every_epochs > 0)
    picture_loader_ = std::make_unique<DataLoader>(
        data.test, LoaderOptions{cfg.log.pictures_batch, false, false, 0, cfg.seed}, eval_transform(cfg.data));
  if (task_.wants_held_out()) {
    RETORT_CHECK(data.held_out, task_.describe(), ": needs a held-out split every step; set data.held_out to the ",
                 "number of training samples to hold out (e.g. 5000)");
    LoaderOptions ho{cfg.data.batch_size, true, false, 0, derive_seed(cfg.seed, {0x68656c64})};
    held_loader_ = std::make_unique<DataLoader>(data.held_out, ho, train_transform(cfg.data, data.held_out->sample_shape()));
  }
  Json opt{{"type", cfg.solver.optimizer}, {"lr", cfg.solver.lr}, {"weight_decay", cfg.solver.weight_decay}};
  if (cfg.solver.optimizer == "sgd") {
    opt["momentum"] = cfg.solver.momentum;
    opt["nesterov"] = cfg.solver.nesterov;
  } else {
    opt["betas"] = {cfg.solver.beta1, cfg.solver.beta2};
    opt["eps"] = cfg.solver.eps;
  }
  device_ = Device::parse(cfg.device);
  switches_ = std::make_unique<KernelSwitches>(cfg, device_);
  task.set_training_data(*data.train);
  task.to(device_);  // before the optimizer: moving replaces the parameter tensors
  optimizer_ = make_optimizer(opt, task.trainable_parameters());
  Json sched = cfg.solver.schedule.empty() ? Json{{"type", "constant"}} : cfg.solver.schedule;
  try {
    schedule_ = make_lr_schedule(sched, cfg.solver.lr);
  } catch (const Error& e) {
    RETORT_FAIL("solver.schedule: ", e.what());
  }
}

Trainer::~Trainer() = default;

void Trainer::log(const std::string& line) {
  if (tty_) std::printf("\r\033[K");
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  run_.log_line(line);
}

namespace {

std::atomic<int> g_interrupt{0};

extern "C" void on_interrupt(int sig) {
  // The first signal asks fit() to stop after the step under way; a second one stops the process now.
  if (g_interrupt.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

int interrupt_signal() { return g_interrupt.load(); }

InterruptGuard::InterruptGuard() {
  g_interrupt = 0;
  // A signal the process was started ignoring (a background job of a non-interactive shell) stays ignored.
  prev_int_ = std::signal(SIGINT, on_interrupt);
  if (prev_int_ == SIG_IGN) std::signal(SIGINT, SIG_IGN);
  prev_term_ = std::signal(SIGTERM, on_interrupt);
  if (prev_term_ == SIG_IGN) std::signal(SIGTERM, SIG_IGN);
}

InterruptGuard::~InterruptGuard() {
  std::signal(SIGINT, prev_int_ == SIG_ERR ? SIG_DFL : prev_int_);
  std::signal(SIGTERM, prev_term_ == SIG_ERR ? SIG_DFL : prev_term_);
  g_interrupt = 0;
}

void Trainer::stop_on_interrupt(const Position& pos, int64_t nb, bool write_checkpoint) {
  const int sig = interrupt_signal();
  if (write_checkpoint) save_checkpoint(pos);
  const std::string msg = detail::cat("interrupted (", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal",
                                      ") at epoch ", pos.epoch + 1, ", batch ", pos.batch, "/", nb, ", step ", pos.step,
                                      ": checkpoint written; continue with --resume auto");
  run_.log_line(msg);  // train.log only: the exception's message is what the app prints (once)
  throw Interrupted(msg);
}

void Trainer::save_checkpoint(const Position& pos) {
  StateDict tensors;
  for (auto& [k, t] : task_.model().state_dict()) tensors.emplace_back("model." + k, t);
  for (auto& [k, t] : task_.extra_state()) tensors.emplace_back("extra." + k, t);
  for (auto& [k, t] : optimizer_->state_dict()) tensors.emplace_back("optim." + k, t);
  const double wall = pos.wall_seconds +
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - fit_start_).count();
  const Json trainer{{"epoch", pos.epoch},
                     {"batch", pos.batch},
                     {"step", pos.step},
                     {"best_top1", pos.best_top1},
                     {"best_epoch", pos.best_epoch},
                     {"epoch_loss", pos.epoch_loss},
                     {"epoch_steps", pos.epoch_steps},
                     {"epoch_correct", pos.epoch_correct},
                     {"epoch_seen", pos.epoch_seen},
                     {"interval_loss", pos.interval_loss},
                     {"interval_steps", pos.interval_steps},
                     {"interval_terms", pos.interval_terms},
                     {"train_seconds", pos.train_seconds},
                     {"wall_seconds", wall},
                     {"images_trained", pos.images_trained}};
  char name[96];
  std::snprintf(name, sizeof name, "ckpt_epoch%04d_step%09lld.safetensors", pos.epoch, static_cast<long long>(pos.step));
  std::map<std::string, std::string> meta{{"format", "retort-checkpoint-1"},
                                          {"arch", cfg_.arch},
                                          {"trainer", trainer.dump()},
                                          {"optimizer", optimizer_->hyperparams().dump()},
                                          {"config", cfg_.to_json().dump()}};
  // The model's random streams (its Dropout layers' generators), so that a resumed run draws the masks
  // the uninterrupted one would: "rng" = {module path: generator state}.
  Json rng = Json::object();
  for (auto& [path, m] : task_.model().named_modules())
    if (auto* d = dynamic_cast<Dropout*>(m)) rng[path] = d->generator().state();
  if (!rng.empty()) meta["rng"] = rng.dump();
  meta["threads"] = std::to_string(omp_get_max_threads());  // a resume with another count is noted
  save_safetensors(run_.checkpoint_dir() + "/" + name, tensors, meta);
  run_.set_latest_checkpoint(name, cfg_.log.keep_checkpoints);
}

namespace {

// What a config change between a checkpoint and the resuming run does to the result.
enum class ChangeEffect { None, HowItRuns, WhatItTrains };

ChangeEffect change_effect(const ConfigChange& c) {
  // No effect on the weights: where the run is written, how it is logged and evaluated, how many
  // workers decode (the loader's order and augmentation depend on the seed alone), the initial
  // weights (a resumed run takes them from the checkpoint).
  if (c.under({"experiment.name", "experiment.output_dir", "log", "data.num_workers", "data.eval_batch_size", "model.init"}))
    return ChangeEffect::None;
  // The same training carried out differently (bits may change, the recipe does not), or extended.
  if (c.under({"experiment.device", "experiment.deterministic", "experiment.math", "data.root", "data.test_limit",
               "solver.epochs", "solver.schedule.total_epochs", "teacher.checkpoint"}))
    return ChangeEffect::HowItRuns;
  return ChangeEffect::WhatItTrains;
}

}  // namespace

// The checkpoint's config (metadata "config") against this run's: see set_allow_config_change.
// Returns true when the checkpoint's optimizer hyper-parameters are to be restored (no change to what
// is trained, or none accepted).
bool Trainer::check_resumed_config(const std::string& path, const std::string& saved_config) {
  Json saved = parse_metadata_json(path, "config", saved_config);
  // Read as a config and written again, so that a key an older Retort did not write yet compares as its
  // default; a config this build cannot read is compared as it stands.
  try {
    saved = ExperimentConfig::from_json(saved, path + " (metadata 'config')").to_json();
  } catch (const Error&) {
  }
  std::vector<std::string> how, what;
  for (const ConfigChange& c : config_changes(saved, cfg_.to_json())) {
    const ChangeEffect e = change_effect(c);
    if (e == ChangeEffect::HowItRuns) how.push_back(c.str());
    if (e == ChangeEffect::WhatItTrains) what.push_back(c.str());
  }
  if (!how.empty()) log("config changed since the checkpoint (same recipe): " + detail::join(how, "; "));
  if (what.empty()) return true;
  RETORT_CHECK_CONFIG(allow_config_change_, path, ": this run's config differs from the checkpoint's in what it trains: ",
               detail::join(what, "; "), ". Resume with the checkpoint's values, start a new run (another experiment.name or ",
               "--run-dir), or pass --allow-config-change to continue with the new ones");
  log("config changed since the checkpoint, accepted (--allow-config-change; the optimizer takes the new "
      "hyper-parameters): " + detail::join(what, "; "));
  return false;
}

Trainer::Position Trainer::load_checkpoint(const std::string& path, SafetensorsFile f) {
  auto meta = [&](const std::string& k) {
    auto it = f.metadata.find(k);
    RETORT_CHECK(it != f.metadata.end(), path, ": not a Retort checkpoint (metadata key '", k, "' missing)");
    return it->second;
  };
  RETORT_CHECK(meta("format") != "retort-model-1", path, ": a model file (a run's model.safetensors: weights only), not a ",
               "checkpoint; resume from the run's checkpoints (--resume auto, or --resume RUN/checkpoints/ckpt_*.safetensors), ",
               "or start a new run from these weights with model.init");
  RETORT_CHECK(meta("format") == "retort-checkpoint-1", path, ": unknown checkpoint format '", meta("format"), "'");
  meta("arch");  // (required)
  if (const std::string m = arch_mismatch(f.metadata, cfg_.arch, "this run's model.arch"); !m.empty())
    RETORT_FAIL(path, ": ", m, " (resume a run with the config it was started with)");
  // (Checkpoints written before the config was stored in them cannot be checked: said where the user reads.)
  const bool restore_hyperparams =
      f.metadata.count("config") ? check_resumed_config(path, f.metadata.at("config")) : true;
  if (!f.metadata.count("config"))
    log("note: " + path + " does not record the config it was written with (an older Retort's checkpoint): "
        "this run's config is taken as the checkpoint's, unchecked");
  // The metadata values that hold JSON; a corrupt one is an error naming the file and the key.
  auto meta_json = [&](const std::string& k) { return parse_metadata_json(path, k, meta(k)); };
  StateDict model, extra, optim;
  for (auto& [k, t] : f.tensors) {
    if (k.rfind("model.", 0) == 0) model.emplace_back(k.substr(6), t);
    else if (k.rfind("extra.", 0) == 0) extra.emplace_back(k.substr(6), t);
    else if (k.rfind("optim.", 0) == 0) optim.emplace_back(k.substr(6), t);
    else RETORT_FAIL(path, ": unexpected tensor '", k, "' in checkpoint");
  }
  try {
    task_.model().load_state_dict(model);
    task_.load_extra_state(extra);
    optimizer_->load_state_dict(optim);
    if (restore_hyperparams) optimizer_->load_hyperparams(meta_json("optimizer"));
    const Json rng = f.metadata.count("rng") ? meta_json("rng") : Json::object();
    RETORT_CHECK(rng.is_object(), "metadata key 'rng' must be an object {module path: generator state}");
    for (auto& [module_path, state] : rng.items()) {
      auto* d = dynamic_cast<Dropout*>(&task_.model().find(module_path));
      RETORT_CHECK(d != nullptr, "rng: module '", module_path, "' is not a Dropout layer in this model");
      RETORT_CHECK(state.is_string(), "rng: the generator state of '", module_path, "' must be a string");
      d->generator().set_state(state.get<std::string>());
    }
  } catch (const Error& e) {
    const std::string msg = e.what();
    RETORT_FAIL(msg.rfind(path, 0) == 0 ? msg : path + ": " + msg);
  } catch (const nlohmann::json::exception& e) {
    RETORT_FAIL(path, ": the optimizer or rng metadata does not fit this run: ", e.what());
  }
  // CPU reductions split their work by thread: with another thread count the resumed run is the same
  // recipe but may differ from an uninterrupted one in the last bits. Say so where the user reads.
  if (device_.is_cpu() && f.metadata.count("threads") &&
      f.metadata.at("threads") != std::to_string(omp_get_max_threads()))
    log(detail::cat("note: the checkpoint was written with ", f.metadata.at("threads"), " CPU threads and this run has ",
                    omp_get_max_threads(), ": the resumed run may differ from an uninterrupted one in the last bits"));
  // Read strictly (types and ranges checked): "<path> (metadata 'trainer'): epoch: ...".
  const Json t = meta_json("trainer");
  JsonReader r(t, path + " (metadata 'trainer')");
  Position p;
  p.epoch = r.require<int>("epoch");
  p.batch = r.require<int64_t>("batch");
  p.step = r.require<int64_t>("step");
  p.best_top1 = r.require<double>("best_top1");
  p.best_epoch = r.require<int>("best_epoch");
  // Written since session 26 (an older checkpoint resumes with these at zero: its first epoch's averages
  // then cover the resumed part only).
  p.epoch_loss = r.get<double>("epoch_loss", 0.0);
  p.epoch_steps = r.get<int64_t>("epoch_steps", 0);
  p.epoch_correct = r.get<int64_t>("epoch_correct", 0);
  p.epoch_seen = r.get<int64_t>("epoch_seen", 0);
  p.interval_loss = r.get<double>("interval_loss", 0.0);
  p.interval_steps = r.get<int64_t>("interval_steps", 0);
  if (t.contains("interval_terms") && t["interval_terms"].is_object())
    for (auto it = t["interval_terms"].begin(); it != t["interval_terms"].end(); ++it)
      if (it.value().is_number()) p.interval_terms[it.key()] = it.value().get<double>();
  p.train_seconds = r.get<double>("train_seconds", 0.0);
  p.wall_seconds = r.get<double>("wall_seconds", 0.0);
  p.images_trained = r.get<int64_t>("images_trained", 0);
  RETORT_CHECK(p.epoch >= 0 && p.batch >= 0 && p.step >= 0, r.where("epoch"), ": the position (epoch ", p.epoch,
               ", batch ", p.batch, ", step ", p.step, ") must not be negative");
  return p;
}

namespace {
std::string fmt_duration(double s) {
  char buf[32];
  const int64_t t = static_cast<int64_t>(s);
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

// summary.json's numbers: one list of names for fit(), which writes them, and finished_summary(), which
// reads a finished run's back.
Json summary_to_json(const TrainSummary& s) {
  return Json{{"epochs", s.epochs_run},       {"best_top1", s.best_top1},       {"best_epoch", s.best_epoch},
              {"last_top1", s.last_top1},     {"wall_seconds", s.wall_seconds}, {"train_images_per_s", s.images_per_second}};
}
TrainSummary summary_from_json(const Json& j) {
  TrainSummary s;
  s.epochs_run = j.value("epochs", 0);
  s.best_top1 = j.value("best_top1", 0.0);
  s.best_epoch = j.value("best_epoch", -1);
  s.last_top1 = j.value("last_top1", 0.0);
  s.wall_seconds = j.value("wall_seconds", 0.0);
  s.images_per_second = j.value("train_images_per_s", 0.0);
  return s;
}
}  // namespace

// The summary.json of a run that finished, if it is there and readable.
std::optional<TrainSummary> Trainer::finished_summary() const {
  std::ifstream in(run_.file("summary.json"));
  if (!in) return std::nullopt;
  const Json j = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  try {
    return summary_from_json(j);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // not ours as written: the run's end writes it anew
  }
}

TrainSummary Trainer::fit(const std::string& resume, int64_t stop_after_steps) {
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  fit_start_ = t_start;
  const InterruptGuard interrupts;
  // A run that stops by an exception (an error, a non-finite loss, a signal) leaves no half-drawn progress
  // bar in front of the message the app prints.
  struct ClearProgressLine {
    bool tty;
    ~ClearProgressLine() {
      if (tty && std::uncaught_exceptions() > 0) {
        std::printf("\r\033[K");
        std::fflush(stdout);
      }
    }
  } const clear_progress{tty_};
  Position pos;
  std::string ckpt;
  std::string latest = run_.latest_checkpoint();
  if (latest.empty()) {
    // Stopped between its first checkpoint's rename and the `latest` pointer: the newest file is
    // complete (each is written to a temporary name, fsynced, then renamed).
    const std::vector<std::string> files = run_.checkpoint_files();
    if (!files.empty()) {
      latest = files.back();
      if (resume == "auto") log("checkpoints/latest is missing; the newest checkpoint file is " + latest);
    }
  }
  if (resume == "auto") {
    if (!latest.empty()) ckpt = run_.checkpoint_dir() + "/" + latest;
  } else if (!resume.empty()) {
    ckpt = resume;
  } else {
    RETORT_CHECK(latest.empty(), run_.path(), ": this run directory already holds checkpoints (latest: ", latest,
                 "); pass --resume auto to continue it, or choose another experiment name / output directory");
  }
  SafetensorsFile file;
  if (!ckpt.empty()) {
    // With --resume auto, "the newest complete checkpoint": each is written atomically, so an unreadable
    // one was damaged afterwards (a disk, a copy); the one before it is complete, and is taken with a note.
    const std::vector<std::string> files = run_.checkpoint_files();  // oldest first
    for (auto it = std::find(files.rbegin(), files.rend(), latest);; ++it) {
      try {
        file = load_safetensors(ckpt);  // every tensor's CRC checked
        break;
      } catch (const Error& e) {
        if (resume != "auto" || it == files.rend() || std::next(it) == files.rend()) throw;
        const std::string older = run_.checkpoint_dir() + "/" + *std::next(it);
        log(detail::cat("note: checkpoint ", ckpt, " cannot be read (", e.what(), "); resuming from the one before it, ",
                        older));
        ckpt = older;
      }
    }
  }
  const int64_t nb = static_cast<int64_t>(train_loader_->num_batches());
  if (!ckpt.empty()) {
    pos = load_checkpoint(ckpt, std::move(file));
    // A finished run (its last epoch's checkpoint) with its summary written: nothing to train, and
    // nothing of the run's files to rewrite (a summary of this no-op would say 0 s and 0 img/s).
    const int completed_epochs = pos.batch >= nb ? pos.epoch + 1 : pos.epoch;
    if (completed_epochs >= cfg_.solver.epochs) {
      if (std::optional<TrainSummary> done = finished_summary()) {
        log(detail::cat("the run finished all its ", cfg_.solver.epochs, " epochs (", ckpt,
                        "): nothing to train; its summary.json and model.safetensors are kept (raise solver.epochs "
                        "to train on)"));
        return *done;
      }
    }
    log(detail::cat("resumed from ", ckpt, " at epoch ", pos.epoch + 1, ", batch ", pos.batch, ", step ", pos.step));
    // What the interrupted attempt logged after its checkpoint is redone now: drop it, so metrics.jsonl
    // reads as one run's, and mark where the run resumed.
    const int64_t dropped = run_.rewrite_metrics([&](const Json& e) {
      if (e.value("event", "") == "pictures") return e.value("epoch", 0) <= completed_epochs;
      return !e.contains("step") || !e["step"].is_number() || e["step"].get<int64_t>() <= pos.step;
    });
    run_.append_metric(Json{{"event", "resume"}, {"checkpoint", ckpt}, {"epoch", pos.epoch + 1}, {"batch", pos.batch},
                            {"step", pos.step}, {"dropped_events", dropped}});
  }
  run_.write_json("config.json", cfg_.to_json());

  const int epochs = cfg_.solver.epochs;
  TrainSummary summary;
  summary.best_top1 = std::max(0.0, pos.best_top1);
  summary.best_epoch = pos.best_epoch;
  bool evaluated = false;

  while (pos.epoch < epochs) {
    if (pos.batch >= nb) {  // a checkpoint taken at an epoch's end
      pos.next_epoch();
      continue;
    }
    task_.train(true);
    train_loader_->start_epoch(pos.epoch, static_cast<size_t>(pos.batch));
    // (Position carries the epoch's and the interval's sums across a resume.)
    double& interval_loss = pos.interval_loss;
    double& epoch_loss = pos.epoch_loss;
    std::map<std::string, double>& interval_terms = pos.interval_terms;
    int64_t& interval_steps = pos.interval_steps;
    int64_t& correct = pos.epoch_correct;
    int64_t& seen = pos.epoch_seen;
    int64_t& epoch_steps = pos.epoch_steps;
    double& train_seconds = pos.train_seconds;
    int64_t& images_trained = pos.images_trained;
    auto t_interval = Clock::now();
    int64_t interval_images = 0;
    Batch batch, held_batch;
    while (train_loader_->next(batch)) {
      batch.to(device_);
      TrainProgress prog{pos.epoch, epochs, pos.step, pos.batch, nb};
      const double lr = schedule_->lr(prog.epoch_fraction());
      optimizer_->set_lr(lr);
      if (held_loader_) {
        // A pure function of the step (resuming draws what the uninterrupted run did): the held-out
        // split's shuffled batches in order, one per step, epoch after epoch.
        const auto nh = static_cast<int64_t>(held_loader_->num_batches());
        held_batch = held_loader_->make_batch(pos.step / nh, static_cast<size_t>(pos.step % nh));
        held_batch.to(device_);
      }
      task_.before_step(batch, prog, held_loader_ ? &held_batch : nullptr);
      Tensor logits;
      LossTerms terms = task_.losses(batch, prog, logits);
      RETORT_CHECK(!terms.empty(), task_.describe(), ": produced no loss term");
      Tensor total = total_loss(terms);
      const double loss_value = total.item();
      if (!std::isfinite(loss_value)) {
        std::string which;
        for (auto& [n, t] : terms) which += detail::cat(" ", n, "=", t.item());
        // Numbered as the log and metrics.jsonl number steps (from 1).
        throw NonFiniteLoss(detail::cat("non-finite loss at epoch ", pos.epoch + 1, ", step ", pos.step + 1,
                                        " (batch ", pos.batch + 1, "/", nb, "; terms:", which, "); lr ", lr,
                                        ". Hint: lower solver.lr, check data.normalize, or add a warmup"));
      }
      optimizer_->zero_grad();
      total.backward();
      if (!model_gradient_checked_) {
        // A run whose terms never reach the model (a phase that trains a strategy's module alone: FT's
        // paraphraser, MTKD-SSR's teacher heads) is legitimate, but its reported accuracy is the
        // untrained model's: say so once, where the user reads the log.
        model_gradient_checked_ = true;
        bool reached = false;
        for (const Tensor& p : task_.model().parameters()) reached = reached || p.grad().defined();
        if (!reached)
          log(detail::cat("note: no loss term reaches the model's parameters (", task_.describe(),
                          "): this run does not train it, and its accuracy stays that of its initial weights"));
      }
      optimizer_->step();
      task_.after_step(prog);

      auto [c1, c5] = count_topk_correct(logits, batch.targets);
      (void)c5;
      correct += c1;
      seen += batch.size();
      interval_loss += loss_value;
      epoch_loss += loss_value;
      for (auto& [n, t] : terms) interval_terms[n] += t.item();
      ++interval_steps;
      ++epoch_steps;
      interval_images += batch.size();
      images_trained += batch.size();
      ++pos.step;
      ++pos.batch;

      const bool interval_done = pos.step % cfg_.log.every_steps == 0 || pos.batch == nb;
      if (tty_ || interval_done) {
        const double secs = std::chrono::duration<double>(Clock::now() - t_interval).count();
        const double ips = secs > 0 ? static_cast<double>(interval_images) / secs : 0;
        const double done = (static_cast<double>(pos.epoch) * nb + pos.batch);
        const double total_batches = static_cast<double>(epochs) * nb;
        const double eta = ips > 0 ? (total_batches - done) * static_cast<double>(cfg_.data.batch_size) / ips : 0;
        std::string line = detail::cat("epoch ", pos.epoch + 1, "/", epochs, " step ", pos.batch, "/", nb);
        char buf[256];
        std::snprintf(buf, sizeof buf, " loss %.4f", interval_loss / interval_steps);
        line += buf;
        for (auto& [n, v] : interval_terms) {
          std::snprintf(buf, sizeof buf, " %s %.4f", n.c_str(), v / interval_steps);
          line += buf;
        }
        std::snprintf(buf, sizeof buf, " acc %.2f%% lr %.5g %.1f ms/step %.0f img/s ETA %s",
                      100.0 * correct / std::max<int64_t>(seen, 1), lr, 1000.0 * secs / interval_steps, ips,
                      fmt_duration(eta).c_str());
        line += buf;
        if (interval_done) {
          log(line);
          Json ev{{"event", "train"},          {"epoch", pos.epoch + 1}, {"step", pos.step},
                  {"loss", interval_loss / interval_steps}, {"lr", lr},  {"images_per_s", ips},
                  {"train_top1", 100.0 * correct / std::max<int64_t>(seen, 1)}};
          for (auto& [n, v] : interval_terms) ev["terms"][n] = v / interval_steps;
          run_.append_metric(ev);
          train_seconds += secs;
          interval_loss = 0;
          interval_terms.clear();
          interval_steps = 0;
          interval_images = 0;
          t_interval = Clock::now();
        } else {
          // On a terminal: a bar for the epoch in front of the running interval's numbers.
          constexpr int kBarWidth = 20;
          const int filled = static_cast<int>(kBarWidth * pos.batch / nb);
          std::printf("\r\033[K[%s%s] %s", std::string(filled, '#').c_str(),
                      std::string(kBarWidth - filled, '.').c_str(), line.c_str());
          std::fflush(stdout);
        }
      }
      if (stop_after_steps > 0 && pos.step >= stop_after_steps) {
        save_checkpoint(pos);
        log(detail::cat("stopped after ", pos.step, " steps (checkpoint saved)"));
        summary.epochs_run = pos.epoch;
        return summary;
      }
      // (After an epoch's last step the epoch's end below evaluates, checkpoints and then stops.)
      if (interrupt_signal() != 0 && pos.batch < nb) stop_on_interrupt(pos, nb, true);
      if (cfg_.log.checkpoint_every_steps > 0 && pos.step % cfg_.log.checkpoint_every_steps == 0 && pos.batch < nb)
        save_checkpoint(pos);  // mid-epoch; the epoch's end writes its own
    }

    // End of epoch: evaluate, record, checkpoint.
    const int epoch_done = pos.epoch + 1;
    const bool eval_now = epoch_done % cfg_.log.eval_every_epochs == 0 || epoch_done == epochs;
    Json ev{{"event", "epoch"}, {"epoch", epoch_done}, {"step", pos.step},
            {"train_loss", epoch_steps ? epoch_loss / epoch_steps : 0.0},
            {"train_top1", 100.0 * correct / std::max<int64_t>(seen, 1)}};
    double test_loss = 0;  // this epoch's evaluation, if any
    if (eval_now) {
      evaluated = true;
      const EvalResult r =
          evaluate(task_.model(), *test_loader_, reference_logits_.defined() ? &reference_logits_ : nullptr);
      summary.last_top1 = r.top1;
      if (r.top1 > pos.best_top1) {
        pos.best_top1 = r.top1;
        pos.best_epoch = epoch_done;
      }
      ev["test_top1"] = r.top1;
      ev["test_top5"] = r.top5;
      ev["test_loss"] = r.loss;
      char buf[256];
      std::snprintf(buf, sizeof buf, "epoch %d/%d test top-1 %.2f%% top-5 %.2f%% loss %.4f (best %.2f%% at epoch %d)",
                    epoch_done, epochs, r.top1, r.top5, r.loss, pos.best_top1, pos.best_epoch);
      std::string line = buf;
      if (r.agreement >= 0) {
        ev["test_agreement"] = r.agreement;
        ev["test_kl_teacher"] = r.kl;
        summary_extra_["last_agreement"] = r.agreement;
        summary_extra_["last_kl_teacher"] = r.kl;
        std::snprintf(buf, sizeof buf, "; agrees with the teacher on %.2f%%, KL from it %.4f", r.agreement, r.kl);
        line += buf;
      }
      log(line);
      test_loss = r.loss;
    }
    run_.append_metric(ev);
    if (!std::isfinite(test_loss)) {
      // Finite training losses but non-finite outputs in eval mode (batch-norm running statistics or
      // weights holding NaN or inf): every later evaluation and the exported model would be as broken.
      // The event is recorded; no checkpoint of this state is written.
      throw NonFiniteLoss(detail::cat("non-finite test loss (", test_loss, ") after epoch ", epoch_done, ", step ",
                                      pos.step, ", although the training loss was finite: the model's outputs in ",
                                      "eval mode are not finite (batch-norm running statistics or weights hold NaN "
                                      "or inf). Hint: lower solver.lr, or add a warmup"));
    }
    if (picture_loader_ && (epoch_done % cfg_.log.pictures_every_epochs == 0 || epoch_done == epochs))
      write_pictures(epoch_done, TrainProgress{pos.epoch, epochs, std::max<int64_t>(pos.step - 1, 0), nb - 1, nb});
    const bool checkpoint = epoch_done % cfg_.log.checkpoint_every_epochs == 0 || epoch_done == epochs;
    if (checkpoint) save_checkpoint(pos);
    if (interrupt_signal() != 0) stop_on_interrupt(pos, nb, !checkpoint);
    pos.next_epoch();
  }

  summary.epochs_run = pos.epoch;  // all of them (also when a finished run's checkpoint was resumed)
  summary.best_top1 = std::max(0.0, pos.best_top1);
  summary.best_epoch = pos.best_epoch;
  summary.wall_seconds = pos.wall_seconds + std::chrono::duration<double>(Clock::now() - t_start).count();
  summary.images_per_second =
      pos.train_seconds > 0 ? static_cast<double>(pos.images_trained) / pos.train_seconds : 0;
  if (!evaluated) summary.last_top1 = evaluate(task_.model(), *test_loader_).top1;  // e.g. resuming a finished run
  Json summary_json{{"arch", cfg_.arch},
                    {"dataset", cfg_.data.dataset},
                    {"task", task_.describe()},
                    {"parameters", task_.model().num_parameters()}};
  const Json numbers = summary_to_json(summary);
  for (auto it = numbers.begin(); it != numbers.end(); ++it) summary_json[it.key()] = it.value();
  for (auto it = summary_extra_.begin(); it != summary_extra_.end(); ++it) summary_json[it.key()] = it.value();
  run_.write_json("summary.json", summary_json);
  const Dataset& ds = train_loader_->dataset();
  export_model(run_.file("model.safetensors"), task_.model(),
               {{"arch", cfg_.arch},
                {"dataset", cfg_.data.dataset},
                {"num_classes", std::to_string(ds.num_classes())},
                {"in_channels", std::to_string(ds.sample_shape()[0])},
                {"input_size", std::to_string(ds.sample_shape()[1])},
                {"top1", detail::cat(summary.last_top1)},
                {"config", cfg_.to_json().dump()}});
  return summary;
}

StateDict read_model_state(const std::string& path, std::map<std::string, std::string>* metadata, StateDict* extra) {
  SafetensorsFile f = load_safetensors(path);
  auto fmt = f.metadata.find("format");
  const bool checkpoint = fmt != f.metadata.end() && fmt->second == "retort-checkpoint-1";
  StateDict state;
  for (auto& [k, t] : f.tensors) {
    if (!checkpoint) state.emplace_back(k, t);
    else if (k.rfind("model.", 0) == 0) state.emplace_back(k.substr(6), t);
    else if (extra && k.rfind("extra.", 0) == 0) extra->emplace_back(k.substr(6), t);
  }
  if (metadata) *metadata = std::move(f.metadata);
  return state;
}

void load_model_file(Module& model, const std::string& path, StateDict* extra,
                     std::map<std::string, std::string>* metadata) {
  StateDict state = read_model_state(path, metadata, extra);
  try {
    model.load_state_dict(state);
  } catch (const Error& e) {
    RETORT_FAIL(path, ": ", e.what());
  }
}

TrainedOn trained_on(const std::string& path, const std::map<std::string, std::string>& metadata) {
  TrainedOn t;
  auto get = [&](const std::string& k) {
    auto it = metadata.find(k);
    return it == metadata.end() ? std::string() : it->second;
  };
  // The stored config, read leniently: a checkpoint from an older schema still says what it trained on.
  int64_t implied[3] = {0, 0, 0};
  if (const std::string text = get("config"); !text.empty()) {
    const Json c = Json::parse(text, nullptr, false);
    if (c.is_object() && c.contains("data") && c["data"].is_object()) {
      const Json& d = c["data"];
      auto num = [&](const char* k) { return d.contains(k) && d[k].is_number_integer() ? d[k].get<int64_t>() : 0; };
      t.dataset = d.value("dataset", std::string());
      if (t.dataset == "fashion_mnist" || t.dataset == "mnist") implied[0] = 10, implied[1] = 1, implied[2] = 28;
      if (t.dataset == "cifar10") implied[0] = 10, implied[1] = 3, implied[2] = 32;
      if (t.dataset == "cifar100") implied[0] = 100, implied[1] = 3, implied[2] = 32;
      if (t.dataset == "synthetic")
        implied[0] = num("num_classes"), implied[1] = num("channels"), implied[2] = num("image_size");
      if (t.dataset == "image_folder") implied[1] = num("channels"), implied[2] = num("image_size");  // classes: folders
    }
  }
  if (const std::string own = get("dataset"); !own.empty()) t.dataset = own;
  int64_t* fields[3] = {&t.num_classes, &t.in_channels, &t.input_size};
  const char* keys[3] = {"num_classes", "in_channels", "input_size"};
  for (int i = 0; i < 3; ++i) {
    const std::string v = get(keys[i]);
    if (v.empty()) {
      *fields[i] = std::max<int64_t>(implied[i], 0);
      t.implied[i] = *fields[i] > 0;
      continue;
    }
    int64_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    RETORT_CHECK(ec == std::errc() && end == v.data() + v.size() && n > 0, path, ": metadata '", keys[i],
                 "' is not a positive integer: '", v, "'");
    *fields[i] = n;
  }
  return t;
}

bool TrainedOn::agrees_with(const std::string& name, int64_t classes, const Shape& sample, bool compare_name) const {
  return (!compare_name || dataset.empty() || dataset == name) && (num_classes == 0 || num_classes == classes) &&
         (in_channels == 0 || in_channels == sample[0]) && (input_size == 0 || input_size == sample[1]);
}

std::string TrainedOn::str() const {
  auto n = [](int64_t v) { return v ? std::to_string(v) : std::string("?"); };
  return detail::cat(dataset.empty() ? "unnamed data" : dataset, " (",
                     num_classes ? detail::cat(num_classes, " classes, ") : std::string(), "images ", n(in_channels),
                     "x", n(input_size), "x", n(input_size), ")");
}

std::string data_str(const std::string& dataset, int64_t classes, const Shape& sample) {
  return detail::cat(dataset, " (", classes, " classes, images ", sample[0], "x", sample[1], "x", sample[2], ")");
}

std::string arch_mismatch(const std::map<std::string, std::string>& metadata, const std::string& arch,
                          const std::string& what) {
  const auto own = metadata.find("arch");
  if (arch.empty() || own == metadata.end() || own->second == arch) return {};
  return detail::cat("holds a '", own->second, "' model (its metadata 'arch'), but ", what, " is '", arch, "'");
}

void load_teacher_file(Module& teacher, const std::string& path, const DataConfig& data, int64_t num_classes,
                       const Shape& sample_shape, const std::string& arch) {
  std::map<std::string, std::string> meta;
  try {
    StateDict state = read_model_state(path, &meta);
    if (const std::string m = arch_mismatch(meta, arch, "teacher.arch"); !m.empty()) RETORT_FAIL(m);
    const TrainedOn t = trained_on(path, meta);
    RETORT_CHECK(t.agrees_with(data.dataset, num_classes, sample_shape, true), "was trained on ", t.str(),
                 ", this run's data is ", data_str(data.dataset, num_classes, sample_shape),
                 " (a teacher must be distilled on the data it was trained on)");
    try {
      teacher.load_state_dict(state);
    } catch (const Error& e) {
      RETORT_FAIL(path, ": ", e.what());
    }
  } catch (const Error& e) {
    const std::string msg = e.what();
    RETORT_FAIL("teacher.checkpoint ", path, msg.rfind(path, 0) == 0 ? msg.substr(path.size()) : ": " + msg);
  }
}

void export_model(const std::string& path, const Module& model, const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "retort-model-1";
  save_safetensors(path, model.state_dict(), meta);
}

}  // namespace retort
