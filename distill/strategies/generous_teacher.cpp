// "generous_teacher": the distillation term that trains a Generous Teacher (methods.md §3.3,
// docs/methods/generous_teacher.md). In that phase the network being trained ("model") is the
// generous teacher and the run's "teacher" is the standard teacher it learns from; the term is
// generous_teacher_loss (logit.h): z-scored logits of both (temperature = k · each row's own std),
// decoupled KD at base temperature k keeping the non-target part, optionally only on samples the
// standard teacher classifies correctly. Its weight in the config is λ_N. Phase 3 (the student) is
// any strategy with the generous teacher's checkpoint as its teacher: nothing else changes.
// Defaults: temperature (k) 2, tckd_weight 0, select "all", std_from "each" ("standard_teacher": both
// rows scaled by the standard teacher's std, the other reading of the paper).
#include <cmath>

#include "distill/nodes/logit.h"
#include "distill/strategies/strategies.h"

namespace retort {

namespace {
class GenerousTeacherStrategy final : public Strategy {
 public:
  GenerousTeacherStrategy(double k, double tckd_weight, bool only_correct, bool standard_std)
      : Strategy("generous_teacher"),
        k_(k),
        tckd_weight_(tckd_weight),
        only_correct_(only_correct),
        standard_std_(standard_std) {}
  Tensor compute(const DistillContext& ctx) override {
    return generous_teacher_loss(ctx.student_logits, ctx.teacher_logits, ctx.targets, k_, tckd_weight_, only_correct_,
                                 standard_std_);
  }
  Json params() const override {
    return {{"temperature", k_},
            {"tckd_weight", tckd_weight_},
            {"select", only_correct_ ? "teacher_correct" : "all"},
            {"std_from", standard_std_ ? "standard_teacher" : "each"}};
  }

 private:
  double k_, tckd_weight_;
  bool only_correct_, standard_std_;
};
}  // namespace

void register_generous_teacher_strategy() {
  register_strategy("generous_teacher", [](JsonReader& p) {
    const double k = p.get<double>("temperature", 2.0);
    RETORT_CHECK(std::isfinite(k) && k > 0, p.where("temperature"),
                 ": the multiple k of each row's logit std must be positive, got ", k);
    const double tckd = p.get<double>("tckd_weight", 0.0);
    RETORT_CHECK(std::isfinite(tckd) && tckd >= 0, p.where("tckd_weight"), ": must be >= 0, got ", tckd);
    const std::string select = p.get<std::string>("select", "all");
    RETORT_CHECK(select == "all" || select == "teacher_correct", p.where("select"),
                 ": expected \"all\" or \"teacher_correct\", got \"", select, "\"");
    const std::string std_from = p.get<std::string>("std_from", "each");
    RETORT_CHECK(std_from == "each" || std_from == "standard_teacher", p.where("std_from"),
                 ": expected \"each\" (each network's own logit std) or \"standard_teacher\", got \"", std_from, "\"");
    return std::make_shared<GenerousTeacherStrategy>(k, tckd, select == "teacher_correct", std_from == "standard_teacher");
  });
}

}  // namespace retort
