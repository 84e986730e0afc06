// "cwd": channel-wise distillation (methods.md §1.6): per-channel spatial softmax at temperature tau,
// KL(teacher || student) scaled by tau^2 / (N C). When the channel counts differ the student goes
// through a 1x1 conv + BN adapter (the paper's alignment; its exact form is open, we take conv+BN).
// Default "stage-1": each network's last stage ("layer3" on a CIFAR ResNet); tau 4.
#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"

namespace retort {

namespace {
class CWDStrategy final : public Strategy {
 public:
  CWDStrategy(std::string s, std::string t, double tau)
      : Strategy("cwd"), s_tap_(std::move(s)), t_tap_(std::move(t)), tau_(tau) {}
  std::vector<std::string> student_taps() const override { return {s_tap_}; }
  std::vector<std::string> teacher_taps() const override { return {t_tap_}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, &s_tap_, t_tap_);
  }
  bool uses_teacher_logits() const override { return false; }
  void build(const TapShapes& shapes, Generator& gen) override {
    const Shape& s = shapes.of_student(s_tap_);
    const Shape& t = shapes.of_teacher(t_tap_);
    RETORT_CHECK(s.size() == 4 && t.size() == 4 && s[2] == t[2] && s[3] == t[3], "cwd: student ", s_tap_, " ",
                 shape_str(s), " and teacher ", t_tap_, " ", shape_str(t),
                 " need the same spatial size (pick stages that match)");
    if (s[1] != t[1]) adapter_ = register_module("adapter", std::make_shared<Adapter1x1>(s[1], t[1], false, gen));
  }
  Tensor compute(const DistillContext& ctx) override {
    Tensor fs = ctx.student_feature(s_tap_);
    if (adapter_) fs = (*adapter_)(fs);
    return cwd_loss(fs, ctx.teacher_feature(t_tap_), tau_);
  }
  Json params() const override { return {{"student_tap", s_tap_}, {"teacher_tap", t_tap_}, {"tau", tau_}}; }

 private:
  std::string s_tap_, t_tap_;
  double tau_;
  std::shared_ptr<Adapter1x1> adapter_;
};
}  // namespace

void register_cwd_strategy() {
  register_strategy("cwd", [](JsonReader& p) {
    const std::string s = p.get<std::string>("student_tap", "stage-1");
    const std::string t = p.get<std::string>("teacher_tap", s);
    const double tau = p.get<double>("tau", 4.0);
    RETORT_CHECK(tau > 0, p.where("tau"), ": must be positive");
    return std::make_shared<CWDStrategy>(s, t, tau);
  });
}

}  // namespace retort
