// Trainer: runs epochs of a TrainingTask — data, forward, loss terms, backward, optimizer, LR
// schedule, evaluation, logging, checkpoints, resume — and writes the run directory.
//
// A TrainingTask says what is trained and how its loss is made: ClassifierTask is plain cross-entropy
// training (teachers and baseline students); the [distill] Distiller is another task (student +
// frozen teacher + weighted terms). The Trainer is the same for both.
//
// Resume: a checkpoint holds the task's state (model, extra modules), the optimizer state, and the
// trainer position (epoch, next batch, global step, best accuracy). The data order of epoch e is a
// pure function of (seed, e) and augmentation of (seed, e, index), so a resumed run continues with
// exactly the batches, and — on the CPU with the same thread count — exactly the numbers, that the
// uninterrupted run would have produced.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/data.h"
#include "distill/experiment.h"
#include "distill/run_dir.h"
#include "engine/optim/optim.h"
#include "layers/module.h"

namespace retort {

struct SafetensorsFile;  // engine/serialize.h

// A non-finite loss: the apps exit with code 3.
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};

// While alive (Trainer::fit holds one), SIGINT and SIGTERM ask the run to stop cleanly instead of
// killing it; interrupt_signal() is the signal received (0: none). Restores the previous handlers.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  void (*prev_int_)(int);
  void (*prev_term_)(int);
};
int interrupt_signal();

// Trainer::fit stopped by SIGINT or SIGTERM: it finished the step under way, wrote a checkpoint at that
// point and threw this (the apps exit with code 130). A second signal stops the process at once.
class Interrupted : public Error {
 public:
  using Error::Error;
};

struct TrainProgress {
  int epoch = 0;             // 0-based
  int epochs = 1;
  int64_t step = 0;          // global step, 0-based
  int64_t batch = 0;         // within the epoch
  int64_t batches_per_epoch = 1;
  double epoch_fraction() const { return epoch + static_cast<double>(batch) / static_cast<double>(batches_per_epoch); }
};

// Named, already weighted loss terms; the optimised loss is their sum.
using LossTerms = std::vector<std::pair<std::string, Tensor>>;
// Their sum, added in order (the optimised loss); at least one term.
Tensor total_loss(const LossTerms& terms);

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;
  // The network that is evaluated and exported (the student).
  virtual Module& model() = 0;
  // Everything the optimizer updates (the model plus any extra modules).
  virtual std::vector<Tensor> trainable_parameters() { return model().parameters(); }
  // Loss terms for one batch; `logits` receives the model's output (for training accuracy).
  virtual LossTerms losses(const Batch& batch, const TrainProgress& progress, Tensor& logits) = 0;
  // Called before every step's losses() on the same batch (SoKD's second-order policy search runs its
  // virtual step here); it must leave the trainable parameters, their gradients and the model's buffers
  // as it found them.
  // `held_out` is this step's batch of the held-out split when wants_held_out() (else null).
  virtual void before_step(const Batch&, const TrainProgress&, const Batch* held_out = nullptr) {}
  // Whether before_step needs a held-out batch every step (the Trainer then requires data.held_out).
  virtual bool wants_held_out() const { return false; }
  // The training set, once, before the task is moved to its device (CRD sizes its memory of one
  // embedding per training sample and draws its negatives from the labels). Batches then carry
  // indices into it.
  virtual void set_training_data(const Dataset&) {}
  // Called after every optimizer step with that step's progress (SoKD updates its augmentation policy
  // here, outside the model's optimizer).
  virtual void after_step(const TrainProgress&) {}
  // Puts the trained parts in train/eval mode (a frozen teacher stays in eval).
  virtual void train(bool on) { model().train(on); }
  // Moves every module the task owns to `device` (before the optimizer is built).
  virtual void to(Device device) { model().to(device); }
  // State beyond the model's that a checkpoint must hold (connectors, heads), and restoring it.
  virtual StateDict extra_state() const { return {}; }
  virtual void load_extra_state(const StateDict&) {}
  virtual std::string describe() const = 0;
  // What the latest losses() saw that is worth looking at, by name, detached and on the host: for
  // retort-inspect and the pictures of log.pictures_every_epochs (distill/pictures.h). Default: nothing.
  virtual std::vector<std::pair<std::string, Tensor>> views() const { return {}; }
  // Lines of text about the latest losses() (SoKD's sampled sub-policy, MTKD-SSR's stage agreement).
  virtual std::vector<std::string> view_notes() const { return {}; }
  // The views() that are [B, B] relations between the batch's samples, drawn as matrices by pictures.
  virtual std::vector<std::string> relation_views() const { return {}; }
};

