// "kd": Hinton KD, T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) averaged over the batch (methods.md
// §1.1), optionally on z-scored logits (logit standardization, methods.md §1.5: the base temperature
// then multiplies each network's per-sample logit std). Defaults: T = 4 (T_b = 2 with "logit_standardization": true).
#include "distill/nodes/logit.h"
#include "distill/strategies/strategies.h"

namespace retort {

namespace {
class KDStrategy final : public Strategy {
 public:
  KDStrategy(double t, bool ls) : Strategy("kd"), temperature_(t), ls_(ls) {}
  Tensor compute(const DistillContext& ctx) override {
    if (!ls_) return kd_loss(ctx.student_logits, ctx.teacher_logits, temperature_);
    return kd_loss(zscore(ctx.student_logits), zscore(ctx.teacher_logits), temperature_);
  }
  Json params() const override { return {{"temperature", temperature_}, {"logit_standardization", ls_}}; }

 private:
  double temperature_;
  bool ls_;
};
}  // namespace

void register_kd_strategy() {
  register_strategy("kd", [](JsonReader& p) {
    const bool ls = p.get<bool>("logit_standardization", false);
    const double t = p.get<double>("temperature", ls ? 2.0 : 4.0);
    RETORT_CHECK(t > 0, p.where("temperature"), ": must be positive, got ", t);
    return std::make_shared<KDStrategy>(t, ls);
  });
}

}  // namespace retort
