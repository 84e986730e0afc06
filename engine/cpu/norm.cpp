// CPU batch-norm kernels over x viewed as [N, C, S] (S = product of the dims after C, 1 for [N, C]).
//
// One channel per OpenMP iteration: every statistic and every output element of a channel belongs to
// that iteration alone, so there are no races and results do not depend on the thread count.
// Statistics (mean, variance, the backward's sums) are summed in the element type along one row of
// S contiguous values (a vectorised loop) and the row sums accumulate in double; the variance uses
// the two-pass formula sum((x - mean)^2) rather than E[x^2] - mean^2, which cancels badly for large
// means. The per-element passes are folded into one multiply-add in the element type:
// y = x * scale + shift. Undefined weight/bias mean 1/0 (affine=false).
//
// Small planes (S < kSmallPlane: the 4x4 and 2x2 maps of mobile_half and ShuffleV2, BatchNorm1d's
// S = 1) take a second path: a block of B channels is, within one sample, B*S contiguous values, so
// each sweep runs down the samples over that whole segment as one vectorised loop with a vector of
// per-slot accumulators (or per-slot scale/shift), and the S slots of a channel are reduced at the end.
// A row of 4 values per call is ten times slower per byte than this (bench/bn_micro.cpp). The
// per-channel arithmetic does not depend on B or on the thread count: each slot sums kChunkRows rows
// in T, the chunks and then the channel's slots accumulate in double.
#include <algorithm>
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
        yr[j] = relu_keep_nan(v);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] * scale + shift;
    }
  }
}

// y = x * a.scale + a.shift for channel c (a = bn_affine(mean, invstd, weight, bias)).
template <class T>
void normalize_channel(const T* x, T* y, const Layout& l, int64_t c, const BnAffine& a, bool relu) {
  normalize_rows(x + c * l.s, y + c * l.s, l.n, l.c * l.s, l.s, static_cast<T>(a.scale), static_cast<T>(a.shift),
                 relu);
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

// ---- small planes: channel blocks ----

constexpr int64_t kSmallPlane = 64;   // planes with fewer values than this take the block path
constexpr int64_t kBlockElems = 512;  // values per sample in one channel block (B * S <= this, B >= 1)
constexpr int64_t kChunkRows = 64;    // rows summed in T before a slot's partial goes to double

// A block: channels [c0, c0 + b) of x viewed as [N, C, S]; per sample its b*S values are contiguous,
// `stride` = C*S apart. len = b*S.
struct Block {
  int64_t c0, b, len;
};

inline int64_t block_channels(const Layout& l) { return std::max<int64_t>(1, kBlockElems / l.s); }

// acc[j] += sum over rows of f(row[j]) where f = x (sq = false) or (x - m[j])^2 (sq = true).
template <class T>
RETORT_SIMD_CLONES void block_sums(const T* __restrict x, int64_t rows, int64_t stride, int64_t len,
                                   const T* __restrict m, bool sq, double* __restrict acc) {
  T part[kBlockElems];
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
    const int64_t r1 = std::min(rows, r0 + kChunkRows);
    for (int64_t j = 0; j < len; ++j) part[j] = T(0);
    for (int64_t i = r0; i < r1; ++i) {
      const T* xr = x + i * stride;
      if (sq) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) part[j] += (xr[j] - m[j]) * (xr[j] - m[j]);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) part[j] += xr[j];
      }
    }
    for (int64_t j = 0; j < len; ++j) acc[j] += static_cast<double>(part[j]);
  }
}

// y = x * scale[j] + shift[j] (then max(0, .) with relu) down the rows.
template <class T>
RETORT_SIMD_CLONES void block_normalize(const T* __restrict x, T* __restrict y, int64_t rows, int64_t stride,
                                        int64_t len, const T* __restrict scale, const T* __restrict shift,
                                        bool relu) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = x + i * stride;
    T* yr = y + i * stride;
    if (relu) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const T v = xr[j] * scale[j] + shift[j];
        yr[j] = relu_keep_nan(v);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) yr[j] = xr[j] * scale[j] + shift[j];
    }
  }
}

// The backward's per-slot sums: acc_g[j] += sum g, acc_gx[j] += sum g * (x - m[j]), g masked by relu_out.
template <class T>
RETORT_SIMD_CLONES void block_backward_sums(const T* __restrict gy, const T* __restrict x,
                                            const T* __restrict relu_out, int64_t rows, int64_t stride,
                                            int64_t len, const T* __restrict m, double* __restrict acc_g,
                                            double* __restrict acc_gx) {
  T pg[kBlockElems], pgx[kBlockElems];
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
    const int64_t r1 = std::min(rows, r0 + kChunkRows);
    for (int64_t j = 0; j < len; ++j) pg[j] = pgx[j] = T(0);
    for (int64_t i = r0; i < r1; ++i) {
      const int64_t off = i * stride;
      if (relu_out) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const T g = relu_out[off + j] > T(0) ? gy[off + j] : T(0);
          pg[j] += g;
          pgx[j] += g * (x[off + j] - m[j]);
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          pg[j] += gy[off + j];
          pgx[j] += gy[off + j] * (x[off + j] - m[j]);
        }
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      acc_g[j] += static_cast<double>(pg[j]);
      acc_gx[j] += static_cast<double>(pgx[j]);
    }
  }
}

