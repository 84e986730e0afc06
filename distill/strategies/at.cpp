// "at": attention transfer (methods.md §1.3): the sum over stages of the mean squared difference of
// L2-normalised attention maps mean_c(f^p). Default "stages": every stage of each network
// (layer1..layer3 on a CIFAR ResNet, WRN block1..block3, VGG block1..block4; layers/module.h). With a
// location mask M (SoKD's DAM regions, "mask_host"): mean_{b,i} ((q_s − q_t)[b, i] · M[b, i])² per
// stage, M brought to the stage's size — at_loss when M is all ones.
#include <cmath>

#include "distill/nodes/feature.h"
#include "distill/nodes/sokd.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class ATStrategy final : public StageStrategy {
 public:
  ATStrategy(StageTaps taps, double p) : StageStrategy("at", std::move(taps)), p_(p) {}
  bool accepts_location_mask() const override { return true; }
  Tensor compute(const DistillContext& ctx) override {
    return sum_over_stages([&](size_t i) {
      const Tensor& fs = ctx.student_feature(s_taps_[i]);
      const Tensor& ft = ctx.teacher_feature(t_taps_[i]);
      if (!ctx.location_mask) return at_loss(fs, ft, p_);
      // at_loss with the map difference weighted per location
      const auto [s, t] = pool_to_common_size(fs, ft);
      const int64_t b = s.size(0), h = s.size(2), w = s.size(3);
      return masked_feature_mse(reshape(attention_map(s, p_), {b, 1, h, w}), reshape(attention_map(t, p_), {b, 1, h, w}),
                                location_mask_at(*ctx.location_mask, h, w));
    });
  }
  Json params() const override { return stage_params({{"p", p_}}); }

 private:
  double p_;
};
}  // namespace

void register_at_strategy() {
  register_strategy("at", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {"stages"});
    const double pw = p.get<double>("p", 2.0);
    RETORT_CHECK(std::isfinite(pw) && pw >= 1, p.where("p"), ": must be a number of at least 1, got ", pw,
                 " (f^p's derivative is infinite at 0 below 1)");
    return std::make_shared<ATStrategy>(std::move(taps), pw);
  });
}

}  // namespace retort
