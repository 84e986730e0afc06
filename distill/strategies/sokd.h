// "sokd" strategy (see sokd.cpp for the method, docs/methods/sokd.md for the config): declared here so
// that tools and tests can look at what it did on the latest step — the DAM regions on the student's
// side, the augmented teacher feature, the sampled sub-policy and which of its two ops ran.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "distill/connectors.h"
#include "distill/nodes/sokd.h"
#include "distill/strategy.h"

namespace retort {

struct SokdOptions {
  std::string s_tap = "layer2", t_tap = "layer2";
  int64_t area_num = 8, heatmap_classes = 100;
  bool trailing_relu = true, augment = true;
  double feat_weight = 1000.0, dam_weight = 1000.0;
  std::string search = "first_order";  // "first_order" | "none"
  int search_epochs = 20;
  double policy_lr = 3e-4, policy_weight_decay = 1e-3, relax_temperature = 0.5;
};

// The augmentation policy's state, a module of buffers only (kept out of the student's optimizer):
// probability [36, 2], magnitude [36, 2], weight [36] (sub-policy logits), their Adam moments
// adam_m_* / adam_v_* and adam_step. In a checkpoint: term.<name>.policy.probability, ...
class AugmentationPolicy : public Module {
 public:
  AugmentationPolicy() : Module("AugmentationPolicy") {}
  Tensor forward(const Tensor&) override;  // not a layer: an error
  using Module::buffer;
  using Module::register_buffer;
};

class SokdStrategy final : public Strategy {
 public:
  explicit SokdStrategy(SokdOptions o);
  std::vector<std::string> student_taps() const override { return {o_.s_tap}; }
  std::vector<std::string> teacher_taps() const override { return {o_.t_tap}; }
  void build(const TapShapes& shapes, Generator& gen) override;
  Tensor compute(const DistillContext& ctx) override;
  std::vector<std::pair<std::string, Tensor>> compute_parts(const DistillContext& ctx) override;
  void after_step(const TrainProgress& progress) override;
  Json params() const override;
  // mask, boxes, scores, heatmap_classes (of the regions), student (ConvReg output), teacher (the
  // tapped feature) and augmented_teacher; the text names the sampled sub-policy and its ops.
  std::vector<std::pair<std::string, Tensor>> inspect() const override;
  std::string inspect_text() const override;

  // The latest step's regions, augmented teacher feature and sample (for inspection and tests).
  const DamRegions& last_regions() const { return last_regions_; }
  const Tensor& last_augmented() const { return last_augmented_; }
  int64_t last_sub_policy() const { return last_b_; }
  std::array<bool, 2> last_applied() const { return last_applied_; }
  // The 36 sub-policies (pairs of ops) the policy tensors index.
  const std::vector<std::array<FeatureOp, 2>>& sub_policies() const { return policies_; }
  bool searching(const TrainProgress& p) const { return o_.search == "first_order" && p.epoch < o_.search_epochs; }

 private:
  Tensor augment(const Tensor& f, const TrainProgress& progress);

  SokdOptions o_;
  std::vector<std::array<FeatureOp, 2>> policies_;
  std::shared_ptr<ConvReg> regressor_;
  std::shared_ptr<DistinctiveAreaDetector> dam_;
  std::shared_ptr<AugmentationPolicy> policy_;
  uint64_t seed_ = 0;
  DamRegions last_regions_;
  Tensor last_augmented_, last_student_, last_teacher_;
  int64_t last_b_ = -1;
  std::array<bool, 2> last_applied_{};
};

}  // namespace retort
