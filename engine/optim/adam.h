// Adam and AdamW — torch.optim.Adam / AdamW's update rule (amsgrad not implemented):
//
//   AdamW only:  p = p * (1 - lr * weight_decay)          (decoupled decay, before the update)
//   Adam only:   g = g + weight_decay * p                  (L2 penalty in the gradient)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// t is the parameter's own step count; eps is added after the bias-corrected square root, as PyTorch.
#pragma once
#include "engine/optim/optimizer.h"

namespace retort {

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

class Adam : public Optimizer {
 public:
  explicit Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  const AdamOptions& adam_options() const { return opt_; }

 protected:
  Adam(const char* type, bool decoupled, std::vector<ParamGroup> groups, AdamOptions options);
  void update(const ParamGroup& group, Tensor& param, const Tensor& grad, std::vector<Tensor>& buffers,
              int64_t step) override;
  nlohmann::ordered_json options() const override;

 private:
  AdamOptions opt_;
  bool decoupled_;  // AdamW
};

// Adam with decoupled weight decay (Loshchilov & Hutter). Note: ParamGroup's weight_decay defaults
// to 0 here too; PyTorch's AdamW default of 0.01 applies only through make_optimizer().
class AdamW final : public Adam {
 public:
  explicit AdamW(std::vector<ParamGroup> groups, AdamOptions options = {});
};

}  // namespace retort
