// "rkd": relational KD (Park et al., CVPR 2019; RepDistiller's RKD.py): smooth-L1 between the student's
// and the teacher's mean-normalised pairwise distances (weight distance_weight, default 25) and
// triplet angles (angle_weight, default 50) of one feature (rkd_loss, distill/nodes/relation.h).
// Default tap: ":pooled" in both (RepDistiller's feat[-1]). The angle part holds a [B, B, D] tensor per
// network (B the batch, D the feature's width): 128 × 128 × 256 floats is 16 MiB.
#include <cmath>

#include "distill/nodes/relation.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"

namespace retort {

namespace {
class RKDStrategy final : public Strategy {
 public:
  RKDStrategy(std::string s_tap, std::string t_tap, double wd, double wa)
      : Strategy("rkd"), s_tap_(std::move(s_tap)), t_tap_(std::move(t_tap)), wd_(wd), wa_(wa) {}
  std::vector<std::string> student_taps() const override { return {s_tap_}; }
  std::vector<std::string> teacher_taps() const override { return {t_tap_}; }
  void resolve_stage_aliases(const Module& student, const Module* teacher) override {
    resolve_tap_pair(*this, student, teacher, &s_tap_, t_tap_);
  }
  bool uses_teacher_logits() const override { return false; }
  Tensor compute(const DistillContext& ctx) override {
    const Tensor &fs = ctx.student_feature(s_tap_), &ft = ctx.teacher_feature(t_tap_);
    last_s_ = fs.detach(), last_t_ = ft.detach();  // shares storage: the maps are made only if inspected
    return rkd_loss(fs, ft, wd_, wa_);
  }
  // Both networks' normalised distances and angles on the latest batch, and how well they agree.
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    if (!last_s_.defined() || last_s_.size(0) < 2) return {};
    NoGradGuard ng;
    return {{"student_distances", rkd_distances(last_s_)}, {"teacher_distances", rkd_distances(last_t_)},
            {"student_angles", rkd_angles(last_s_)}, {"teacher_angles", rkd_angles(last_t_)}};
  }
  std::vector<std::string> relation_views() const override { return {"student_distances", "teacher_distances"}; }
  std::string inspect_text() const override {
    const auto maps = inspect();
    if (maps.empty()) return "";
    return "student vs teacher: distances " + relation_agreement(maps[0].second, maps[1].second) + "; angles " +
           relation_agreement(maps[2].second, maps[3].second);
  }
  Json params() const override {
    return {{"student_tap", s_tap_}, {"teacher_tap", t_tap_}, {"distance_weight", wd_}, {"angle_weight", wa_}};
  }

 private:
  std::string s_tap_, t_tap_;
  double wd_, wa_;
  Tensor last_s_, last_t_;
};
}  // namespace

void register_rkd_strategy() {
  register_strategy("rkd", [](JsonReader& p) {
    const std::string s = p.get<std::string>("student_tap", ":pooled");
    const std::string t = p.get<std::string>("teacher_tap", s);
    const double wd = p.get<double>("distance_weight", 25.0), wa = p.get<double>("angle_weight", 50.0);
    RETORT_CHECK(std::isfinite(wd) && wd >= 0, p.where("distance_weight"), ": must be >= 0, got ", wd);
    RETORT_CHECK(std::isfinite(wa) && wa >= 0, p.where("angle_weight"), ": must be >= 0, got ", wa);
    RETORT_CHECK(wd + wa > 0, p.where("angle_weight"), ": distance_weight and angle_weight are both 0 (nothing to distil)");
    return std::make_shared<RKDStrategy>(s, t, wd, wa);
  });
}

}  // namespace retort
