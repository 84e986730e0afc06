// "sp": similarity-preserving KD (Tung & Mori, ICCV 2019; RepDistiller's SP.py): for each stage pair,
// the mean squared difference of the student's and the teacher's row-normalised batch Gram matrices
// (sp_loss, distill/nodes/relation.h). Default stage: "stage-1" in both (RepDistiller's feat[-2], the
// last stage's output: "layer3" on a CIFAR ResNet, WRN "block3", VGG "block4").
// The widths of the two sides may differ: only the B×B similarities are compared, so no connector.
#include "distill/nodes/relation.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"

namespace retort {

namespace {
class SPStrategy final : public StageStrategy {
 public:
  explicit SPStrategy(StageTaps taps) : StageStrategy("sp", std::move(taps)) {}
  Tensor compute(const DistillContext& ctx) override {
    last_.clear();
    return sum_over_stages([&](size_t i) {
      const Tensor &fs = ctx.student_feature(s_taps_[i]), &ft = ctx.teacher_feature(t_taps_[i]);
      last_.emplace_back(fs.detach(), ft.detach());  // shares storage: the maps are made only if inspected
      return sp_loss(fs, ft);
    });
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
  Json params() const override { return stage_params(); }

 private:
  std::vector<std::pair<Tensor, Tensor>> last_;  // the latest batch's (student, teacher) feature per stage
};
}  // namespace

void register_sp_strategy() {
  register_strategy("sp", [](JsonReader& p) {
    return std::make_shared<SPStrategy>(read_stage_taps(p, {"stage-1"}));
  });
}

}  // namespace retort
