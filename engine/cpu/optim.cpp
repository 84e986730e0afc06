// Fused optimizer updates on the CPU: one pass over memory per parameter (read p, g and the buffers;
// write p and the buffers) rather than a handful of tensor ops. engine/optim/sgd.h and adam.h give
// the rules; the CUDA backend (engine/cuda/optim.cu) runs the same arithmetic.
#include <cmath>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

// Scalars are cast to T first, as PyTorch does for float tensors, so f32 results follow its rounding.
template <class T>
void sgd_typed(T* p, const T* g, T* buf, int64_t n, const SgdStepArgs& a) {
  const T neg_lr = static_cast<T>(-a.lr), decay = static_cast<T>(a.weight_decay), mom = static_cast<T>(a.momentum),
          keep = static_cast<T>(1.0 - a.dampening);
  const bool use_decay = a.weight_decay != 0.0, use_momentum = a.momentum != 0.0, nesterov = a.nesterov,
             first = a.first;
  // The flags are loop-invariant: the compiler unswitches them, the loop stays branch-free.
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T d = g[i];
    if (use_decay) d = d + decay * p[i];
    if (use_momentum) {
      const T b = first ? d : buf[i] * mom + keep * d;
      buf[i] = b;
      d = nesterov ? d + mom * b : b;
    }
    p[i] = p[i] + neg_lr * d;
  }
}

// The element arithmetic follows PyTorch's single-tensor CPU path operation by operation (lerp for the
// first moment, addcmul, sqrt / bias_correction2_sqrt + eps, addcdiv) with the per-step scalars
// computed in double and cast to T, so f32 results track PyTorch's rounding.
template <class T>
void adam_typed(T* p, const T* g, T* m, T* v, int64_t n, const AdamStepArgs& s) {
  const T decay = static_cast<T>(s.decay_factor), l2 = static_cast<T>(s.l2), w1 = static_cast<T>(1.0 - s.beta1),
          b2 = static_cast<T>(s.beta2), w2 = static_cast<T>(1.0 - s.beta2), eps = static_cast<T>(s.eps),
          neg_step = static_cast<T>(-s.step_size), bc2 = static_cast<T>(s.bc2_sqrt);
  const bool use_decay = s.decay_factor != 1.0, use_l2 = s.l2 != 0.0;
  // torch.lerp's two-sided formula (exact at weight 1): which side is loop-invariant.
  const bool lerp_low = (1.0 - s.beta1) < 0.5;
  const T w1c = T(1) - w1;  // 1 - weight, for the high side
#pragma omp parallel for if (n > kParallelGrain)
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

}  // namespace

void CpuBackend::sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStepArgs& a) {
  dispatch_float(param.dtype(), "sgd_step", [&](auto tag) {
    using T = decltype(tag);
    T* buf = momentum_buffer.defined() ? momentum_buffer.data<T>() : nullptr;
    sgd_typed<T>(param.data<T>(), grad.data<T>(), buf, param.numel(), a);
  });
}

void CpuBackend::adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                           const AdamStepArgs& a) {
  dispatch_float(param.dtype(), "adam_step", [&](auto tag) {
    using T = decltype(tag);
    adam_typed<T>(param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), param.numel(), a);
  });
}

}  // namespace retort::cpu
