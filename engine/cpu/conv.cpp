// CPU 2-D convolution kernels, PyTorch's F.conv2d semantics (cross-correlation, zero padding, stride,
// dilation, groups).
//
// General case: im2col + GEMM per sample and group through this backend's gemm() (OpenBLAS). With
// K = Cg*KH*KW, the column matrix of one sample and group is col [K, OH*OW], and
//   forward          y[n, g] [Og, OH*OW] = W_g [Og, K] @ col          (bias pre-filled, beta = 1)
//   backward input   col = W_g^T @ gy[n, g], scattered into gx by col2im (accumulating)
//   backward weight  gW_g += gy[n, g] @ col^T
// F32 calls go to oneDNN first (conv_dnnl.cpp) and come here only for shapes it has no JIT kernel
// for, for the 1x1 shapes that run faster here (small per-sample GEMMs: dnnl_conv2d says which), or
// with RETORT_CPU_CONV=im2col; F64 always runs here. Two special cases:
//  - 1x1 kernel, stride 1, no padding: the input plane [Cg, H*W] already is the column matrix, so
//    there is no im2col/col2im at all.
//  - depthwise (groups == C == O): each group's GEMM would have a single row, which BLAS runs
//    badly, so forward and both backwards are direct loops over one plane at a time.
//
// Threading: with enough samples the batch is spread over OpenMP threads, each owning a column
// buffer allocated once per call. OpenBLAS (OpenMP flavour) runs single-threaded when called inside
// an active parallel region, so those GEMMs do not oversubscribe the cores. With too few samples to
// fill the threads, samples run one after another: im2col/col2im are parallel over rows/channels
// and OpenBLAS threads each GEMM itself. The weight gradient sums over the batch, so each thread
// accumulates its own partial gradient and the partials are added at the end (no atomics, and a
// fixed summation order for a given thread count).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

// Every size of one convolution, taken from the input, weight and output shapes.
struct Geom {
  int64_t N, C, H, W;      // input
  int64_t O, KH, KW;       // weight [O, C/groups, KH, KW]
  int64_t OH, OW;          // output
  int64_t sh, sw, ph, pw, dh, dw, groups;
  int64_t Cg, Og;          // channels per group
  int64_t K() const { return Cg * KH * KW; }   // rows of the column matrix
  int64_t HW() const { return H * W; }
  int64_t OHW() const { return OH * OW; }
  bool depthwise() const { return groups == C && O == C; }
  bool pointwise() const { return KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

Geom make_geom(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p) {
  Geom g{};
  g.N = x[0]; g.C = x[1]; g.H = x[2]; g.W = x[3];
  g.O = w[0]; g.KH = w[2]; g.KW = w[3];
  g.OH = y[2]; g.OW = y[3];
  g.sh = p.stride_h; g.sw = p.stride_w;
  g.ph = p.pad_h; g.pw = p.pad_w;
  g.dh = p.dilation_h; g.dw = p.dilation_w;
  g.groups = p.groups;
  g.Cg = w[1];
  g.Og = g.O / g.groups;
  return g;
}

// The outputs o in [lo, hi) whose input position o*stride + off lies inside [0, in), for a kernel
// tap at offset off = k*dilation - pad. Outside that range the tap reads zero padding.
struct Range {
  int64_t lo, hi;
};
Range valid_outputs(int64_t out, int64_t in, int64_t stride, int64_t off) {
  int64_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  int64_t hi = in - 1 - off < 0 ? 0 : (in - 1 - off) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
  return {lo, hi};
}

// Threads to spread the batch over; 1 = run samples serially and let OpenBLAS and the im2col loops
// use the threads. Fewer samples than half the threads would leave most cores idle in the batch loop.
int batch_threads(int64_t n, int64_t work_per_sample) {
  const int max_threads = omp_get_max_threads();
  if (max_threads <= 1 || n < 2 || n * work_per_sample < kParallelGrain) return 1;
  if (n < max_threads / 2) return 1;
  return static_cast<int>(std::min<int64_t>(n, max_threads));
}

// x [Cg, H, W] of one sample and group -> col [Cg*KH*KW, OH*OW], zeros where a tap reads padding.
template <class T>
void im2col(const T* x, const Geom& g, T* col, bool parallel) {
  const int64_t rows = g.K(), ohw = g.OHW();
#pragma omp parallel for if (parallel && rows * ohw > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (g.KH * g.KW), kh = (r / g.KW) % g.KH, kw = r % g.KW;
    const int64_t offh = kh * g.dh - g.ph, offw = kw * g.dw - g.pw;
    const Range rh = valid_outputs(g.OH, g.H, g.sh, offh), rw = valid_outputs(g.OW, g.W, g.sw, offw);
    const T* xc = x + c * g.HW();
    T* out = col + r * ohw;
    std::fill(out, out + rh.lo * g.OW, T(0));
    for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
      const T* xr = xc + (oh * g.sh + offh) * g.W;
      T* row = out + oh * g.OW;
      std::fill(row, row + rw.lo, T(0));
      if (g.sw == 1) {
        for (int64_t ow = rw.lo; ow < rw.hi; ++ow) row[ow] = xr[ow + offw];
      } else {
        for (int64_t ow = rw.lo; ow < rw.hi; ++ow) row[ow] = xr[ow * g.sw + offw];
      }
      std::fill(row + rw.hi, row + g.OW, T(0));
    }
    std::fill(out + rh.hi * g.OW, out + ohw, T(0));
  }
}

