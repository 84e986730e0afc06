// "sokd" strategy (see sokd.cpp for the method, docs/methods/sokd.md for the config): declared here so
// that tools and tests can look at what it did on the latest step — the DAM regions on the student's
// side, the augmented teacher feature, the sampled sub-policy and which of its two ops ran.
#pragma once
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distill/connectors.h"
#include "distill/nodes/relax.h"
#include "distill/nodes/sokd.h"
#include "distill/strategy.h"

namespace retort {

struct SokdOptions {
  // The ops the sub-policies pair (every unordered pair of them; all 9 ops = the reference's 36).
  std::vector<FeatureOp> ops{FeatureOp::ShearX,  FeatureOp::ShearY, FeatureOp::TranslateX,
                             FeatureOp::TranslateY, FeatureOp::Rotate, FeatureOp::Cutout,
                             FeatureOp::Noise,   FeatureOp::ChannelShuffle, FeatureOp::ChannelDrop};
  std::string s_tap = "stage2", t_tap = "stage2";
  int64_t area_num = 8, heatmap_classes = 100;
  bool trailing_relu = true, augment = true;
  double feat_weight = 1000.0, dam_weight = 1000.0;
  std::string search = "first_order";  // "first_order" | "second_order" | "none"
  int search_epochs = 20;
  // second_order: the virtual step's lr and weight decay (the dev code's η 0.01, λ 1e-4) and the
  // finite-difference radius r of the Hessian-vector product (R = r / ‖v‖).
  double unrolled_lr = 0.01, unrolled_weight_decay = 1e-4, hessian_radius = 0.01;
  // second_order: the upper level's batch ("same": the training batch, the dev code's; "held_out": the
  // step's batch of data.held_out, classic DARTS) and loss ("total": every term, the dev code's; "ce":
  // the student's cross-entropy alone).
  std::string upper_batch = "same", upper_loss = "total";
  double policy_lr = 3e-4, policy_weight_decay = 1e-3, relax_temperature = 0.5;
  // How the policy's discrete choices (the sub-policy, the ops' flags) get their gradients:
  // "straight_through" (relaxed samples whose value is the hard draw) or "relax" (RELAX with a learned
  // control variate, the reference's estimator: distill/nodes/relax.h). Magnitudes are straight-through
  // in both.
  std::string estimator = "straight_through";
  int64_t relax_hidden = 100;  // the control variate's hidden width (the reference's QFunc: 100)
  // The plug-in (methods.md §3.1.5): another method computed on the refined teacher targets — every
  // teacher feature it reads augmented by the step's sub-policy and, when it reads the teacher's
  // logits and refine_logits is on, the logits of the rest of the teacher run on f̃_t. Null: none.
  std::shared_ptr<Strategy> host;
  bool refine_logits = true;
  // Whether the host's own per-location loss is weighted by this step's DAM region mask
  // (DistillContext::location_mask; hosts with accepts_location_mask(): fitnet, at).
  bool mask_host = false;
};

// The augmentation policy's state, a module of buffers only (kept out of the student's optimizer):
// probability [S, 2], magnitude [S, 2], weight [S] (sub-policy logits; S = 36 pairs of the 9 ops, or
// the pairs of the ops the config allows), their Adam moments
// adam_m_* / adam_v_* and adam_step. In a checkpoint: term.<name>.policy.probability, ...
// With the "relax" estimator the policy also holds the control variate c_φ, submodule "q_func" (type
// QFunc) of buffers h1_weight [hidden, 3S], h1_bias, out_weight [1, hidden], out_bias [1] and their
// Adam moments (term.<name>.policy.q_func.h1_weight, ...).
class AugmentationPolicy : public Module {
 public:
  explicit AugmentationPolicy(std::string type = "AugmentationPolicy") : Module(std::move(type)) {}
  Tensor forward(const Tensor&) override;  // not a layer: an error
  using Module::buffer;
  using Module::register_buffer;
  using Module::register_module;
};

class SokdStrategy final : public Strategy {
 public:
  explicit SokdStrategy(SokdOptions o);
  std::vector<std::string> student_taps() const override;
  std::vector<std::string> teacher_taps() const override;
  void resolve_stage_aliases(const Module& student, const Module* teacher) override;  // its own and the host's
  void build(const TapShapes& shapes, Generator& gen) override;
  Tensor compute(const DistillContext& ctx) override;
  std::vector<std::pair<std::string, Tensor>> compute_parts(const DistillContext& ctx) override;
  void after_step(const TrainProgress& progress) override;
  void set_training_data(const Dataset& train) override {
    if (o_.host) o_.host->set_training_data(train);
  }
  std::optional<UnrolledSettings> unrolled_search(const TrainProgress& progress) const override;
  bool wants_held_out() const override { return o_.search == "second_order" && o_.upper_batch == "held_out"; }
  std::vector<Tensor*> search_parameters() override;  // probability, magnitude, weight
  void set_upper_level(bool on) override { upper_level_ = on; }
  void search_step(const std::vector<Tensor>& gradients, const TrainProgress& progress) override;
  Json params() const override;
  // mask, boxes, scores, heatmap_classes (of the regions), student (ConvReg output), teacher (the
  // tapped feature), augmented_teacher and, with a host reading logits, refined_teacher_logits and
  // teacher_logits; then the host's own views as "host.<name>". The text names the sampled sub-policy
  // and its ops.
  std::vector<std::pair<std::string, Tensor>> inspect() const override;
  std::string inspect_text() const override;
  std::vector<std::string> relation_views() const override;  // the host's, as "host.<name>"

