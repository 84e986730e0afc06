// "nst": neuron selectivity transfer (Huang & Wang, 2017; RepDistiller's NST.py). For each stage pair,
// each channel's activation map over the positions is L2-normalised and the two networks' sets of
// channel maps are compared by the squared maximum mean discrepancy under the polynomial kernel
// k(a, b) = ⟨a, b⟩² (nst_loss, distill/nodes/feature.h); summed over stages. Channels may differ (the
// kernel compares maps, not channels one to one), so no connector; where the sizes differ the larger
// map is adaptive-avg-pooled to the smaller. Default "stages" in both (every stage:
// RepDistiller's feat[1:-1]; "layer1".."layer3" on a CIFAR ResNet, WRN "block1".."block3"). RepDistiller's weight: 50.
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class NSTStrategy final : public StageStrategy {
 public:
  explicit NSTStrategy(StageTaps taps) : StageStrategy("nst", std::move(taps)) {}
  Tensor compute(const DistillContext& ctx) override {
    return sum_over_stages(
        [&](size_t i) { return nst_loss(ctx.student_feature(s_taps_[i]), ctx.teacher_feature(t_taps_[i])); });
  }
  Json params() const override { return stage_params(); }
};
}  // namespace

void register_nst_strategy() {
  register_strategy("nst", [](JsonReader& p) {
    return std::make_shared<NSTStrategy>(read_stage_taps(p, {"stages"}));
  });
}

}  // namespace retort
