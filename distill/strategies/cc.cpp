// "cc": correlation congruence (Peng et al., ICCV 2019) as RepDistiller runs it (CC.py's Correlation,
// "the authors' code"): both networks' features at one tap (default ":pooled", RepDistiller's feat[-1])
// go through a trainable LinearEmbed — Linear(width, feat_dim) on the flattened feature, no
// normalisation — and the loss is Σ_d |e_s − e_t|[b, d] · |e_s − e_t|[b+1, d] averaged over the
// consecutive pairs of the batch (cc_loss, distill/nodes/relation.h). Both embeddings are trained,
// the teacher's too (RepDistiller puts embed_t in its trainable list). RepDistiller's weight: 0.02.
// This is not the paper's Gaussian-kernel correlation matrix; docs/methods/cc.md says why it is kept.
// Parameters embed_s.linear.{weight, bias}, embed_t.linear.* — key for key RepDistiller's LinearEmbed.
#include "distill/connectors.h"
#include "distill/nodes/relation.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"
#include "layers/layers.h"

namespace retort {

namespace {

class CCStrategy final : public Strategy {
 public:
  CCStrategy(std::string s, std::string t, int64_t feat_dim)
      : Strategy("cc"), s_tap_(std::move(s)), t_tap_(std::move(t)), feat_dim_(feat_dim) {}
  std::vector<std::string> student_taps() const override { return {s_tap_}; }
  std::vector<std::string> teacher_taps() const override { return {t_tap_}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, &s_tap_, t_tap_);
  }
  bool uses_teacher_logits() const override { return false; }
  void build(const TapShapes& shapes, Generator& gen) override {
    embed_s_ = register_module("embed_s", std::make_shared<LinearEmbed>(shapes.of_student(s_tap_), feat_dim_, false, gen));
    embed_t_ = register_module("embed_t", std::make_shared<LinearEmbed>(shapes.of_teacher(t_tap_), feat_dim_, false, gen));
  }
  Tensor compute(const DistillContext& ctx) override {
    return cc_loss((*embed_s_)(ctx.student_feature(s_tap_)), (*embed_t_)(ctx.teacher_feature(t_tap_)));
  }
  Json params() const override { return {{"student_tap", s_tap_}, {"teacher_tap", t_tap_}, {"feat_dim", feat_dim_}}; }

 private:
  std::string s_tap_, t_tap_;
  int64_t feat_dim_;
  std::shared_ptr<LinearEmbed> embed_s_, embed_t_;
};
}  // namespace

void register_cc_strategy() {
  register_strategy("cc", [](JsonReader& p) {
    const std::string s = p.get<std::string>("student_tap", ":pooled");
    const std::string t = p.get<std::string>("teacher_tap", s);
    const int64_t dim = p.get<int64_t>("feat_dim", 128);
    RETORT_CHECK(dim > 0, p.where("feat_dim"), ": must be positive, got ", dim);
    return std::make_shared<CCStrategy>(s, t, dim);
  });
}

}  // namespace retort