// Cross-entropy training of one classifier.
class ClassifierTask : public TrainingTask {
 public:
  explicit ClassifierTask(std::shared_ptr<Module> model, double label_smoothing = 0.0)
      : model_(std::move(model)), label_smoothing_(label_smoothing) {}
  Module& model() override { return *model_; }
  LossTerms losses(const Batch& batch, const TrainProgress& progress, Tensor& logits) override;
  std::string describe() const override { return "cross-entropy"; }

 private:
  std::shared_ptr<Module> model_;
  double label_smoothing_;
};

struct EvalResult {
  double top1 = 0, top5 = 0, loss = 0;  // percentages and mean cross-entropy
  int64_t samples = 0;
  // Against reference logits (a distillation's teacher), when given: how often the two top-1s agree
  // (percent) and the mean KL(softmax(reference) || softmax(model)) at temperature 1 — the student's
  // fidelity to its teacher, apart from its accuracy. Negative when no reference was given.
  double agreement = -1, kl = -1;
};

// How many rows of logits [N, C] have their target (I64 [N]) among the 1 and the 5 largest logits. A
// tie with the target goes to the lower class index (so constant logits are right for class 0 only, not
// for every class), a NaN logit ranks above every number, as in torch.topk, and a row whose target's
// logit is NaN is never right: a diverged model scores 0, not chance or better.
std::pair<int64_t, int64_t> count_topk_correct(const Tensor& logits, const Tensor& targets);

// Top-1/top-5 accuracy and mean cross-entropy of `model` (eval mode, no grad) over the loader, which
// must not shuffle. `reference`: [samples, classes] logits of another model on the same loader (any
// device), for EvalResult::agreement and kl. `logits_out`: receives the model's logits, [samples,
// classes] on the host.
EvalResult evaluate(Module& model, DataLoader& loader, const Tensor* reference = nullptr, Tensor* logits_out = nullptr);

// Datasets as the config describes them (train_limit/test_limit applied).
// data.held_out > 0 moves the last held_out training samples into `held_out` before train_limit
// applies to the rest; held_out is null otherwise.
struct DataSplits {
  std::shared_ptr<const Dataset> train, test, held_out;
};
DataSplits load_datasets(const DataConfig& cfg);
// The training transform (random crop, flip, normalise) and the evaluation one (normalise only).
TransformPtr train_transform(const DataConfig& cfg, const Shape& sample_shape);
TransformPtr eval_transform(const DataConfig& cfg);

struct TrainSummary {
  double best_top1 = 0, last_top1 = 0;
  int best_epoch = -1;
  int epochs_run = 0;
  double wall_seconds = 0, images_per_second = 0;
};

// The engine's global kernel switches that an experiment selects, set for this object's lifetime
// and restored after (the Trainer holds one for its whole run):
//   experiment.deterministic  true: CPU convolution kernels pinned (kernel_autotune off), cuDNN's
//                             deterministic algorithms only; false: both may choose by speed.
//   experiment.math           "bf16": the CPU's bfloat16 convolutions; "winograd": the CPU's F32
//                             Winograd convolutions; "tf32": CUDA's TF32 tensor cores.
// Throws, naming experiment.math (or `key`), where the device cannot run the mode asked for. The apps'
// --math flags (retort-bench, retort-eval) go through the second constructor.
class KernelSwitches {
 public:
  KernelSwitches(const ExperimentConfig& cfg, Device device);
  KernelSwitches(const std::string& math, bool deterministic, Device device, const std::string& key);
  ~KernelSwitches();
  KernelSwitches(const KernelSwitches&) = delete;
  KernelSwitches& operator=(const KernelSwitches&) = delete;
  // "math bf16, deterministic" — for the run's log.
  std::string describe() const;

