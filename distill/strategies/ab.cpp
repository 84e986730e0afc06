// "ab": knowledge transfer via distillation of activation boundaries formed by hidden neurons (Heo et
// al., AAAI 2019; RepDistiller's AB.py and Connector, "code: bhheo/AB_distillation"). For each stage
// pair the student's pre-ReLU feature goes through a connector (none where the shapes already match,
// else ConvReg without its ReLU: conv + BN) and is pushed at least `margin` past 0 on the side where
// the teacher's pre-ReLU response is (ab_loss, distill/nodes/feature.h): the student learns where the
// teacher's neurons switch on, not how strongly. Stage i of n weighs 2^(i − n + 1) · 3 / 1000 (AB.py's
// weights and scale). Default "stages:preact": every stage's pre-activation of each network
// (RepDistiller's feat[1:-1] with preact=True; "layer1:preact".."layer3:preact" on a CIFAR ResNet).
//
// RepDistiller uses AB as an initialisation: the student's feature layers and the connector are
// trained with this loss alone (its init phase, 30 epochs), then the student is trained with CE alone
// (β = 0: "loss_kd = 0"). Here that is two runs: one with this term alone, then a CE run whose
// model.init is the first run's model (configs/fmnist/ab_init.json, ce_from_init.json;
// scripts/ab_fmnist.sh).
#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/functions.h"

namespace retort {

namespace {

class ABStrategy final : public StageStrategy {
 public:
  ABStrategy(StageTaps taps, double margin) : StageStrategy("ab", std::move(taps)), margin_(margin) {}

  void build(const TapShapes& shapes, Generator& gen) override {
    connectors_ = register_module("connectors", std::make_shared<Sequential>());
    for (size_t i = 0; i < stage_count(); ++i) {
      const auto [s, t] = map_shapes(shapes, i);
      // RepDistiller's Connector: an empty Sequential (the identity) where channels and height agree.
      if (s[1] == t[1] && s[2] == t[2]) connectors_->push_back(std::make_shared<Sequential>());
      else connectors_->push_back(std::make_shared<ConvReg>(s, t, gen, /*use_relu=*/false));
    }
  }

  Tensor compute(const DistillContext& ctx) override {
    const int n = static_cast<int>(stage_count());
    return sum_over_stages([&](size_t i) {
      const Tensor s = connectors_->operator[](i)(ctx.student_feature(s_taps_[i]));
      const double w = std::ldexp(1.0, static_cast<int>(i) - n + 1) * 3.0 / 1000.0;
      return affine(ab_loss(s, ctx.teacher_feature(t_taps_[i]), margin_), w, 0.0);
    });
  }
  Json params() const override { return stage_params({{"margin", margin_}}); }

 private:
  double margin_;
  std::shared_ptr<Sequential> connectors_;
};
}  // namespace

void register_ab_strategy() {
  register_strategy("ab", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {"stages:preact"});
    const double margin = p.get<double>("margin", 1.0);
    RETORT_CHECK(std::isfinite(margin) && margin >= 0, p.where("margin"), ": must be >= 0, got ", margin);
    return std::make_shared<ABStrategy>(std::move(taps), margin);
  });
}

}  // namespace retort
