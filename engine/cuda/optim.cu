// CUDA optimizer steps: SGD and Adam/AdamW as one fused elementwise pass per parameter (read p, g and
// the state; write p and the state), with exactly the arithmetic of sgd_step / adam_step in
// engine/optim/sgd.cpp and adam.cpp. The per-step scalars are cast to T on the host, as there.
//
// Every product and sum goes through the _rn intrinsics: they round each operation on its own, as the
// CPU build does, whereas nvcc would otherwise fuse a * b + c into one FMA (one rounding instead of
// two) and F32 parameters would drift from the CPU's by an ulp per step. Division and sqrt are
// IEEE-exact in CUDA by default, as on the CPU. The option flags are uniform across the grid, so
// their branches cost nothing.
#include <cmath>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }

template <class T>
struct SgdScalars {
  T neg_lr, decay, mom, keep;  // -lr, weight decay, momentum, 1 - dampening
  bool use_decay, use_momentum, nesterov, first;
};

// d = g (+ wd * p); with momentum: buf = first ? d : mom * buf + (1 - dampening) * d, and
// d = nesterov ? d + mom * buf : buf; then p += -lr * d.
template <class T>
__global__ void __launch_bounds__(kThreads) sgd_kernel(T* p, const T* g, T* buf, int64_t n, SgdScalars<T> s) {
  RETORT_GRID_STRIDE(i, n) {
    T d = g[i];
    if (s.use_decay) d = add(d, mul(s.decay, p[i]));
    if (s.use_momentum) {
      const T b = s.first ? d : add(mul(buf[i], s.mom), mul(s.keep, d));
      buf[i] = b;
      d = s.nesterov ? add(d, mul(s.mom, b)) : b;
    }
    p[i] = add(p[i], mul(s.neg_lr, d));
  }
}

template <class T>
struct AdamScalars {
  T decay, l2, w1, w1c, b2, w2, eps, neg_step, bc2;
  bool use_decay, use_l2, lerp_low;
};

// p *= decay (AdamW); g += l2 * p (Adam); m = lerp(m, g, 1 - beta1) (torch.lerp's two-sided formula);
// v = beta2 * v + (1 - beta2) * g * g; p += -step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
template <class T>
__global__ void __launch_bounds__(kThreads)
    adam_kernel(T* p, const T* g, T* m, T* v, int64_t n, AdamScalars<T> s) {
  RETORT_GRID_STRIDE(i, n) {
    T pi = p[i];
    if (s.use_decay) pi = mul(pi, s.decay);
    T gi = g[i];
    if (s.use_l2) gi = add(gi, mul(s.l2, pi));
    const T mo = m[i];
    const T mi = s.lerp_low ? add(mo, mul(s.w1, sub(gi, mo))) : sub(gi, mul(sub(gi, mo), s.w1c));
    const T vi = add(mul(v[i], s.b2), mul(mul(s.w2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    p[i] = add(pi, mul(s.neg_step, mi) / add(sqrt(vi) / s.bc2, s.eps));
  }
}

}  // namespace

void CudaBackend::sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStepArgs& a) {
  const int64_t n = param.numel();
  const bool use_momentum = a.momentum != 0.0;
  RETORT_CHECK(!use_momentum || momentum_buffer.defined(), "sgd_step (cuda): momentum ", a.momentum,
               " needs a momentum buffer for ", param.meta_str());
  if (n == 0) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(param.dtype(), "sgd_step", [&](auto tag) {
    using T = decltype(tag);
    SgdScalars<T> s;
    s.neg_lr = static_cast<T>(-a.lr);
    s.decay = static_cast<T>(a.weight_decay);
    s.mom = static_cast<T>(a.momentum);
    s.keep = static_cast<T>(1.0 - a.dampening);
    s.use_decay = a.weight_decay != 0.0;
    s.use_momentum = use_momentum;
    s.nesterov = a.nesterov;
    s.first = a.first;
    T* buf = use_momentum ? ptr<T>(momentum_buffer) : nullptr;
    sgd_kernel<T><<<blocks_for(n), kThreads, 0, st>>>(ptr<T>(param), ptr<T>(grad), buf, n, s);
  });
  RETORT_CUDA_LAUNCH_CHECK("sgd_step on ", param.meta_str());
}

void CudaBackend::adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                            const AdamStepArgs& a) {
  const int64_t n = param.numel();
  if (n == 0) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(param.dtype(), "adam_step", [&](auto tag) {
    using T = decltype(tag);
    AdamScalars<T> s;
    s.decay = static_cast<T>(a.decay_factor);
    s.l2 = static_cast<T>(a.l2);
    s.w1 = static_cast<T>(1.0 - a.beta1);
    s.w1c = T(1) - s.w1;  // 1 - weight in T, for lerp's high side (as the CPU computes it)
    s.b2 = static_cast<T>(a.beta2);
    s.w2 = static_cast<T>(1.0 - a.beta2);
    s.eps = static_cast<T>(a.eps);
    s.neg_step = static_cast<T>(-a.step_size);
    s.bc2 = static_cast<T>(a.bc2_sqrt);
    s.use_decay = a.decay_factor != 1.0;
    s.use_l2 = a.l2 != 0.0;
    s.lerp_low = (1.0 - a.beta1) < 0.5;  // torch.lerp: which side of the formula (exact at weight 1)
    adam_kernel<T><<<blocks_for(n), kThreads, 0, st>>>(ptr<T>(param), ptr<T>(grad), ptr<T>(exp_avg),
                                                        ptr<T>(exp_avg_sq), n, s);
  });
  RETORT_CUDA_LAUNCH_CHECK("adam_step on ", param.meta_str());
}

}  // namespace retort::cuda
