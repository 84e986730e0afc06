// "nst": neuron selectivity transfer (Huang & Wang, 2017; RepDistiller's NST.py). For each stage pair,
// each channel's activation map over the positions is L2-normalised and the two networks' sets of
// channel maps are compared by the squared maximum mean discrepancy under the polynomial kernel
// k(a, b) = ⟨a, b⟩² (nst_loss, distill/nodes/feature.h); summed over stages. Channels may differ (the
// kernel compares maps, not channels one to one), so no connector; where the sizes differ the larger
// map is adaptive-avg-pooled to the smaller. Default stages "layer1", "layer2", "layer3" in both
// (RepDistiller's feat[1:-1] for CIFAR ResNets; WRN "block1".."block3"). RepDistiller's weight: 50.
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class NSTStrategy final : public Strategy {
 public:
  NSTStrategy(std::vector<std::string> s, std::vector<std::string> t)
      : Strategy("nst"), s_taps_(std::move(s)), t_taps_(std::move(t)) {}
  std::vector<std::string> student_taps() const override { return s_taps_; }
  std::vector<std::string> teacher_taps() const override { return t_taps_; }
  bool uses_teacher_logits() const override { return false; }
  Tensor compute(const DistillContext& ctx) override {
    Tensor total;
    for (size_t i = 0; i < s_taps_.size(); ++i) {
      const Tensor l = nst_loss(ctx.student_feature(s_taps_[i]), ctx.teacher_feature(t_taps_[i]));
      total = total.defined() ? add(total, l) : l;
    }
    return total;
  }
  Json params() const override { return {{"student_taps", s_taps_}, {"teacher_taps", t_taps_}}; }

 private:
  std::vector<std::string> s_taps_, t_taps_;
};
}  // namespace

void register_nst_strategy() {
  register_strategy("nst", [](JsonReader& p) {
    auto [s, t] = read_stage_taps(p, {"layer1", "layer2", "layer3"});
    return std::make_shared<NSTStrategy>(std::move(s), std::move(t));
  });
}

}  // namespace retort
