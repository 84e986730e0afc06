// CPU batch-norm kernels over x viewed as [N, C, S] (S = product of the dims after C, 1 for [N, C]).
//
// One channel per OpenMP iteration: every statistic and every output element of a channel belongs to
// that iteration alone, so there are no races and results do not depend on the thread count.
// Statistics (mean, variance, the backward's sums) are summed in the element type along one row of
// S contiguous values (a vectorised loop) and the row sums accumulate in double; the variance uses
// the two-pass formula sum((x - mean)^2) rather than E[x^2] - mean^2, which cancels badly for large
// means. The per-element passes are folded into one multiply-add in the element type:
// y = x * scale + shift. Undefined weight/bias mean 1/0 (affine=false).
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_plan.h"

namespace retort::cpu {

namespace {

using Layout = ChannelLayout;
Layout layout_of(const Tensor& x) { return channel_layout(x.shape()); }

template <class T>
double value_or(const Tensor& t, int64_t c, double fallback) {
  return t.defined() ? static_cast<double>(t.data<T>()[c]) : fallback;
}

// The per-channel sweeps below each take one channel's `rows` rows (one per sample) of `n` contiguous
// values, `stride` elements apart, in a single call: one call per channel rather than per row keeps
// the per-ISA dispatch and loop set-up off small planes (a 2x2 plane is a row of 4). Within a row the
// loop is vectorised; per-row partial sums are in T and accumulate across rows in double.

// y = x * scale + shift, with `relu` y = max(0, ...) in the same pass.
template <class T>
RETORT_SIMD_CLONES void normalize_rows(const T* __restrict x, T* __restrict y, int64_t rows, int64_t stride, int64_t n,
                                       T scale, T shift, bool relu) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = x + i * stride;
    T* yr = y + i * stride;
    if (relu) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T v = xr[j] * scale + shift;
        yr[j] = v > T(0) ? v : T(0);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] * scale + shift;
    }
  }
}

// y = (x - mean) * invstd * weight + bias for channel c, as y = x * scale + shift.
template <class T>
void normalize_channel(const T* x, T* y, const Layout& l, int64_t c, double mean, double invstd, double w,
                       double b, bool relu) {
  const T scale = static_cast<T>(invstd * w), shift = static_cast<T>(b - mean * invstd * w);
  normalize_rows(x + c * l.s, y + c * l.s, l.n, l.c * l.s, l.s, scale, shift, relu);
}

// Sum of every value of the channel.
template <class T>
RETORT_SIMD_CLONES double rows_sum(const T* __restrict x, int64_t rows, int64_t stride, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = x + i * stride;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += xr[j];
    total += s;
  }
  return total;
}

// Sum of (x - m)^2 over the channel.
template <class T>
RETORT_SIMD_CLONES double rows_sq_dev(const T* __restrict x, int64_t rows, int64_t stride, int64_t n, T m) {
  double total = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = x + i * stride;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += (xr[j] - m) * (xr[j] - m);
    total += s;
  }
  return total;
}

// The backward's two sums over the channel: sum(g) and sum(g * (x - m)), g = gy masked by
// relu_out > 0 when relu_out is given.
template <class T>
RETORT_SIMD_CLONES void backward_rows_sums(const T* __restrict gy, const T* __restrict x,
                                           const T* __restrict relu_out, int64_t rows, int64_t stride, int64_t n,
                                           T m, double& sum_g, double& sum_gx) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t off = i * stride;
    T sg = 0, sgx = 0;
    if (relu_out) {
#pragma omp simd reduction(+ : sg, sgx)
      for (int64_t j = 0; j < n; ++j) {
        const T gv = gy[off + j], rv = relu_out[off + j];
        const T g = rv > T(0) ? gv : T(0);
        sg += g;
        sgx += g * (x[off + j] - m);
      }
    } else {
#pragma omp simd reduction(+ : sg, sgx)
      for (int64_t j = 0; j < n; ++j) {
        sg += gy[off + j];
        sgx += gy[off + j] * (x[off + j] - m);
      }
    }
    sum_g += sg;
    sum_gx += sgx;
  }
}