 private:
  std::string math_;
  bool deterministic_;
  bool prev_autotune_, prev_bf16_, prev_winograd_, prev_tf32_, prev_cuda_det_;
};

class Trainer {
 public:
  Trainer(const ExperimentConfig& cfg, TrainingTask& task, const DataSplits& data, RunDir& run);
  ~Trainer();

  // Trains to cfg.solver.epochs. resume: "" (fresh run; refuses a run directory that already holds
  // checkpoints), "auto" (the newest complete checkpoint, or fresh if none), or a checkpoint path.
  // Resuming a run that finished all its epochs trains nothing and leaves its files alone.
  // stop_after_steps > 0 stops (after checkpointing) once that many global steps are done: tests use
  // it to simulate an interruption.
  TrainSummary fit(const std::string& resume = "", int64_t stop_after_steps = 0);

  // Resuming checks the checkpoint's config against this run's (Trainer::load_checkpoint): a change
  // to what is trained (model, data, solver, distillation terms, seed, ...) is refused, listing each
  // change, unless this is on; then the new values are used (the optimizer keeps the config's
  // hyper-parameters instead of the checkpoint's) and each change is logged. Changes to how the run
  // goes (device, math, deterministic, data.root, epochs, the teacher's file) are always allowed and
  // logged; those with no effect on the result (name, output_dir, log.*, num_workers, ...) pass.
  void set_allow_config_change(bool on) { allow_config_change_ = on; }
  // The teacher's test logits ([test samples, classes], from evaluate's logits_out): every evaluation
  // then also reports the student's agreement with it and the KL from it (log line, metrics
  // test_agreement / test_kl_teacher, summary.json last_agreement / last_kl_teacher).
  void set_reference_logits(Tensor logits);

  Optimizer& optimizer() { return *optimizer_; }
  const KernelSwitches& switches() const { return *switches_; }
  // Extra fields for summary.json (e.g. the teacher's accuracy).
  void add_summary_field(const std::string& key, Json value) { summary_extra_[key] = std::move(value); }

 private:
  struct Position {
    int epoch = 0;
    int64_t batch = 0;  // next batch to run within `epoch`
    int64_t step = 0;   // global steps done
    double best_top1 = -1;
    int best_epoch = -1;
    // The epoch so far and the log interval so far, so that a run resumed mid-epoch logs the averages the
    // uninterrupted run would (its epoch event's train_loss and train_top1, the next train line's loss).
    double epoch_loss = 0;
    int64_t epoch_steps = 0, epoch_correct = 0, epoch_seen = 0;
    double interval_loss = 0;
    int64_t interval_steps = 0;
    std::map<std::string, double> interval_terms;
    // Totals over every attempt of the run, for summary.json: training seconds and images (img/s), wall time.
    double train_seconds = 0, wall_seconds = 0;
    int64_t images_trained = 0;
    void next_epoch() {  // at an epoch's end: its first batch, its sums from zero
      ++epoch;
      batch = 0;
      epoch_loss = 0;
      epoch_steps = epoch_correct = epoch_seen = 0;
    }
  };
  void save_checkpoint(const Position& pos);
  std::chrono::steady_clock::time_point fit_start_;  // this attempt's start (wall time in checkpoints)
  [[noreturn]] void stop_on_interrupt(const Position& pos, int64_t nb, bool write_checkpoint);
  // `file` is `path` as load_safetensors read it (fit reads it first, to pass over a damaged one); taken
  // by value, so the file's tensors are freed once they are loaded.
  Position load_checkpoint(const std::string& path, SafetensorsFile file);
  bool check_resumed_config(const std::string& path, const std::string& saved_config);
  std::optional<TrainSummary> finished_summary() const;
  void write_pictures(int epoch_done, const TrainProgress& progress);  // log.pictures_every_epochs
  void log(const std::string& line);