// gx = a[j] * g + b[j] * x + k[j] down the rows, g masked by relu_out.
template <class T>
RETORT_SIMD_CLONES void block_backward_gx(const T* __restrict gy, const T* __restrict x, const T* __restrict relu_out,
                                          T* __restrict gx, int64_t rows, int64_t stride, int64_t len,
                                          const T* __restrict a, const T* __restrict b, const T* __restrict k) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t off = i * stride;
    if (relu_out) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const T g = relu_out[off + j] > T(0) ? gy[off + j] : T(0);
        gx[off + j] = a[j] * g + b[j] * x[off + j] + k[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) gx[off + j] = a[j] * gy[off + j] + b[j] * x[off + j] + k[j];
    }
  }
}

// Channel c's total of the per-slot sums acc over its S slots (channel c is slots [c*S, (c+1)*S)).
inline double slot_total(const double* acc, int64_t c, int64_t s) {
  double t = 0;
  for (int64_t j = 0; j < s; ++j) t += acc[c * s + j];
  return t;
}

// Writes v[c] to its S slots of a per-slot vector.
template <class T>
void fill_slots(T* v, int64_t c, int64_t s, double value) {
  for (int64_t j = 0; j < s; ++j) v[c * s + j] = static_cast<T>(value);
}

// Runs f(Block) over the channel blocks of l, in parallel when the tensor is large enough.
template <class F>
void for_each_block(const Layout& l, int64_t numel, F&& f) {
  const int64_t bc = block_channels(l);
  const int64_t blocks = (l.c + bc - 1) / bc;
#pragma omp parallel for if (numel > kParallelGrain)
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t c0 = i * bc, b = std::min(bc, l.c - c0);
    f(Block{c0, b, b * l.s});
  }
}

}  // namespace

BnAffine bn_affine(double mean, double invstd, double w, double b) {
  const double scale = invstd * w;
  return {scale, b - mean * scale};
}

double bn_invstd(double var, double eps) { return 1.0 / std::sqrt(var + eps); }

void CpuBackend::batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                         bool relu, Tensor& y, Tensor& mean, Tensor& invstd) {
  if (blocked_batchnorm_forward_train(x, weight, bias, eps, relu, y, mean, invstd)) return;
  dispatch_float(x.dtype(), "batchnorm_forward_train", [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_of(x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    T* pm = mean.data<T>();
    T* pi = invstd.data<T>();
    const double count = static_cast<double>(l.n * l.s);
    if (l.s < kSmallPlane) {
      for_each_block(l, x.numel(), [&](const Block& bk) {
        const int64_t off = bk.c0 * l.s, stride = l.c * l.s;
        double acc[kBlockElems];
        T mv[kBlockElems], sc[kBlockElems], sh[kBlockElems];
        std::fill(acc, acc + bk.len, 0.0);
        block_sums(px + off, l.n, stride, bk.len, static_cast<const T*>(nullptr), false, acc);
        for (int64_t c = 0; c < bk.b; ++c) fill_slots(mv, c, l.s, slot_total(acc, c, l.s) / count);
        std::fill(acc, acc + bk.len, 0.0);
        block_sums(px + off, l.n, stride, bk.len, mv, true, acc);
        for (int64_t c = 0; c < bk.b; ++c) {
          const int64_t ch = bk.c0 + c;
          const double m = static_cast<double>(mv[c * l.s]);
          const double is = bn_invstd(slot_total(acc, c, l.s) / count, eps);
          pm[ch] = static_cast<T>(m);
          pi[ch] = static_cast<T>(is);
          const BnAffine a = bn_affine(m, is, value_or<T>(weight, ch, 1.0), value_or<T>(bias, ch, 0.0));
          fill_slots(sc, c, l.s, a.scale);
          fill_slots(sh, c, l.s, a.shift);
        }
        block_normalize(px + off, py + off, l.n, stride, bk.len, sc, sh, relu);
      });
      return;
    }
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t c = 0; c < l.c; ++c) {
      const double m = rows_sum(px + c * l.s, l.n, l.c * l.s, l.s) / count;
      const double sq = rows_sq_dev(px + c * l.s, l.n, l.c * l.s, l.s, static_cast<T>(m));
      const double is = bn_invstd(sq / count, eps);
      pm[c] = static_cast<T>(m);
      pi[c] = static_cast<T>(is);
      normalize_channel(px, py, l, c, bn_affine(m, is, value_or<T>(weight, c, 1.0), value_or<T>(bias, c, 0.0)), relu);
    }
  });
}

