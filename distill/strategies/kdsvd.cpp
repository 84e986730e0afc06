// "kdsvd": self-supervised knowledge distillation using singular value decomposition (Lee et al.,
// ECCV 2018; mdistiller's KDSVD.py, docs/methods/kdsvd.md). Each tap's map is summarised by its top
// right singular vectors (the map viewed as [B, C·H, W]); the student's, aligned in sign and order to
// the teacher's, are compared through a Gaussian kernel between consecutive taps (kdsvd_loss,
// distill/nodes/kdsvd.h). Default taps "layer1", "layer2", "layer3" (mdistiller's feats[1:] for CIFAR
// ResNets), k = 1 teacher vector per tap (mdistiller's KDSVD.K; the student offers k + 3 candidates).
// Widths must match at every tap (the vectors have one entry per column); channels may differ. The
// reference's weight is 1 (KDSVD.LOSS.FEAT_WEIGHT) beside CE.
#include <cmath>

#include "distill/nodes/kdsvd.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {
class KDSVDStrategy final : public StageStrategy {
 public:
  KDSVDStrategy(StageTaps taps, int64_t k) : StageStrategy("kdsvd", std::move(taps)), k_(k) {}

  void build(const TapShapes& shapes, Generator&) override {
    for (size_t i = 0; i < stages(); ++i) {
      const auto [s, t] = map_shapes(shapes, i);
      RETORT_CHECK(s[3] == t[3], stage_label(i), ": KDSVD compares right singular vectors, one entry per column of ",
                   "the map, so both maps need the same width, got student ", shape_str(s), " and teacher ", shape_str(t));
      RETORT_CHECK(k_ <= t[3], stage_label(i), ": k = ", k_, " singular vectors, but the map is only ", t[3],
                   " wide: ", shape_str(t));
    }
  }

  Tensor compute(const DistillContext& ctx) override {
    std::vector<Tensor> fs, ft;
    for (size_t i = 0; i < stages(); ++i) {
      fs.push_back(ctx.student_feature(s_taps_[i]));
      ft.push_back(ctx.teacher_feature(t_taps_[i]));
    }
    last_.clear();
    const Tensor loss = kdsvd_loss(fs, ft, k_, &last_);
    for (auto& v : last_) v.student = v.student.detach();  // [B, W, k]: kept for inspect(), no graph
    return loss;
  }
  // Each tap's compared singular vectors on the latest batch ([B, W, k], scaled by the teacher's
  // normalised singular values; the student's aligned to the teacher's).
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < last_.size(); ++i) {
      out.emplace_back("student_vectors." + s_taps_[i], last_[i].student);
      out.emplace_back("teacher_vectors." + t_taps_[i], last_[i].teacher);
    }
    return out;
  }
  // How far the student's top singular vectors are from the teacher's: the mean over the batch of
  // |cos| between the two (1 = the same direction), per tap.
  std::string inspect_text() const override {
    NoGradGuard ng;
    std::string text;
    for (size_t i = 0; i < last_.size(); ++i) {
      const Tensor &s = last_[i].student, &t = last_[i].teacher;
      const Tensor dot = sum(mul(s, t), {1}), ns = sqrt(sum(mul(s, s), {1})), nt = sqrt(sum(mul(t, t), {1}));
      const double c = mean(abs(div(dot, clamp(mul(ns, nt), 1e-12, 1e300)))).item();
      text += (text.empty() ? "" : "; ") + s_taps_[i] + " singular vectors |cos| student vs teacher " +
              detail::cat(std::round(c * 1000) / 1000);
    }
    return text;
  }
  Json params() const override { return stage_params({{"k", k_}}); }

 private:
  int64_t k_;
  std::vector<KdsvdVectors> last_;  // the latest batch's compared vectors per tap
};
}  // namespace

void register_kdsvd_strategy() {
  register_strategy("kdsvd", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {"layer1", "layer2", "layer3"});
    RETORT_CHECK(taps.student.size() >= 2, p.where("student_taps"), ": KDSVD relates consecutive taps, so it needs ",
                 "at least 2, got ", taps.student.size());
    const int64_t k = p.get<int64_t>("k", 1);
    RETORT_CHECK(k >= 1, p.where("k"), ": the number of singular vectors must be >= 1, got ", k);
    return std::make_shared<KDSVDStrategy>(std::move(taps), k);
  });
}

}  // namespace retort
