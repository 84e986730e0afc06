// "dkd": Decoupled KD (methods.md §1.4): (T^2/B)(alpha TCKD + beta NCKD), computed with exact masked
// log-sum-exp; optionally on z-scored logits (DKD+LS, methods.md §1.5). Defaults: alpha 1, beta 8,
// T 4 (T 2 with "logit_standardization"). The reference's 20-epoch warmup is the term's "warmup_epochs", not a param.
#include "distill/nodes/logit.h"
#include "distill/strategies/strategies.h"

namespace retort {

namespace {
class DKDStrategy final : public Strategy {
 public:
  DKDStrategy(double alpha, double beta, double t, bool ls)
      : Strategy("dkd"), alpha_(alpha), beta_(beta), temperature_(t), ls_(ls) {}
  Tensor compute(const DistillContext& ctx) override {
    const Tensor zs = ls_ ? zscore(ctx.student_logits) : ctx.student_logits;
    const Tensor zt = ls_ ? zscore(ctx.teacher_logits) : ctx.teacher_logits;
    return dkd_loss(zs, zt, ctx.targets, alpha_, beta_, temperature_);
  }
  Json params() const override {
    return {{"alpha", alpha_}, {"beta", beta_}, {"temperature", temperature_}, {"logit_standardization", ls_}};
  }

 private:
  double alpha_, beta_, temperature_;
  bool ls_;
};
}  // namespace

void register_dkd_strategy() {
  register_strategy("dkd", [](JsonReader& p) {
    const bool ls = p.get<bool>("logit_standardization", false);
    const double alpha = p.get<double>("alpha", 1.0), beta = p.get<double>("beta", 8.0);
    const double t = p.get<double>("temperature", ls ? 2.0 : 4.0);
    RETORT_CHECK(t > 0, p.where("temperature"), ": must be positive, got ", t);
    RETORT_CHECK(alpha >= 0 && beta >= 0, p.where("alpha"), ": alpha and beta must be >= 0");
    return std::make_shared<DKDStrategy>(alpha, beta, t, ls);
  });
}

}  // namespace retort
