// "vid": variational information distillation (Ahn et al., CVPR 2019; RepDistiller's VID.py, "code from
// the author"). For each stage pair a regressor — Conv1x1 → ReLU → Conv1x1 → ReLU → Conv1x1, no
// biases, mid channels = the teacher's — predicts the teacher's feature from the student's as the mean
// μ of a Gaussian whose variance v_c = softplus(log_scale_c) + eps is learned per teacher channel; the
// loss is the negative log-likelihood per element, ½ ((μ − t)² / v + log v) averaged (vid_loss,
// distill/nodes/feature.h), summed over stages. Where the sizes differ the larger map is
// adaptive-avg-pooled to the smaller first (the student's before the regressor). Default "stages"
// in both (every stage, RepDistiller's feat[1:-1]: "layer1".."layer3" on a CIFAR ResNet, WRN "block1"..).
// Parameters "0.regressor.{0,2,4}.weight", "0.log_scale", "1.…" — key for key RepDistiller's
// ModuleList of VIDLoss. log_scale starts at softplus⁻¹(init_pred_var − eps) (5 by default).
#include <cmath>

#include "distill/nodes/feature.h"
#include "distill/strategies/strategies.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "layers/layers.h"

namespace retort {

namespace {

class VIDLoss final : public Module {
 public:
  VIDLoss(int64_t in, int64_t mid, int64_t out, double init_pred_var, double eps, Generator& gen)
      : Module("VIDLoss") {
    Conv2dOptions no_bias;
    no_bias.bias = false;
    regressor_ = register_module("regressor", std::make_shared<Sequential>());
    regressor_->push_back(std::make_shared<Conv2d>(in, mid, 1, gen, no_bias));
    regressor_->push_back(std::make_shared<ReLU>());
    regressor_->push_back(std::make_shared<Conv2d>(mid, mid, 1, gen, no_bias));
    regressor_->push_back(std::make_shared<ReLU>());
    regressor_->push_back(std::make_shared<Conv2d>(mid, out, 1, gen, no_bias));
    const DType dt = regressor_->parameters()[0].dtype();
    register_parameter("log_scale", Tensor::full({out}, std::log(std::exp(init_pred_var - eps) - 1.0), dt));
  }
  Tensor forward(const Tensor& x) override { return (*regressor_)(x); }
  Tensor& log_scale() { return param("log_scale"); }

 private:
  std::shared_ptr<Sequential> regressor_;
};

class VIDStrategy final : public StageStrategy {
 public:
  VIDStrategy(StageTaps taps, double init_pred_var, double eps)
      : StageStrategy("vid", std::move(taps)), init_pred_var_(init_pred_var), eps_(eps) {}
  void build(const TapShapes& shapes, Generator& gen) override {
    for (size_t i = 0; i < stage_count(); ++i) {
      const auto [s, t] = map_shapes(shapes, i);
      losses_.push_back(register_module(std::to_string(i),
                                        std::make_shared<VIDLoss>(s[1], t[1], t[1], init_pred_var_, eps_, gen)));
    }
  }
  Tensor compute(const DistillContext& ctx) override {
    return sum_over_stages([&](size_t i) {
      const auto [fs, ft] = pool_to_common_size(ctx.student_feature(s_taps_[i]), ctx.teacher_feature(t_taps_[i]));
      return vid_loss((*losses_[i])(fs), ft, losses_[i]->log_scale(), eps_);
    });
  }
  // The learned variance of each teacher channel per stage: small where the student's feature
  // predicts that channel well, large (up to where it started) where it does not.
  std::vector<std::pair<std::string, Tensor>> inspect() const override {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < losses_.size(); ++i)
      out.emplace_back("variance." + t_taps_[i], vid_variance(losses_[i]->log_scale(), eps_));
    return out;
  }
  std::string inspect_text() const override {
    std::string text;
    char buf[160];
    for (const auto& [name, v] : inspect()) {
      const std::vector<double> x = v.to(Device::cpu()).to_vector();
      double lo = x[0], hi = x[0], sum = 0;
      for (double e : x) lo = std::min(lo, e), hi = std::max(hi, e), sum += e;
      std::snprintf(buf, sizeof buf, "%s%s %.3g (min %.3g, max %.3g over %zu channels)", text.empty() ? "" : "; ",
                    name.c_str(), sum / static_cast<double>(x.size()), lo, hi, x.size());
      text += buf;
    }
    return text.empty() ? text : "predicted " + text;
  }
  Json params() const override { return stage_params({{"init_pred_var", init_pred_var_}, {"eps", eps_}}); }

 private:
  double init_pred_var_, eps_;
  std::vector<std::shared_ptr<VIDLoss>> losses_;
};
}  // namespace

void register_vid_strategy() {
  register_strategy("vid", [](JsonReader& p) {
    StageTaps taps = read_stage_taps(p, {"stages"});
    const double eps = p.get<double>("eps", 1e-5);
    const double init = p.get<double>("init_pred_var", 5.0);
    RETORT_CHECK(std::isfinite(eps) && eps >= 0, p.where("eps"), ": must be >= 0, got ", eps);
    RETORT_CHECK(std::isfinite(init) && init > eps && init < 80, p.where("init_pred_var"),
                 ": the initial variance must be above eps (", eps, ") and below 80, got ", init);
    return std::make_shared<VIDStrategy>(std::move(taps), init, eps);
  });
}

}  // namespace retort
