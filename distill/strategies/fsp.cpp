// "fsp": a gift from knowledge distillation — the flow of solution procedure (Yim et al., CVPR 2017;
// RepDistiller's FSP.py). For each pair of consecutive taps (bot, top) each network's FSP matrix
// G[j, i] = mean over positions of top_j · bot_i says how the channels of one point flow into the next
// (fsp_matrix, distill/nodes/feature.h; the larger map pooled to the smaller); the student's matrices
// are pulled to the teacher's by their mean squared difference, summed over the pairs (fsp_loss).
// The matrices are compared entry by entry, so the two networks need the same channel count at every
// tap (RepDistiller refuses other pairs too): resnet110 -> resnet32, resnet32x4 -> resnet8x4,
// wrn_40_2 -> wrn_16_2; on Fashion-MNIST resnet32 -> resnet8. Default taps ":stem", "stages"
// (RepDistiller's feat[:-1]: ":stem", "layer1".."layer3" on a CIFAR ResNet, three pairs).
//
// RepDistiller uses FSP as an initialisation, as AB: the student's feature layers are trained with this
// loss alone (its init phase, 30 epochs), then the student with CE alone ("loss_kd = 0"). Here that
// is two runs: this term alone, then a CE run whose model.init is the first run's model
// (configs/fmnist/fsp_init.json, ce_from_init.json; scripts/fsp_fmnist.sh). Used beside CE in one run it
// is simply one more term.
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {
class FSPStrategy final : public StageStrategy {
 public:
  explicit FSPStrategy(StageTaps taps) : StageStrategy("fsp", std::move(taps)) { min_taps_ = 2; }

  void build(const TapShapes& shapes, Generator&) override {
    for (size_t i = 0; i < stage_count(); ++i) {
      const auto [s, t] = map_shapes(shapes, i);
      RETORT_CHECK(s[1] == t[1], stage_label(i), ": FSP compares the two networks' flow matrices entry by entry, so ",
                   "each tap needs the same channels in both, got student ", shape_str(s), " and teacher ",
                   shape_str(t), " (pair networks of equal widths, e.g. resnet32 -> resnet8, resnet32x4 -> resnet8x4)");
    }
  }

  Tensor compute(const DistillContext& ctx) override {
    return sum_over(stage_count() - 1, [&](size_t i) {  // the pairs (i, i + 1); the factory asks for >= 2 taps
      return fsp_loss(ctx.student_feature(s_taps_[i]), ctx.student_feature(s_taps_[i + 1]),
                      ctx.teacher_feature(t_taps_[i]), ctx.teacher_feature(t_taps_[i + 1]));
    });
  }
  Json params() const override { return stage_params(); }
};
}  // namespace

void register_fsp_strategy() {
  register_strategy("fsp", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {":stem", "stages"});
    RETORT_CHECK(taps.student.size() >= 2 || Module::expands_stages(taps.student), p.where("student_taps"), ": FSP compares consecutive taps, so it needs ",
                 "at least 2, got ", taps.student.size());
    return std::make_shared<FSPStrategy>(std::move(taps));
  });
}

}  // namespace retort
