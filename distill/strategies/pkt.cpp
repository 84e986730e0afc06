// "pkt": probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018; RepDistiller's PKT.py): the KL
// divergence between the teacher's and the student's conditional distributions over the batch, built
// from cosine similarities of one feature (pkt_loss, distill/nodes/relation.h). Default tap: ":pooled"
// in both (RepDistiller's feat[-1], the pooled vector the classifier reads); any tap may be named.
#include "distill/nodes/relation.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"

namespace retort {

namespace {
class PKTStrategy final : public Strategy {
 public:
  PKTStrategy(std::string s_tap, std::string t_tap)
      : Strategy("pkt"), s_tap_(std::move(s_tap)), t_tap_(std::move(t_tap)) {}
  std::vector<std::string> student_taps() const override { return {s_tap_}; }
  std::vector<std::string> teacher_taps() const override { return {t_tap_}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, &s_tap_, t_tap_);
  }
  bool uses_teacher_logits() const override { return false; }
  Tensor compute(const DistillContext& ctx) override {
    const Tensor &fs = ctx.student_feature(s_tap_), &ft = ctx.teacher_feature(t_tap_);
    last_s_ = fs.detach(), last_t_ = ft.detach();  // shares storage: the maps are made only if inspected
    return pkt_loss(fs, ft);
  }
  // The two conditional distributions over the latest batch, and how well they agree.
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    if (!last_s_.defined() || last_s_.size(0) < 2) return {};
    NoGradGuard ng;
    return {{"student_probabilities", pkt_probabilities(last_s_)}, {"teacher_probabilities", pkt_probabilities(last_t_)}};
  }
  std::vector<std::string> relation_views() const override { return {"student_probabilities", "teacher_probabilities"}; }
  std::string inspect_text() const override {
    const auto maps = inspect();
    return maps.empty() ? "" : "probabilities, student vs teacher: " + relation_agreement(maps[0].second, maps[1].second);
  }
  Json params() const override { return {{"student_tap", s_tap_}, {"teacher_tap", t_tap_}}; }

 private:
  std::string s_tap_, t_tap_;
  Tensor last_s_, last_t_;
};
}  // namespace

void register_pkt_strategy() {
  register_strategy("pkt", [](JsonReader& p) {
    const std::string s = p.get<std::string>("student_tap", ":pooled");
    return std::make_shared<PKTStrategy>(s, p.get<std::string>("teacher_tap", s));
  });
}

}  // namespace retort
