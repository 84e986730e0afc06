// "ofd": a comprehensive overhaul of feature distillation (Heo et al., ICCV 2019) as mdistiller runs
// it (distillers/OFD.py). For each stage pair the student's pre-ReLU feature goes through a connector
// — Conv(Cs → Ct, kernel k, no bias) + BN, initialised N(0, √(2 / (k² Ct))) and BN 1 / 0 — and is
// compared with the teacher's pre-ReLU feature (pooled to the student's size where it differs) by the
// partial L2 with the teacher's margins (ofd_loss, distill/nodes/feature.h): where the teacher is below
// its channel's margin m — the expected value of its negative responses, from the affine parameters
// of the BN before its ReLU (ofd_margin) — the student is only kept from rising above m. Stage i of n
// weighs 1 / 2^(n − 1 − i) (the deepest 1). Default "stages:preact" in both (mdistiller's
// preact_feats[1:]: "layer1:preact".."layer3:preact" on a CIFAR ResNet, WRN "block1:preact"..).
// mdistiller's weight: 0.001 with CE 1. Parameters connectors.<i>.0.weight, connectors.<i>.1.*;
// buffers margin<i> (made once from the teacher, then checkpointed).
#include <cmath>

#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "layers/init.h"
#include "layers/layers.h"

namespace retort {

namespace {

class OFDStrategy final : public StageStrategy {
 public:
  OFDStrategy(StageTaps taps, int64_t kernel) : StageStrategy("ofd", std::move(taps)), kernel_(kernel) {}

  void build(const TapShapes& shapes, Generator& gen) override {
    connectors_ = register_module("connectors", std::make_shared<Sequential>());
    for (size_t i = 0; i < stage_count(); ++i) {
      const auto [s, t] = map_shapes(shapes, i);
      const std::string stage = stage_label(i);
      // The connector (mdistiller's ConnectorConvBN._build_feature_connector).
      auto conn = connectors_->push_back(std::make_shared<Sequential>());
      auto conv = conn->push_back(std::make_shared<Conv2d>(
          s[1], t[1], kernel_, gen, Conv2dOptions{.padding = (kernel_ - 1) / 2, .bias = false}));
      conn->push_back(std::make_shared<BatchNorm2d>(t[1]));
      const double sd = std::sqrt(2.0 / static_cast<double>(kernel_ * kernel_ * t[1]));
      init::normal_(conv->weight(), gen, 0.0, sd);
      // The margins, from the teacher's BN before the point's ReLU.
      RETORT_CHECK(shapes.teacher_batch_norm, stage, ": OFD's margins come from the teacher's batch norms, "
                   "but no teacher was given");
      auto bn = std::dynamic_pointer_cast<BatchNorm2d>(shapes.teacher_batch_norm(t_taps_[i]));
      RETORT_CHECK(bn, stage, ": the teacher names no batch norm before the ReLU at \"", t_taps_[i],
                   "\" (OFD's margins come from one; tap a pre-ReLU point such as \"layer3:preact\" — ResNet, "
                   "ResNet50, WRN, VGG, MobileNetV2 and ShuffleNetV1's stride-1 units say which)");
      RETORT_CHECK(bn->weight().defined() && bn->weight().numel() == t[1], stage, ": the teacher's batch norm at \"",
                   t_taps_[i], "\" has ", bn->weight().defined() ? bn->weight().numel() : 0,
                   " affine channels for a feature of ", t[1], " channels");
      register_buffer("margin" + std::to_string(i), ofd_margin(bn->weight(), bn->bias()));
    }
  }

  Tensor compute(const DistillContext& ctx) override {
    last_.clear();
    const size_t n = stage_count();
    return sum_over_stages([&](size_t i) {
      const Tensor s = connectors_->operator[](i)(ctx.student_feature(s_taps_[i]));
      Tensor t = ctx.teacher_feature(t_taps_[i]);
      if (t.size(2) != s.size(2) || t.size(3) != s.size(3)) t = adaptive_avg_pool2d(t, s.size(2), s.size(3));
      last_.push_back(t.detach());
      const Tensor& m = buffer("margin" + std::to_string(i));
      return affine(ofd_loss(s, t, m), std::ldexp(1.0, -static_cast<int>(n - 1 - i)), 0.0);
    });
  }

  // Each stage's margins, and where the teacher's responses of the latest batch lie against them.
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < t_taps_.size(); ++i)
      out.emplace_back("margin." + t_taps_[i], const_cast<OFDStrategy*>(this)->buffer("margin" + std::to_string(i)));
    return out;
  }
  std::string inspect_text() const override {
    NoGradGuard ng;
    std::string text;
    char buf[200];
    for (size_t i = 0; i < last_.size(); ++i) {
      const Tensor& t = last_[i];
      const Tensor m = const_cast<OFDStrategy*>(this)->buffer("margin" + std::to_string(i));
      const Tensor zero = Tensor::scalar(0.0, t.dtype(), t.device());
      const double cnt = static_cast<double>(t.numel());
      const double below = sum(le(t, m.view_as_shape({1, m.numel(), 1, 1}))).item() / cnt;
      const double above = sum(gt(t, zero)).item() / cnt;
      std::snprintf(buf, sizeof buf, "%s%s: margin mean %.3g; teacher at or below it %.1f%%, above 0 %.1f%%",
                    text.empty() ? "" : "; ", t_taps_[i].c_str(), mean(m).item(), 100 * below, 100 * above);
      text += buf;
    }
    return text;
  }
  Json params() const override { return stage_params({{"kernel_size", kernel_}}); }

 private:
  int64_t kernel_;
  std::shared_ptr<Sequential> connectors_;
  std::vector<Tensor> last_;  // the latest batch's teacher features (pooled), for inspection
};
}  // namespace

void register_ofd_strategy() {
  register_strategy("ofd", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {"stages:preact"});
    const int64_t k = p.get<int64_t>("kernel_size", 1);
    RETORT_CHECK(k >= 1 && k % 2 == 1, p.where("kernel_size"), ": must be odd and positive (the connector keeps the "
                 "student's size), got ", k);
    return std::make_shared<OFDStrategy>(std::move(taps), k);
  });
}

}  // namespace retort