  // The latest step's regions, augmented teacher feature and sample (for inspection and tests).
  const DamRegions& last_regions() const { return last_regions_; }
  const Tensor& last_augmented() const { return last_augmented_; }
  // The host's teacher logits of the latest step when they were refined (else undefined).
  const Tensor& last_refined_logits() const { return last_refined_logits_; }
  Strategy* host() const { return o_.host.get(); }
  // Whether this term computes its own masked feature and DAM losses: always without a host; with one,
  // only when feat_weight or dam_weight is non-zero (else the regressor and DAM are not built).
  bool own_losses() const { return !o_.host || o_.feat_weight > 0 || o_.dam_weight > 0; }
  int64_t last_sub_policy() const { return last_b_; }
  std::array<bool, 2> last_applied() const { return last_applied_; }
  // The sub-policies (pairs of ops; 36 by default) the policy tensors index.
  const std::vector<std::array<FeatureOp, 2>>& sub_policies() const { return policies_; }
  // Whether the policy is being searched at this point: augmentation on, a search mode, within search_epochs.
  bool searching(const TrainProgress& p) const {
    return o_.augment && o_.search != "none" && p.epoch < o_.search_epochs;
  }
  // The implicit gradients the latest second-order search step used (probability, magnitude, weight).
  const std::vector<Tensor>& last_upper_gradient() const { return last_upper_gradient_; }
  // The "relax" estimator: the control variate as it is now, the latest draw's latents, and the latest
  // estimate (first order: the step's; second order: the θ− pass's).
  RelaxControlVariate control_variate() const;
  const RelaxLatents& last_latents() const { return last_latents_; }
  const RelaxEstimate& last_relax() const { return last_relax_; }
  std::vector<Tensor> search_gradients(double loss) override;

 private:
  // One step's draw: the sub-policy, its ops' flags and the noise that made them (for the relaxations).
  struct Draw {
    int64_t b = 0;
    std::array<bool, 2> on{};
    std::vector<double> gumbel;
    std::array<double, 2> noise{};
  };
  Draw draw(Generator& gen) const;
  // How augment() applies the drawn sub-policy: Plain skips the ops not drawn; Relaxed computes both
  // ops and carries the straight-through factors that give the policy its gradients; Hard computes both
  // (the same random draws as Relaxed) but applies only the drawn ones, without the factors — the
  // second-order search's upper level (the dev code's augmenting=False).
  enum class Mode { Plain, Relaxed, Hard };
  // f through the drawn sub-policy (feature maps [B, C, H, W]; [B, C] is treated as [B, C, 1, 1]).
  Tensor augment(const Tensor& f, const Draw& d, Mode mode, Generator& gen);
  // One Adam step of the policy with these gradients (probability, magnitude, weight; undefined = none)
  // and, when given, of the control variate (∇φ, in relax.h's order).
  void policy_step(const std::vector<Tensor>& gradients, const std::vector<double>& control_gradient = {});
  bool relax() const { return o_.estimator == "relax"; }
  // The RELAX estimate for loss value f on the latest draw, with the policy as it is now.
  RelaxEstimate relax_estimate_for(double f) const;

  SokdOptions o_;
  std::vector<std::array<FeatureOp, 2>> policies_;
  std::shared_ptr<ConvReg> regressor_;
  std::shared_ptr<DistinctiveAreaDetector> dam_;
  std::shared_ptr<AugmentationPolicy> policy_;
  uint64_t seed_ = 0;
  DamRegions last_regions_;
  Tensor last_augmented_, last_student_, last_teacher_, last_refined_logits_, last_teacher_logits_;
  int64_t last_b_ = -1;
  std::array<bool, 2> last_applied_{};
  bool upper_level_ = false;
  std::vector<Tensor> last_upper_gradient_;
  std::shared_ptr<AugmentationPolicy> q_func_;  // "relax" only
  RelaxLatents last_latents_;
  RelaxEstimate last_relax_;
  Tensor last_own_loss_;  // first order, "relax": this term's latest loss (weighted by its own weights)
  double last_weight_ = 1.0, last_f_ = 0.0;
  std::vector<double> control_gradient_sum_;  // second order, "relax": ∇φ summed over the θ± passes
  int control_gradient_count_ = 0;
};

}  // namespace retort