  const ExperimentConfig& cfg_;
  Device device_;
  TrainingTask& task_;
  RunDir& run_;
  std::unique_ptr<KernelSwitches> switches_;  // set in the constructor, before any kernel runs
  std::unique_ptr<DataLoader> train_loader_, test_loader_;
  std::unique_ptr<DataLoader> held_loader_;  // data.held_out's batches, when the task wants them
  std::unique_ptr<DataLoader> picture_loader_;  // the first log.pictures_batch test images, when pictured
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  bool tty_ = false;
  bool model_gradient_checked_ = false;  // whether the first step's backward was looked at (see fit)
  bool allow_config_change_ = false;
  Tensor reference_logits_;  // set_reference_logits; undefined: none
  Json summary_extra_ = Json::object();
};

// The model tensors of a run's model.safetensors, a checkpoint ("model." prefix stripped) or an
// imported model; `metadata` receives the file's metadata and `extra` a checkpoint's extra.* tensors
// (the task's own modules, prefix stripped) when given.
StateDict read_model_state(const std::string& path, std::map<std::string, std::string>* metadata = nullptr,
                           StateDict* extra = nullptr);
// read_model_state + a strict load_state_dict; errors name the file and every mismatched key.
void load_model_file(Module& model, const std::string& path, StateDict* extra = nullptr,
                     std::map<std::string, std::string>* metadata = nullptr);
// What a model file or checkpoint says it was trained on: its metadata's own keys (dataset, num_classes,
// in_channels, input_size — what export_model writes), else what the training config a checkpoint
// stores implies (its data.dataset, and that dataset's classes, channels and image size). "" / 0 where
// the file says nothing; a size that is there but not a positive integer is an error naming the key.
struct TrainedOn {
  std::string dataset;
  int64_t num_classes = 0, in_channels = 0, input_size = 0;
  bool implied[3] = {};  // num_classes, in_channels, input_size came from the stored config's dataset
  // Whether the file agrees with data named `dataset` of `classes` classes and samples [C, H, W]: what it
  // does not say agrees, and the name counts only when `compare_name` (a model may be evaluated on other
  // data of its shape; a teacher is distilled on its own).
  bool agrees_with(const std::string& dataset, int64_t classes, const Shape& sample, bool compare_name) const;
  // "synthetic (4 classes, images 1x8x8)"; "?" for a size the file does not say, "unnamed data" for its name.
  std::string str() const;
};
// Data as TrainedOn::str shows it: "fashion_mnist (10 classes, images 1x28x28)".
std::string data_str(const std::string& dataset, int64_t classes, const Shape& sample);
TrainedOn trained_on(const std::string& path, const std::map<std::string, std::string>& metadata);
// The sentence for a model file whose metadata names another architecture than `arch`, `what` naming
// where `arch` came from: "holds a 'resnet8' model (its metadata 'arch'), but teacher.arch is 'resnet14'".
// "" when the file names no architecture, names `arch`, or `arch` is "".
std::string arch_mismatch(const std::map<std::string, std::string>& metadata, const std::string& arch,
                          const std::string& what);

// A distillation's frozen teacher from teacher.checkpoint: load_model_file with errors that name the
// key, and a refusal when the file says it was trained on other data than `data` (another dataset, class
// count, or images of another channel count or size: sample_shape [C, H, W]) — a teacher on data it never saw
// distils noise. Files without that metadata (imported PyTorch models) are taken as they are. A file that
// names its architecture (metadata "arch") must name `arch` (teacher.arch; "" to skip the check).
void load_teacher_file(Module& teacher, const std::string& path, const DataConfig& data, int64_t num_classes,
                       const Shape& sample_shape, const std::string& arch = "");

// Saves `model` alone (what retort-eval and a distillation teacher read) with metadata.
void export_model(const std::string& path, const Module& model, const std::map<std::string, std::string>& metadata);

}  // namespace retort