// The adjoint of im2col: gx [Cg, H, W] += col scattered back. Parallel over channels, because the
// taps of one channel overlap in gx and must not race.
template <class T>
void col2im(const T* col, const Geom& g, T* gx, bool parallel) {
  const int64_t ohw = g.OHW(), kk = g.KH * g.KW;
#pragma omp parallel for if (parallel && g.K() * ohw > kParallelGrain)
  for (int64_t c = 0; c < g.Cg; ++c) {
    T* gxc = gx + c * g.HW();
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t offh = kh * g.dh - g.ph;
      const Range rh = valid_outputs(g.OH, g.H, g.sh, offh);
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t offw = kw * g.dw - g.pw;
        const Range rw = valid_outputs(g.OW, g.W, g.sw, offw);
        const T* src = col + (c * kk + kh * g.KW + kw) * ohw;
        for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          T* xr = gxc + (oh * g.sh + offh) * g.W;
          const T* row = src + oh * g.OW;
          for (int64_t ow = rw.lo; ow < rw.hi; ++ow) xr[ow * g.sw + offw] += row[ow];
        }
      }
    }
  }
}

GemmArgs make_gemm(DType dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
                   const void* b, int64_t ldb, void* c, int64_t ldc, double beta) {
  GemmArgs ga;
  ga.trans_a = ta; ga.trans_b = tb;
  ga.m = m; ga.n = n; ga.k = k;
  ga.a = a; ga.lda = lda;
  ga.b = b; ga.ldb = ldb;
  ga.c = c; ga.ldc = ldc;
  ga.beta = beta;
  ga.dtype = dt;
  return ga;
}

// ---- depthwise: direct loops, one (sample, channel) plane at a time --------------------------------

template <class T>
void depthwise_forward(const T* x, const T* w, const T* b, T* y, const Geom& g) {
  const int64_t planes = g.N * g.C, kk = g.KH * g.KW;
#pragma omp parallel for if (planes * g.OHW() * kk > kParallelGrain)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t c = p % g.C;
    const T* xp = x + p * g.HW();
    const T* wc = w + c * kk;
    T* yp = y + p * g.OHW();
    std::fill(yp, yp + g.OHW(), b ? b[c] : T(0));
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t offh = kh * g.dh - g.ph;
      const Range rh = valid_outputs(g.OH, g.H, g.sh, offh);
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t offw = kw * g.dw - g.pw;
        const Range rw = valid_outputs(g.OW, g.W, g.sw, offw);
        const T wv = wc[kh * g.KW + kw];
        for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* xr = xp + (oh * g.sh + offh) * g.W;
          T* yr = yp + oh * g.OW;
          for (int64_t ow = rw.lo; ow < rw.hi; ++ow) yr[ow] += wv * xr[ow * g.sw + offw];
        }
      }
    }
  }
}

template <class T>
void depthwise_backward_input(const T* gy, const T* w, T* gx, const Geom& g) {
  const int64_t planes = g.N * g.C, kk = g.KH * g.KW;
#pragma omp parallel for if (planes * g.OHW() * kk > kParallelGrain)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t c = p % g.C;
    const T* gyp = gy + p * g.OHW();
    const T* wc = w + c * kk;
    T* gxp = gx + p * g.HW();
    std::fill(gxp, gxp + g.HW(), T(0));
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t offh = kh * g.dh - g.ph;
      const Range rh = valid_outputs(g.OH, g.H, g.sh, offh);
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t offw = kw * g.dw - g.pw;
        const Range rw = valid_outputs(g.OW, g.W, g.sw, offw);
        const T wv = wc[kh * g.KW + kw];
        for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          T* xr = gxp + (oh * g.sh + offh) * g.W;
          const T* yr = gyp + oh * g.OW;
          for (int64_t ow = rw.lo; ow < rw.hi; ++ow) xr[ow * g.sw + offw] += wv * yr[ow];
        }
      }
    }
  }
}

