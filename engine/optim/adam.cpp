// Adam / AdamW: option checks and the fused CPU update (see adam.h for the rule).
//
// One pass over memory per parameter (read p, g, m, v; write p, m, v). It lives here, not in
// engine/backend.h, while the CPU is the only device that runs optimizer steps; the CUDA backend will
// need a fused kernel with the same arithmetic (the Optimizer base refuses CUDA parameters until then).
// The element arithmetic follows PyTorch's single-tensor CPU path operation by operation (lerp for
// the first moment, addcmul, sqrt / bias_correction2_sqrt + eps, addcdiv) with the per-step scalars
// computed in double and cast to T, so f32 results track PyTorch's rounding.
#include "engine/optim/adam.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "engine/cpu/cpu_backend.h"

namespace retort {

namespace {

struct AdamScalars {
  double decay_factor;  // AdamW: 1 - lr * wd (1 = none)
  double l2;            // Adam: wd added to the gradient (0 = none)
  double beta1, beta2, eps;
  double step_size;     // lr / (1 - beta1^t)
  double bc2_sqrt;      // sqrt(1 - beta2^t)
};

template <class T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, const AdamScalars& s) {
  const T decay = static_cast<T>(s.decay_factor), l2 = static_cast<T>(s.l2), w1 = static_cast<T>(1.0 - s.beta1),
          b2 = static_cast<T>(s.beta2), w2 = static_cast<T>(1.0 - s.beta2), eps = static_cast<T>(s.eps),
          neg_step = static_cast<T>(-s.step_size), bc2 = static_cast<T>(s.bc2_sqrt);
  const bool use_decay = s.decay_factor != 1.0, use_l2 = s.l2 != 0.0;
  // torch.lerp's two-sided formula (exact at weight 1): which side is loop-invariant.
  const bool lerp_low = (1.0 - s.beta1) < 0.5;
  const T w1c = T(1) - w1;  // 1 - weight, for the high side
#pragma omp parallel for if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T pi = p[i];
    if (use_decay) pi = pi * decay;
    T gi = g[i];
    if (use_l2) gi = gi + l2 * pi;
    const T mi = lerp_low ? m[i] + w1 * (gi - m[i]) : gi - (gi - m[i]) * w1c;
    const T vi = v[i] * b2 + w2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + neg_step * mi / (std::sqrt(vi) / bc2 + eps);
  }
}

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
  AdamScalars s;
  s.decay_factor = decoupled_ ? 1.0 - group.lr * group.weight_decay : 1.0;
  s.l2 = decoupled_ ? 0.0 : group.weight_decay;
  s.beta1 = opt_.beta1;
  s.beta2 = opt_.beta2;
  s.eps = opt_.eps;
  const double t = static_cast<double>(step);
  s.step_size = group.lr / (1.0 - std::pow(opt_.beta1, t));
  s.bc2_sqrt = std::sqrt(1.0 - std::pow(opt_.beta2, t));
  cpu::dispatch_float(param.dtype(), decoupled_ ? "AdamW::step" : "Adam::step", [&](auto tag) {
    using T = decltype(tag);
    adam_step<T>(param.data<T>(), grad.data<T>(), buffers[0].data<T>(), buffers[1].data<T>(), param.numel(), s);
  });
}

nlohmann::ordered_json Adam::options() const {
  return {{"betas", {opt_.beta1, opt_.beta2}}, {"eps", opt_.eps}};
}

}  // namespace retort
