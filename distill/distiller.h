// Distiller: the TrainingTask of a distillation run — a student, an optional frozen teacher, and a
// weighted list of terms (each a Strategy). CE-only training is the same machinery with one "ce" term.
//
// Each step: the teacher runs under NoGradGuard (BN in eval mode unless teacher_bn == "train", which
// uses batch statistics but still never updates the teacher's running statistics or weights), the
// student runs with its taps attached, and each term contributes
//   weight * min(1, (epoch + 1) / warmup_epochs) * strategy.compute(ctx)
// (warmup as mdistiller: epoch counted from 1, so the first epoch of a 20-epoch warmup has weight
// 1/20). The loss terms are reported by name, weighted.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distill/strategy.h"
#include "models/registry.h"
#include "distill/trainer.h"

namespace retort {

struct DistillTerm {
  std::string name;  // reported name ("ce", "kd", ...)
  double weight = 1.0;
  int warmup_epochs = 0;  // 0 = none
  std::shared_ptr<Strategy> strategy;
};

struct DistillerOptions {
  std::string teacher_bn = "eval";  // "eval" | "train"
  // Builders of fresh networks of the student's and the teacher's architecture (TapShapes::fresh_*),
  // for strategies whose heads copy stages of a network; the apps pass create_model of the config's
  // archs. A strategy that needs one refuses when it is empty.
  std::function<std::shared_ptr<Module>(Generator&)> fresh_student, fresh_teacher;
  // What a config asks for: its teacher's BN mode, and fresh networks of its student's and (when it
  // names one) teacher's architectures built with `mo`.
  static DistillerOptions from_config(const ExperimentConfig& cfg, const ModelOptions& mo);
};

class Distiller : public TrainingTask {
 public:
  // The teacher may be null when no term needs one. Taps are attached and strategies built here,
  // from a probe forward of `probe_shape` ([C, H, W]).
  Distiller(std::shared_ptr<Module> student, std::shared_ptr<Module> teacher, std::vector<DistillTerm> terms,
            DistillerOptions options, const Shape& probe_shape, Generator& gen);
  ~Distiller() override;

  Module& model() override { return *student_; }
  Module* teacher() { return teacher_.get(); }
  std::vector<Tensor> trainable_parameters() override;
  LossTerms losses(const Batch& batch, const TrainProgress& progress, Tensor& logits) override;
  void train(bool on) override;
  void before_step(const Batch& batch, const TrainProgress& progress, const Batch* held_out = nullptr) override;
  bool wants_held_out() const override;
  void after_step(const TrainProgress& progress) override;
  void set_training_data(const Dataset& train) override;
  void to(Device device) override;
  StateDict extra_state() const override;
  void load_extra_state(const StateDict& state) override;
  std::string describe() const override;
  // The tapped features ("student.<tap>", "teacher.<tap>") and every term's inspect() views
  // ("term.<name>.<view>") of the latest losses().
  std::vector<std::pair<std::string, Tensor>> views() const override;
  // "term <name> (<type>): <inspect_text>" for every term that has a text.
  std::vector<std::string> view_notes() const override;
  // The views() names that are [B, B] relations between the batch's samples (Strategy::relation_views).
  std::vector<std::string> relation_views() const override;

  // Parameters of the strategies' extra modules (connectors, heads): reported at start.
  int64_t extra_parameter_count() const;
  const std::vector<DistillTerm>& terms() const { return terms_; }
  // The features the taps recorded in the latest losses(): tap spec -> tensor (for retort-inspect).
  const std::map<std::string, Tensor>& student_features() const { return student_feats_; }
  const std::map<std::string, Tensor>& teacher_features() const { return teacher_feats_; }
  Json terms_json() const;
  // "<term>: student <taps>; teacher <taps>" for every term that reads features — the module paths its
  // taps resolved to (retort-distill prints them at start).
  std::vector<std::string> tap_lines() const;

 private:
  void teacher_mode();
  Tensor run_teacher(const Tensor& inputs);  // the teacher's forward (restoring BN statistics in "train")

  std::shared_ptr<Module> student_, teacher_;
  std::vector<DistillTerm> terms_;
  DistillerOptions options_;
  std::map<std::string, Tensor> student_feats_, teacher_feats_;
  bool rerunning_teacher_ = false;  // inside DistillContext::teacher_from: taps do not record
};

// Builds the terms of a config's "distill": {"terms": [...]} array, strictly.
std::vector<DistillTerm> parse_terms(const Json& terms, const std::string& file);

}  // namespace retort