// Parallel over channels: each channel's KH*KW taps sum over the whole batch, in double.
template <class T>
void depthwise_backward_weight(const T* gy, const T* x, T* gw, const Geom& g) {
  const int64_t kk = g.KH * g.KW;
#pragma omp parallel if (g.N * g.C * g.OHW() * kk > kParallelGrain)
  {
    std::vector<double> acc(kk);
#pragma omp for
    for (int64_t c = 0; c < g.C; ++c) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t n = 0; n < g.N; ++n) {
        const int64_t p = n * g.C + c;
        const T* xp = x + p * g.HW();
        const T* gyp = gy + p * g.OHW();
        for (int64_t kh = 0; kh < g.KH; ++kh) {
          const int64_t offh = kh * g.dh - g.ph;
          const Range rh = valid_outputs(g.OH, g.H, g.sh, offh);
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            const int64_t offw = kw * g.dw - g.pw;
            const Range rw = valid_outputs(g.OW, g.W, g.sw, offw);
            T s = 0;
            for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
              const T* xr = xp + (oh * g.sh + offh) * g.W;
              const T* yr = gyp + oh * g.OW;
              // simd: lets the compiler reorder this dot product into vector lanes.
#pragma omp simd reduction(+ : s)
              for (int64_t ow = rw.lo; ow < rw.hi; ++ow) s += yr[ow] * xr[ow * g.sw + offw];
            }
            acc[kh * g.KW + kw] += s;
          }
        }
      }
      for (int64_t i = 0; i < kk; ++i) gw[c * kk + i] = static_cast<T>(acc[i]);
    }
  }
}

// ---- general: im2col + GEMM ------------------------------------------------------------------------

template <class T>
void conv_forward(CpuBackend& be, const T* x, const T* w, const T* b, T* y, const Geom& g) {
  if (g.depthwise()) return depthwise_forward(x, w, b, y, g);
  const DType dt = dtype_of<T>::value;
  const int64_t K = g.K(), ohw = g.OHW();
  const bool direct = g.pointwise();
  const int nt = batch_threads(g.N, g.O * K * ohw);
  const bool batch_par = nt > 1;
  std::unique_ptr<T[]> cols(direct ? nullptr : new T[static_cast<size_t>(nt * K * ohw)]);
#pragma omp parallel for num_threads(nt) if (batch_par) schedule(static)
  for (int64_t n = 0; n < g.N; ++n) {
    T* col = direct ? nullptr : cols.get() + omp_get_thread_num() * K * ohw;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* xg = x + (n * g.C + grp * g.Cg) * g.HW();
      T* yg = y + (n * g.O + grp * g.Og) * ohw;
      if (!direct) im2col(xg, g, col, !batch_par);
      if (b)
        for (int64_t o = 0; o < g.Og; ++o) std::fill(yg + o * ohw, yg + (o + 1) * ohw, b[grp * g.Og + o]);
      be.gemm(make_gemm(dt, false, false, g.Og, ohw, K, w + grp * g.Og * K, K, direct ? xg : col, ohw, yg, ohw,
                        b ? 1.0 : 0.0));
    }
  }
}

template <class T>
void conv_backward_input(CpuBackend& be, const T* gy, const T* w, T* gx, const Geom& g) {
  if (g.depthwise()) return depthwise_backward_input(gy, w, gx, g);
  const DType dt = dtype_of<T>::value;
  const int64_t K = g.K(), ohw = g.OHW();
  const bool direct = g.pointwise();
  if (g.Og == 0) {  // nothing flows back; a GEMM with an empty inner dimension is not asked of BLAS
    std::fill(gx, gx + g.N * g.C * g.HW(), T(0));
    return;
  }
  const int nt = batch_threads(g.N, g.O * K * ohw);
  const bool batch_par = nt > 1;
  std::unique_ptr<T[]> cols(direct ? nullptr : new T[static_cast<size_t>(nt * K * ohw)]);
#pragma omp parallel for num_threads(nt) if (batch_par) schedule(static)
  for (int64_t n = 0; n < g.N; ++n) {
    T* col = direct ? nullptr : cols.get() + omp_get_thread_num() * K * ohw;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* gyg = gy + (n * g.O + grp * g.Og) * ohw;
      T* gxg = gx + (n * g.C + grp * g.Cg) * g.HW();
      // col [K, OHW] = W_g^T @ gy_g; in the pointwise case gx_g itself is that matrix.
      be.gemm(make_gemm(dt, true, false, K, ohw, g.Og, w + grp * g.Og * K, K, gyg, ohw, direct ? gxg : col, ohw,
                        0.0));
      if (!direct) {
        std::fill(gxg, gxg + g.Cg * g.HW(), T(0));
        col2im(col, g, gxg, !batch_par);
      }
    }
  }
}