void CpuBackend::batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                        const Tensor& running_mean, const Tensor& running_var, double eps,
                                        bool relu, Tensor& y) {
  if (blocked_batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, relu, y)) return;
  dispatch_float(x.dtype(), "batchnorm_forward_eval", [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_of(x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T* rm = running_mean.data<T>();
    const T* rv = running_var.data<T>();
    if (l.s < kSmallPlane) {
      for_each_block(l, x.numel(), [&](const Block& bk) {
        T sc[kBlockElems], sh[kBlockElems];
        for (int64_t c = 0; c < bk.b; ++c) {
          const int64_t ch = bk.c0 + c;
          const BnAffine a = bn_affine(static_cast<double>(rm[ch]), bn_invstd(static_cast<double>(rv[ch]), eps),
                                       value_or<T>(weight, ch, 1.0), value_or<T>(bias, ch, 0.0));
          fill_slots(sc, c, l.s, a.scale);
          fill_slots(sh, c, l.s, a.shift);
        }
        block_normalize(px + bk.c0 * l.s, py + bk.c0 * l.s, l.n, l.c * l.s, bk.len, sc, sh, relu);
      });
      return;
    }
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t c = 0; c < l.c; ++c) {
      normalize_channel(px, py, l, c,
                        bn_affine(static_cast<double>(rm[c]), bn_invstd(static_cast<double>(rv[c]), eps),
                                  value_or<T>(weight, c, 1.0), value_or<T>(bias, c, 0.0)),
                        relu);
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
  if (blocked_batchnorm_backward(gy, x, weight, mean, invstd, training, relu_out, gx, gweight, gbias)) return;
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
    // gx = scale * (gy - mean_g - (x - m) * proj) = a * gy + b * x + k, per channel.
    struct GxCoef {
      double a, b, k;
    };
    auto gx_coef = [&](double m, double is, double w, double sum_g, double sum_g_xmu) {
      const double scale = w * is;
      const double mean_g = training ? sum_g / count : 0.0;
      const double proj = training ? is * is * sum_g_xmu / count : 0.0;
      return GxCoef{scale, -scale * proj, scale * (m * proj - mean_g)};
    };
    if (l.s < kSmallPlane) {
      for_each_block(l, x.numel(), [&](const Block& bk) {
        const int64_t off = bk.c0 * l.s, stride = l.c * l.s;
        double acc_g[kBlockElems], acc_gx[kBlockElems];
        T mv[kBlockElems], av[kBlockElems], bv[kBlockElems], kv[kBlockElems];
        std::fill(acc_g, acc_g + bk.len, 0.0);
        std::fill(acc_gx, acc_gx + bk.len, 0.0);
        for (int64_t c = 0; c < bk.b; ++c) fill_slots(mv, c, l.s, static_cast<double>(pm[bk.c0 + c]));
        block_backward_sums(pg + off, px + off, pr ? pr + off : nullptr, l.n, stride, bk.len, mv, acc_g, acc_gx);
        for (int64_t c = 0; c < bk.b; ++c) {
          const int64_t ch = bk.c0 + c;
          const double sum_g = slot_total(acc_g, c, l.s), sum_g_xmu = slot_total(acc_gx, c, l.s);
          const double is = pi[ch];
          if (pgb) pgb[ch] = static_cast<T>(sum_g);
          if (pgw) pgw[ch] = static_cast<T>(sum_g_xmu * is);
          const GxCoef k = gx_coef(static_cast<double>(pm[ch]), is, value_or<T>(weight, ch, 1.0), sum_g, sum_g_xmu);
          fill_slots(av, c, l.s, k.a);
          fill_slots(bv, c, l.s, k.b);
          fill_slots(kv, c, l.s, k.k);
        }
        if (pgx)
          block_backward_gx(pg + off, px + off, pr ? pr + off : nullptr, pgx + off, l.n, stride, bk.len, av, bv, kv);
      });
      return;
    }
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
      const GxCoef k = gx_coef(m, is, w, sum_g, sum_g_xmu);
      backward_rows_gx(pg + c * l.s, px + c * l.s, pr ? pr + c * l.s : nullptr, pgx + c * l.s, l.n, l.c * l.s, l.s,
                       static_cast<T>(k.a), static_cast<T>(k.b), static_cast<T>(k.k));
    }
  });
}

}  // namespace retort::cpu