// gx = a * g + b * x + k over the channel, g masked as above.
template <class T>
RETORT_SIMD_CLONES void backward_rows_gx(const T* __restrict gy, const T* __restrict x, const T* __restrict relu_out,
                                         T* __restrict gx, int64_t rows, int64_t stride, int64_t n, T a, T b, T k) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t off = i * stride;
    if (relu_out) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T gv = gy[off + j], rv = relu_out[off + j];
        gx[off + j] = a * (rv > T(0) ? gv : T(0)) + b * x[off + j] + k;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) gx[off + j] = a * gy[off + j] + b * x[off + j] + k;
    }
  }
}

}  // namespace

void CpuBackend::batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                         bool relu, Tensor& y, Tensor& mean, Tensor& invstd) {
  dispatch_float(x.dtype(), "batchnorm_forward_train", [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_of(x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    T* pm = mean.data<T>();
    T* pi = invstd.data<T>();
    const double count = static_cast<double>(l.n * l.s);
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t c = 0; c < l.c; ++c) {
      const double m = rows_sum(px + c * l.s, l.n, l.c * l.s, l.s) / count;
      const double sq = rows_sq_dev(px + c * l.s, l.n, l.c * l.s, l.s, static_cast<T>(m));
      const double is = 1.0 / std::sqrt(sq / count + eps);
      pm[c] = static_cast<T>(m);
      pi[c] = static_cast<T>(is);
      normalize_channel(px, py, l, c, m, is, value_or<T>(weight, c, 1.0), value_or<T>(bias, c, 0.0), relu);
    }
  });
}

void CpuBackend::batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                        const Tensor& running_mean, const Tensor& running_var, double eps,
                                        bool relu, Tensor& y) {
  dispatch_float(x.dtype(), "batchnorm_forward_eval", [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_of(x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T* rm = running_mean.data<T>();
    const T* rv = running_var.data<T>();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t c = 0; c < l.c; ++c) {
      const double is = 1.0 / std::sqrt(static_cast<double>(rv[c]) + eps);
      normalize_channel(px, py, l, c, static_cast<double>(rm[c]), is, value_or<T>(weight, c, 1.0),
                        value_or<T>(bias, c, 0.0), relu);
    }
  });
}

// With xhat = (x - mean) * invstd, per channel over its M = N*S values:
//   gbias = sum(gy), gweight = sum(gy * xhat),
//   eval:     gx = gy * w * invstd   (the statistics are constants)
//   training: gx = w * invstd * (gy - sum(gy)/M - xhat * sum(gy * xhat)/M)
//             (the two subtracted terms are the gradient through the batch mean and variance).
// Fused ReLU: gy is replaced by gy * (relu_out > 0) wherever it is read.
void CpuBackend::batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                    const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx,
                                    Tensor& gweight, Tensor& gbias) {
  dispatch_float(x.dtype(), "batchnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_of(x);
    const T* pg = gy.data<T>();
    const T* px = x.data<T>();
    const T* pm = mean.data<T>();
    const T* pi = invstd.data<T>();
    const T* pr = relu_out.defined() ? relu_out.data<T>() : nullptr;
    T* pgx = gx.defined() ? gx.data<T>() : nullptr;
    T* pgw = gweight.defined() ? gweight.data<T>() : nullptr;
    T* pgb = gbias.defined() ? gbias.data<T>() : nullptr;
    const double count = static_cast<double>(l.n * l.s);
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t c = 0; c < l.c; ++c) {
      const double m = pm[c], is = pi[c], w = value_or<T>(weight, c, 1.0);
      double sum_g = 0, sum_g_xmu = 0;
      const T mt = static_cast<T>(m);
      backward_rows_sums(pg + c * l.s, px + c * l.s, pr ? pr + c * l.s : nullptr, l.n, l.c * l.s, l.s, mt, sum_g,
                         sum_g_xmu);
      if (pgb) pgb[c] = static_cast<T>(sum_g);
      if (pgw) pgw[c] = static_cast<T>(sum_g_xmu * is);
      if (!pgx) continue;
      const double scale = w * is;
      const double mean_g = training ? sum_g / count : 0.0;
      const double proj = training ? is * is * sum_g_xmu / count : 0.0;
      // gx = scale * (gy - mean_g - (x - m) * proj) = a * gy + b * x + k
      const T a = static_cast<T>(scale), b = static_cast<T>(-scale * proj),
              k = static_cast<T>(scale * (m * proj - mean_g));
      backward_rows_gx(pg + c * l.s, px + c * l.s, pr ? pr + c * l.s : nullptr, pgx + c * l.s, l.n, l.c * l.s, l.s, a,
                       b, k);
    }
  });
}

}  // namespace retort::cpu
