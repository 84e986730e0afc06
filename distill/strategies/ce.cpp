// "ce": cross-entropy of the student's logits with the labels (optional label smoothing). The term
// every distillation run has, and the whole loss of a baseline student.
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class CrossEntropyStrategy final : public Strategy {
 public:
  explicit CrossEntropyStrategy(double label_smoothing) : Strategy("ce"), label_smoothing_(label_smoothing) {}
  bool needs_teacher() const override { return false; }
  Tensor compute(const DistillContext& ctx) override {
    return cross_entropy(ctx.student_logits, ctx.targets, label_smoothing_);
  }
  Json params() const override { return {{"label_smoothing", label_smoothing_}}; }

 private:
  double label_smoothing_;
};
}  // namespace

void register_ce_strategy() {
  register_strategy("ce", [](JsonReader& p) {
    const double ls = p.get<double>("label_smoothing", 0.0);
    RETORT_CHECK(ls >= 0 && ls < 1, p.where("label_smoothing"), ": must be in [0, 1), got ", ls);
    return std::make_shared<CrossEntropyStrategy>(ls);
  });
}

}  // namespace retort