template <class T>
void conv_backward_weight(CpuBackend& be, const T* gy, const T* x, T* gw, const Geom& g) {
  if (g.depthwise()) return depthwise_backward_weight(gy, x, gw, g);
  const DType dt = dtype_of<T>::value;
  const int64_t K = g.K(), ohw = g.OHW(), wsize = g.O * K;
  const bool direct = g.pointwise();
  const int nt = batch_threads(g.N, g.O * K * ohw);
  const bool batch_par = nt > 1;
  std::unique_ptr<T[]> cols(direct ? nullptr : new T[static_cast<size_t>(nt * K * ohw)]);
  // Thread 0 accumulates straight into gw; the others into their own partial, added at the end.
  std::unique_ptr<T[]> partials(nt > 1 ? new T[static_cast<size_t>((nt - 1) * wsize)] : nullptr);
#pragma omp parallel num_threads(nt) if (batch_par)
  {
    const int t = omp_get_thread_num();
    T* acc = t == 0 ? gw : partials.get() + (t - 1) * wsize;
    std::fill(acc, acc + wsize, T(0));
    T* col = direct ? nullptr : cols.get() + t * K * ohw;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* xg = x + (n * g.C + grp * g.Cg) * g.HW();
        const T* gyg = gy + (n * g.O + grp * g.Og) * ohw;
        if (!direct) im2col(xg, g, col, !batch_par);
        // gW_g [Og, K] += gy_g [Og, OHW] @ col^T
        be.gemm(make_gemm(dt, false, true, g.Og, K, ohw, gyg, ohw, direct ? xg : col, ohw, acc + grp * g.Og * K, K,
                          1.0));
      }
    }
  }
  if (nt > 1) {
#pragma omp parallel for if (wsize * (nt - 1) > kParallelGrain)
    for (int64_t i = 0; i < wsize; ++i) {
      T s = gw[i];
      for (int t = 1; t < nt; ++t) s += partials[(t - 1) * wsize + i];
      gw[i] = s;
    }
  }
}

}  // namespace

void CpuBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                                Tensor& y) {
  const Geom g = make_geom(x.shape(), w.shape(), y.shape(), p);
  if (y.numel() == 0) return;
  if (depthwise_conv2d(DnnlConvDir::Forward, x.dtype(), x.shape(), w.shape(), y.shape(), p, x, w, bias, y)) return;
  if (x.dtype() == DType::F32 &&
      dnnl_conv2d(DnnlConvDir::Forward, x.shape(), w.shape(), y.shape(), p, x, w,
                  bias.defined() ? bias.data<float>() : nullptr, y))
    return;
  dispatch_float(x.dtype(), "conv2d_forward", [&](auto tag) {
    using T = decltype(tag);
    conv_forward<T>(*this, x.data<T>(), w.data<T>(), bias.defined() ? bias.data<T>() : nullptr, y.data<T>(), g);
  });
}

