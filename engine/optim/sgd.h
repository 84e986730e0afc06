// SGD with momentum, dampening, weight decay and Nesterov momentum — torch.optim.SGD's update rule:
//
//   d = g + weight_decay * p
//   buf = d                                     on a parameter's first step (momentum != 0)
//   buf = momentum * buf + (1 - dampening) * d  afterwards
//   d = nesterov ? d + momentum * buf : buf     (momentum != 0)
//   p = p - lr * d
#pragma once
#include "engine/optim/optimizer.h"

namespace retort {

struct SGDOptions {
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0 (as PyTorch)
};

class SGD final : public Optimizer {
 public:
  explicit SGD(std::vector<ParamGroup> groups, SGDOptions options = {});
  const SGDOptions& sgd_options() const { return opt_; }

 protected:
  void update(const ParamGroup& group, Tensor& param, const Tensor& grad, std::vector<Tensor>& buffers,
              int64_t step) override;
  nlohmann::ordered_json options() const override;

 private:
  SGDOptions opt_;
};

}  // namespace retort
