// "sp": similarity-preserving KD (Tung & Mori, ICCV 2019; RepDistiller's SP.py): for each stage pair,
// the mean squared difference of the student's and the teacher's row-normalised batch Gram matrices
// (sp_loss, distill/nodes/relation.h). Default stage: "layer3" in both (RepDistiller's feat[-2], the
// last stage's output, for CIFAR ResNets; WRN "block3", VGG "block4" — name the stage of other families).
// The widths of the two sides may differ: only the B×B similarities are compared, so no connector.
#include "distill/nodes/relation.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {
class SPStrategy final : public Strategy {
 public:
  SPStrategy(std::vector<std::string> s, std::vector<std::string> t)
      : Strategy("sp"), s_taps_(std::move(s)), t_taps_(std::move(t)) {}
  std::vector<std::string> student_taps() const override { return s_taps_; }
  std::vector<std::string> teacher_taps() const override { return t_taps_; }
  bool uses_teacher_logits() const override { return false; }
  Tensor compute(const DistillContext& ctx) override {
    Tensor total;
    last_.clear();
    for (size_t i = 0; i < s_taps_.size(); ++i) {
      const Tensor &fs = ctx.student_feature(s_taps_[i]), &ft = ctx.teacher_feature(t_taps_[i]);
      last_.emplace_back(fs.detach(), ft.detach());  // shares storage: the maps are made only if inspected
      const Tensor l = sp_loss(fs, ft);
      total = total.defined() ? add(total, l) : l;
    }
    return total;
  }
  // Each stage's two similarity matrices on the latest batch, and how well they agree.
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    NoGradGuard ng;
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < last_.size() && last_[i].first.size(0) > 1; ++i) {
      out.emplace_back("student_similarity." + s_taps_[i], similarity_matrix(last_[i].first));
      out.emplace_back("teacher_similarity." + t_taps_[i], similarity_matrix(last_[i].second));
    }
    return out;
  }
  std::vector<std::string> relation_views() const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < s_taps_.size(); ++i) {
      out.push_back("student_similarity." + s_taps_[i]);
      out.push_back("teacher_similarity." + t_taps_[i]);
    }
    return out;
  }
  std::string inspect_text() const override {
    const auto maps = inspect();
    std::string text;
    for (size_t i = 0; i + 1 < maps.size(); i += 2)
      text += (text.empty() ? "" : "; ") + s_taps_[i / 2] + " similarities, student vs teacher: " +
              relation_agreement(maps[i].second, maps[i + 1].second);
    return text;
  }
  Json params() const override { return {{"student_taps", s_taps_}, {"teacher_taps", t_taps_}}; }

 private:
  std::vector<std::string> s_taps_, t_taps_;
  std::vector<std::pair<Tensor, Tensor>> last_;  // the latest batch's (student, teacher) feature per stage
};
}  // namespace

void register_sp_strategy() {
  register_strategy("sp", [](JsonReader& p) {
    auto [s, t] = read_stage_taps(p, {"layer3"});
    return std::make_shared<SPStrategy>(std::move(s), std::move(t));
  });
}

}  // namespace retort
