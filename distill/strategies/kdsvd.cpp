// "kdsvd": self-supervised knowledge distillation using singular value decomposition (Lee et al.,
// ECCV 2018; RepDistiller's and mdistiller's KDSVD.py, docs/methods/kdsvd.md). Each tap's map is
// summarised by its top right singular vectors; the student's, aligned in sign and order to the
// teacher's, are compared through a Gaussian kernel between consecutive taps (kdsvd_loss,
// distill/nodes/kdsvd.h). Default taps "stages" (the references' feats: "layer1".."layer3" on CIFAR
// ResNets), k = 1 teacher vector per tap (the student offers k + 3 candidates), view "channels" (the
// paper's and RepDistiller's [B, H·W, C]: the two networks need the same channels at every tap);
// "width" is mdistiller's [B, C·H, W] (the same widths instead). The references' weight is 1 beside CE.
// gap_eps (default 1e-3; 0 = the references' exact gradient) damps the student's gradient near
// repeated singular values (eigh's gap_eps), which otherwise can wreck a run in one step.
#include <cmath>

#include "distill/nodes/kdsvd.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {
class KDSVDStrategy final : public StageStrategy {
 public:
  KDSVDStrategy(StageTaps taps, int64_t k, KdsvdView view, double gap_eps)
      : StageStrategy("kdsvd", std::move(taps)), k_(k), view_(view), gap_eps_(gap_eps) {
    min_taps_ = 2;  // consecutive taps are related
  }

  void build(const TapShapes& shapes, Generator&) override {
    const bool ch = view_ == KdsvdView::Channels;
    const size_t d = ch ? 1 : 3;  // the dimension the vectors run along
    for (size_t i = 0; i < stage_count(); ++i) {
      const auto [s, t] = map_shapes(shapes, i);
      RETORT_CHECK(s[d] == t[d], stage_label(i), ": KDSVD compares right singular vectors, one entry per ",
                   ch ? "channel (view \"channels\"), so both maps need the same channels" :
                        "column of the map (view \"width\"), so both maps need the same width",
                   ", got student ", shape_str(s), " and teacher ", shape_str(t),
                   ch ? " (pair networks of equal widths, e.g. resnet32x4 -> resnet8x4, or use \"view\": \"width\")" : "");
      RETORT_CHECK(k_ <= t[d], stage_label(i), ": k = ", k_, " singular vectors, but the map has only ", t[d],
                   ch ? " channels: " : " columns: ", shape_str(t));
    }
  }

  Tensor compute(const DistillContext& ctx) override {
    std::vector<Tensor> fs, ft;
    for (size_t i = 0; i < stage_count(); ++i) {
      fs.push_back(ctx.student_feature(s_taps_[i]));
      ft.push_back(ctx.teacher_feature(t_taps_[i]));
    }
    last_.clear();
    const Tensor loss = kdsvd_loss(fs, ft, k_, view_, gap_eps_, &last_);
    for (auto& v : last_) v.student = v.student.detach();  // [B, W, k]: kept for inspect(), no graph
    return loss;
  }
  // Each tap's compared singular vectors on the latest batch ([B, n, k], scaled by the teacher's
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
  Json params() const override {
    return stage_params({{"k", k_}, {"view", kdsvd_view_name(view_)}, {"gap_eps", gap_eps_}});
  }

 private:
  int64_t k_;
  KdsvdView view_;
  double gap_eps_;
  std::vector<KdsvdVectors> last_;  // the latest batch's compared vectors per tap
};
}  // namespace

void register_kdsvd_strategy() {
  register_strategy("kdsvd", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {"stages"});
    RETORT_CHECK(taps.student.size() >= 2 || Module::expands_stages(taps.student), p.where("student_taps"),
                 ": KDSVD relates consecutive taps, so it needs ",
                 "at least 2, got ", taps.student.size());
    const int64_t k = p.get<int64_t>("k", 1);
    RETORT_CHECK(k >= 1, p.where("k"), ": the number of singular vectors must be >= 1, got ", k);
    const std::string view = p.get<std::string>("view", "channels");
    RETORT_CHECK(view == "channels" || view == "width", p.where("view"), ": expected \"channels\" (the paper's and ",
                 "RepDistiller's [B, H·W, C]) or \"width\" (mdistiller's [B, C·H, W]), got \"", view, "\"");
    // Our default, not the references' (exact, 0): with the exact gradient a Fashion-MNIST student
    // collapsed at step 110 (channels view), docs/methods/kdsvd.md.
    const double gap_eps = p.get<double>("gap_eps", 1e-3);
    RETORT_CHECK(std::isfinite(gap_eps) && gap_eps >= 0, p.where("gap_eps"), ": must be finite and >= 0, got ", gap_eps);
    return std::make_shared<KDSVDStrategy>(std::move(taps), k, view == "channels" ? KdsvdView::Channels : KdsvdView::Width,
                                           gap_eps);
  });
}

}  // namespace retort
