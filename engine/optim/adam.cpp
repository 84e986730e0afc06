// Adam / AdamW: option checks and the per-step scalars; the fused update is a backend kernel
// (Backend::adam_step, engine/cpu/optim.cpp and engine/cuda/optim.cu), so parameters on any device are
// updated where they live. The scalars are computed in double here and cast to the parameter's type in
// the kernel, so f32 results track PyTorch's rounding.
#include "engine/optim/adam.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "engine/backend.h"

namespace retort {

namespace {

void check_options(const AdamOptions& o, const char* who) {
  RETORT_CHECK(o.beta1 >= 0 && o.beta1 < 1, who, ": beta1 must be in [0, 1), got ", o.beta1);
  RETORT_CHECK(o.beta2 >= 0 && o.beta2 < 1, who, ": beta2 must be in [0, 1), got ", o.beta2);
  RETORT_CHECK(std::isfinite(o.eps) && o.eps >= 0, who, ": eps must be finite and >= 0, got ", o.eps);
}

}  // namespace

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options) : Adam("adam", false, std::move(groups), options) {}

Adam::Adam(const char* type, bool decoupled, std::vector<ParamGroup> groups, AdamOptions options)
    : Optimizer(type, std::move(groups), {"exp_avg", "exp_avg_sq"}), opt_(options), decoupled_(decoupled) {
  check_options(opt_, decoupled ? "AdamW" : "Adam");
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamOptions options) : Adam("adamw", true, std::move(groups), options) {}

void Adam::update(const ParamGroup& group, Tensor& param, const Tensor& grad, std::vector<Tensor>& buffers,
                  int64_t step) {
  AdamStepArgs s;
  s.decay_factor = decoupled_ ? 1.0 - group.lr * group.weight_decay : 1.0;
  s.l2 = decoupled_ ? 0.0 : group.weight_decay;
  s.beta1 = opt_.beta1;
  s.beta2 = opt_.beta2;
  s.eps = opt_.eps;
  const double t = static_cast<double>(step);
  s.step_size = group.lr / (1.0 - std::pow(opt_.beta1, t));
  s.bc2_sqrt = std::sqrt(1.0 - std::pow(opt_.beta2, t));
  backend_for(param).adam_step(param, grad, buffers[0], buffers[1], s);
}

nlohmann::ordered_json Adam::options() const {
  return {{"betas", {opt_.beta1, opt_.beta2}}, {"eps", opt_.eps}};
}

}  // namespace retort