// F32 through oneDNN: the batch norm becomes the convolution's epilogue, y = conv * scale + shift with
// scale = w_bn / sqrt(var + eps) and shift = b_bn + (bias - mean) * scale, computed in double by
// bn_affine as batchnorm_forward_eval does, so the only difference from the two-kernel path is where the multiply
// happens (and the rounding of a fused multiply-add). Anything else: the two kernels (Backend's default).
void CpuBackend::conv2d_bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                                        const Tensor& bn_weight, const Tensor& bn_bias, const Tensor& running_mean,
                                        const Tensor& running_var, double eps, bool relu, Tensor& y) {
  if (y.numel() == 0) return;
  if (x.dtype() == DType::F32) {
    const int64_t oc = y.shape()[1];
    std::vector<float> scale(static_cast<size_t>(oc)), shift(static_cast<size_t>(oc));
    const float* rm = running_mean.data<float>();
    const float* rv = running_var.data<float>();
    for (int64_t o = 0; o < oc; ++o) {
      // The convolution's own bias cb shifts the mean the BN subtracts: (conv + cb - mean) * s + b0.
      const double cb = bias.defined() ? static_cast<double>(bias.data<float>()[o]) : 0.0;
      const BnAffine a =
          bn_affine(static_cast<double>(rm[o]) - cb, bn_invstd(static_cast<double>(rv[o]), eps),
                    bn_weight.defined() ? static_cast<double>(bn_weight.data<float>()[o]) : 1.0,
                    bn_bias.defined() ? static_cast<double>(bn_bias.data<float>()[o]) : 0.0);
      scale[static_cast<size_t>(o)] = static_cast<float>(a.scale);
      shift[static_cast<size_t>(o)] = static_cast<float>(a.shift);
    }
    // oneDNN's ReLU epilogue (a max with 0) turns NaN into 0, where relu() and PyTorch keep it. With a
    // non-finite value among the operands — a NaN or infinite weight, input or batch-norm statistic, the
    // ways a NaN reaches this ReLU short of an overflow inside the sum — the ReLU runs after the call, as
    // relu() does (a pass over the output, on this rare path only; the scans are one read of each operand).
    // (A sum is finite unless a NaN or an infinity is among its terms — or finite terms overflow it, when
    // the exact, slower path is taken all the same; it vectorises without a branch.)
    auto all_finite = [](const float* v, int64_t n) {
      float acc = 0.f;
#pragma omp parallel for simd reduction(+ : acc) if (n > (int64_t{1} << 16))
      for (int64_t i = 0; i < n; ++i) acc += v[i];
      return std::isfinite(acc);
    };
    const bool relu_after =
        relu && !(all_finite(scale.data(), oc) && all_finite(shift.data(), oc) &&
                  all_finite(static_cast<const float*>(w.raw_data_any_layout()), w.numel()) &&
                  all_finite(static_cast<const float*>(x.raw_data_any_layout()), x.numel()));
    const DnnlEpilogue epi{scale.data(), shift.data(), relu && !relu_after};
    if (dnnl_conv2d(DnnlConvDir::Forward, x.shape(), w.shape(), y.shape(), p, x, w, nullptr, y, &epi)) {
      if (relu_after) {  // elementwise: the same in any layout y was left in
        float* py = static_cast<float*>(y.raw_data_any_layout());
        const int64_t n = y.numel();
#pragma omp parallel for simd if (n > (int64_t{1} << 16))
        for (int64_t i = 0; i < n; ++i) py[i] = relu_keep_nan(py[i]);
      }
      return;
    }
  }
  Backend::conv2d_bn_eval_forward(x, w, bias, p, bn_weight, bn_bias, running_mean, running_var, eps, relu, y);
}

void CpuBackend::conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p, Tensor& gx) {
  const Geom g = make_geom(gx.shape(), w.shape(), gy.shape(), p);
  if (gx.numel() == 0) return;
  if (depthwise_conv2d(DnnlConvDir::BackwardData, gy.dtype(), gx.shape(), w.shape(), gy.shape(), p, gy, w, Tensor(),
                       gx))
    return;
  if (gy.dtype() == DType::F32 && g.Og > 0 &&
      dnnl_conv2d(DnnlConvDir::BackwardData, gx.shape(), w.shape(), gy.shape(), p, gy, w, nullptr, gx))
    return;
  dispatch_float(gy.dtype(), "conv2d_backward_input", [&](auto tag) {
    using T = decltype(tag);
    conv_backward_input<T>(*this, gy.data<T>(), w.data<T>(), gx.data<T>(), g);
  });
}

void CpuBackend::conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p, Tensor& gw) {
  const Geom g = make_geom(x.shape(), gw.shape(), gy.shape(), p);
  if (gw.numel() == 0) return;
  if (depthwise_conv2d(DnnlConvDir::BackwardWeight, gy.dtype(), x.shape(), gw.shape(), gy.shape(), p, gy, x, Tensor(),
                       gw))
    return;
  if (gy.dtype() == DType::F32 &&
      dnnl_conv2d(DnnlConvDir::BackwardWeight, x.shape(), gw.shape(), gy.shape(), p, gy, x, nullptr, gw))
    return;
  dispatch_float(gy.dtype(), "conv2d_backward_weight", [&](auto tag) {
    using T = decltype(tag);
    conv_backward_weight<T>(*this, gy.data<T>(), x.data<T>(), gw.data<T>(), g);
  });
}

}  // namespace retort::cpu
