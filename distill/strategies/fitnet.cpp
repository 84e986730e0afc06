// "fitnet": FitNets hint loss (methods.md §1.2): MSE between ConvReg(student feature) and the teacher
// feature at one stage (default "stage2" in both — each network's feats[2]: "layer2" on a CIFAR
// ResNet, "block2" on WRN/VGG, "blocks.2" on MobileNetV2). The ConvReg regressor is this term's trainable module.
#include "distill/connectors.h"
#include "distill/nodes/sokd.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class FitNetStrategy final : public Strategy {
 public:
  FitNetStrategy(std::string s_tap, std::string t_tap)
      : Strategy("fitnet"), s_tap_(std::move(s_tap)), t_tap_(std::move(t_tap)) {}
  std::vector<std::string> student_taps() const override { return {s_tap_}; }
  std::vector<std::string> teacher_taps() const override { return {t_tap_}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, &s_tap_, t_tap_);
  }
  bool uses_teacher_logits() const override { return false; }
  bool accepts_location_mask() const override { return true; }
  void build(const TapShapes& shapes, Generator& gen) override {
    try {
      regressor_ = register_module("regressor",
                                   std::make_shared<ConvReg>(shapes.of_student(s_tap_), shapes.of_teacher(t_tap_), gen));
    } catch (const Error& e) {
      RETORT_FAIL("student tap '", s_tap_, "' to teacher tap '", t_tap_, "': ", e.what());
    }
  }
  Tensor compute(const DistillContext& ctx) override {
    const Tensor fs = (*regressor_)(ctx.student_feature(s_tap_));
    const Tensor& ft = ctx.teacher_feature(t_tap_);
    if (!ctx.location_mask) return mse_loss(fs, ft);
    return masked_feature_mse(fs, ft, location_mask_at(*ctx.location_mask, ft.size(2), ft.size(3)));
  }
  Json params() const override { return {{"student_tap", s_tap_}, {"teacher_tap", t_tap_}}; }

 private:
  std::string s_tap_, t_tap_;
  std::shared_ptr<ConvReg> regressor_;
};
}  // namespace

void register_fitnet_strategy() {
  register_strategy("fitnet", [](JsonReader& p) {
    const std::string s = p.get<std::string>("student_tap", "stage2");
    return std::make_shared<FitNetStrategy>(s, p.get<std::string>("teacher_tap", s));
  });
}

}  // namespace retort
