// "at": attention transfer (methods.md §1.3): the sum over stages of the mean squared difference of
// L2-normalised attention maps mean_c(f^p). Default stages: "layer1", "layer2", "layer3" (CIFAR
// ResNets); other families name theirs (e.g. WRN "block1".."block3", VGG "block1".."block4").
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class ATStrategy final : public Strategy {
 public:
  ATStrategy(std::vector<std::string> s, std::vector<std::string> t, double p)
      : Strategy("at"), s_taps_(std::move(s)), t_taps_(std::move(t)), p_(p) {}
  std::vector<std::string> student_taps() const override { return s_taps_; }
  std::vector<std::string> teacher_taps() const override { return t_taps_; }
  bool uses_teacher_logits() const override { return false; }
  Tensor compute(const DistillContext& ctx) override {
    Tensor total;
    for (size_t i = 0; i < s_taps_.size(); ++i) {
      Tensor l = at_loss(ctx.student_feature(s_taps_[i]), ctx.teacher_feature(t_taps_[i]), p_);
      total = total.defined() ? add(total, l) : l;
    }
    return total;
  }
  Json params() const override { return {{"student_taps", s_taps_}, {"teacher_taps", t_taps_}, {"p", p_}}; }

 private:
  std::vector<std::string> s_taps_, t_taps_;
  double p_;
};
}  // namespace

void register_at_strategy() {
  register_strategy("at", [](JsonReader& p) {
    const std::vector<std::string> def{"layer1", "layer2", "layer3"};
    auto s = p.get<std::vector<std::string>>("student_taps", def);
    auto t = p.get<std::vector<std::string>>("teacher_taps", s);
    RETORT_CHECK(!s.empty() && s.size() == t.size(), p.where("teacher_taps"), ": ", t.size(), " teacher taps for ",
                 s.size(), " student taps (one per stage, same count)");
    const double pw = p.get<double>("p", 2.0);
    return std::make_shared<ATStrategy>(std::move(s), std::move(t), pw);
  });
}

}  // namespace retort
