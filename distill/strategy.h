// Strategies: how a distillation method turns student and teacher outputs into a loss term.
//
// A Strategy is a Module, so its trainable extras (connectors, DAM heads, auxiliary classifiers)
// are registered submodules: saved in checkpoints, given to the optimizer, counted at start-up. It
//   - declares the feature taps it needs in the student and the teacher (module paths: "layer2",
//     "layer3:preact", ":pooled"), which the Distiller attaches before the first forward;
//   - is built once from the tap shapes of a probe forward (build()), where it sizes its connectors;
//   - computes its UNWEIGHTED loss from a DistillContext each step (the Distiller applies the term's
//     weight and warmup).
// Wrappers fit the same interface: a strategy may own another strategy (SoKD wraps a host method and
// refines the teacher's targets), own extra heads on either network (MTKD-SSR), or detach student
// outputs (stop-gradient) itself.
//
// Strategies are registered by name (strategies/registry.cpp) and built from their JSON params,
// strictly: an unknown parameter is an error naming the term. Adding one touches no other strategy.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distill/json_reader.h"
#include "distill/trainer.h"
#include "layers/module.h"

namespace retort {

// Everything a strategy sees for one batch. Teacher tensors carry no gradient.
struct DistillContext {
  const Tensor& student_logits;
  const Tensor& teacher_logits;  // undefined when the run has no teacher (CE-only)
  const Tensor& targets;         // I64 [B]
  const std::map<std::string, Tensor>& student_features;  // tap spec -> tensor
  const std::map<std::string, Tensor>& teacher_features;
  const TrainProgress& progress;
  // Runs the teacher on this batch again with the output of module `tap` replaced by `feature` and
  // returns its logits: the rest of the teacher applied to a changed feature (SoKD's refined teacher
  // logits). Gradients reach `feature` unless the caller holds a NoGradGuard; the teacher's features
  // above are not overwritten. Empty when there is no teacher.
  std::function<Tensor(const std::string& tap, const Tensor& feature)> teacher_from;
  // Where the transfer should focus, or null: per-location weights [B, H, W] (no gradient) that a
  // strategy accepting them (accepts_location_mask()) multiplies into its per-location difference,
  // brought to each feature's size by location_mask_at(). SoKD sets its DAM region mask here for its
  // host ("mask_host").
  const Tensor* location_mask = nullptr;
  // The batch's dataset indices (I64 [B], host) and the dataset they index (Batch::source), or null:
  // CRD indexes its memory with them when the source is the training set given to set_training_data.
  const Tensor* sample_indices = nullptr;
  const Dataset* sample_source = nullptr;
  // The weight (warmup included) the Distiller gives the term being computed at this step: a strategy
  // that needs the value of its own contribution to the loss (SoKD's RELAX estimator) multiplies by it.
  double weight = 1.0;
  const Tensor& student_feature(const std::string& spec) const;
  const Tensor& teacher_feature(const std::string& spec) const;
};

// Tap shapes from one probe forward (batch of 2) of each network, by tap spec.
struct TapShapes {
  std::map<std::string, Shape> student, teacher;
  Shape student_logits, teacher_logits;  // the networks' outputs ([2, K]); teacher_logits empty without one
  Shape input;                           // one sample's shape [C, H, W]
  // Builders of a freshly initialised network of the student's / teacher's architecture, for strategies
  // whose heads copy part of it (MTKD-SSR's stage-copy heads); empty when the caller gave none.
  std::function<std::shared_ptr<Module>(Generator&)> fresh_student, fresh_teacher;
  // The teacher's batch norm before the ReLU of a tapped point (Module::batch_norm_before; null where
  // the model does not say), for strategies that read its affine parameters (OFD's margins); empty
  // without a teacher.
  std::function<std::shared_ptr<Module>(const std::string& spec)> teacher_batch_norm;
  const Shape& of_student(const std::string& spec) const;
  const Shape& of_teacher(const std::string& spec) const;
};

class Strategy : public Module {
 public:
  explicit Strategy(std::string type) : Module(std::move(type)) {}
  // Taps this strategy reads (attached by the Distiller).
  virtual std::vector<std::string> student_taps() const { return {}; }
  virtual std::vector<std::string> teacher_taps() const { return {}; }
  // Called once by the Distiller before it reads the taps: replaces stage aliases ("stage2", "stage-1",
  // "stages:preact"; layers/module.h) in this strategy's taps by the networks' module paths
  // (Module::resolve_tap / resolve_taps), so that build() and params() — the run's summary.json
  // "terms", retort-distill's start-up "taps" lines — name what is tapped. `teacher` is null without
  // one. Every strategy with taps overrides it.
  virtual void resolve_stage_aliases(const Module& student, const Module* teacher) {}
  // Whether it needs a teacher at all (ce does not).
  virtual bool needs_teacher() const { return true; }
  // Whether compute() reads the teacher's logits (a wrapper that refines the teacher's targets then
  // refines the logits too). Feature methods say no.
  virtual bool uses_teacher_logits() const { return needs_teacher(); }
  // Whether compute() honours DistillContext::location_mask (feature methods with a per-location loss:
  // fitnet, at).
  virtual bool accepts_location_mask() const { return false; }
  // Sizes connectors from the tap shapes; called once before training.
  virtual void build(const TapShapes& shapes, Generator& gen) {}
  // The unweighted loss for this batch (a 0-D tensor).
  virtual Tensor compute(const DistillContext& ctx) = 0;
  // The same loss as named parts whose sum is compute()'s value; the Distiller reports each part as
  // "<term>.<part>" (one unnamed part reports as "<term>"). A strategy made of several losses with
  // their own weights (MTKD-SSR) overrides this so that a log shows each; the default is one part.
  virtual std::vector<std::pair<std::string, Tensor>> compute_parts(const DistillContext& ctx) {
    return {{"", compute(ctx)}};
  }
  // The training set, once before training (the Trainer's; retort-inspect passes it too). A strategy
  // with per-sample state (CRD's memory) sizes it here.
  virtual void set_training_data(const Dataset&) {}
  // After every optimizer step: state the strategy updates itself, outside the model's optimizer
  // (SoKD's augmentation policy). Its gradients are those the step's backward left on it.
  virtual void after_step(const TrainProgress&) {}
  // Second-order (DARTS) search of the strategy's own state α (SoKD's augmentation policy). When
  // unrolled_search() returns settings for this step, the Distiller, before the step and on the same
  // batch, with θ = every trainable parameter and L the total loss of all terms:
  //   θ' = θ − lr·(∇θ L(θ, α) + weight_decay·θ)              (a virtual SGD step, no momentum)
  //   v  = ∇θ' L_upper(θ')                                    (set_upper_level(true) during this pass;
  //                                                            on the held-out batch with held_out)
  //   R  = radius / ‖v‖,  g± = ∇α L(θ ± R·v, α)
  //   search_step(−(g+ − g−) / (2R))                          (the implicit gradient of L_upper wrt α)
  // and then restores θ and every buffer. search_parameters() are the α tensors (their gradients).
  // held_out: the upper level runs on the step's held-out batch (data.held_out) instead of the
  // training batch; ce_only: L_upper is the student's cross-entropy alone (classic DARTS' validation
  // loss) instead of the total loss.
  struct UnrolledSettings {
    double lr = 0.01, weight_decay = 1e-4, radius = 0.01;
    bool held_out = false, ce_only = false;
  };
  // Whether unrolled_search() will ever ask for a held-out batch (the Trainer then builds the split).
  virtual bool wants_held_out() const { return false; }
  virtual std::optional<UnrolledSettings> unrolled_search(const TrainProgress&) const { return std::nullopt; }
  virtual std::vector<Tensor*> search_parameters() { return {}; }
  // g± above: ∇α L after a backward of L, whose value was `loss`. The default reads the gradients the
  // backward left (zeros where none); SoKD's RELAX estimator replaces those of its discrete choices.
  virtual std::vector<Tensor> search_gradients(double loss);
  virtual void set_upper_level(bool) {}
  virtual void search_step(const std::vector<Tensor>& gradients, const TrainProgress& progress) {}
  // What the latest compute() saw or made that is worth looking at (masks, refined targets), by
  // name, for retort-inspect --distill; and a line of text about it. Default: nothing.
  virtual std::vector<std::pair<std::string, Tensor>> inspect() const { return {}; }
  virtual std::string inspect_text() const { return ""; }
  // The names among inspect()'s views that are [B, B] relations between the batch's samples (SP's
  // similarities, PKT's probabilities, RKD's distances): pictures draw them once per batch as matrices.
  virtual std::vector<std::string> relation_views() const { return {}; }
  // Every parameter with its resolved value (recorded in the run directory).
  virtual Json params() const = 0;

  Tensor forward(const Tensor&) final;  // strategies are not layers: calling it is an error
};

// A location mask [B, H, W] at a feature's spatial size h x w: as is when the sizes agree, max-pooled
// (a location counts if any of the finer ones it covers does) when the feature is an integer factor
// smaller, nearest-upsampled when an integer factor larger; other sizes are an error naming both.
Tensor location_mask_at(const Tensor& mask, int64_t h, int64_t w);

// A copy of t's gradient, or zeros shaped like t where it got none.
Tensor grad_or_zeros(const Tensor& t);

// The sum of named parts (compute() of a strategy that overrides compute_parts); a 0-D tensor.
Tensor sum_of_parts(const std::vector<std::pair<std::string, Tensor>>& parts);

using StrategyFactory = std::function<std::shared_ptr<Strategy>(JsonReader& params)>;

// Registers a strategy type; a duplicate name is an error.
void register_strategy(const std::string& type, StrategyFactory factory);
// Builds a strategy from its params (every key must be consumed). Unknown types list the known ones.
std::shared_ptr<Strategy> create_strategy(const std::string& type, JsonReader& params);
std::vector<std::string> strategy_types();

}  // namespace retort
