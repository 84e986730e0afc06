// CUDA pooling over NCHW with the CPU reference's window, index and rounding rules
// (engine/cpu/pool.cpp): max pool (with I64 argmax indices), average pool (count_include_pad or not)
// and adaptive average pool.
//
// Forwards: one thread per output element, window sums in double.
// Backwards gather: one thread per input element visits, in ascending (oh, ow) order, the outputs
// whose window holds it and sums their shares (average pools) or the gradients of those whose argmax
// it is (max pool) in T from zero. That is the CPU's scatter order, so each gradient element matches
// the CPU bit for bit, with no atomics and no zeroing pass, and overlapping max-pool windows are as
// deterministic as the rest.
#include <cmath>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

// Sizes of one pooling: input planes [H, W], output planes [OH, OW], N*C planes.
struct Geom {
  int64_t planes = 0, h = 0, w = 0, oh = 0, ow = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  bool count_include_pad = true;
  __host__ __device__ int64_t in_plane() const { return h * w; }
  __host__ __device__ int64_t out_plane() const { return oh * ow; }
};

Geom geom_of(const Tensor& in, const Tensor& out) {
  Geom g;
  g.planes = in.shape()[0] * in.shape()[1];
  g.h = in.shape()[2];
  g.w = in.shape()[3];
  g.oh = out.shape()[2];
  g.ow = out.shape()[3];
  return g;
}

Geom geom_of(const Tensor& in, const Tensor& out, const Pool2dParams& p) {
  Geom g = geom_of(in, out);
  g.kh = p.kernel_h;
  g.kw = p.kernel_w;
  g.sh = p.stride_h;
  g.sw = p.stride_w;
  g.ph = p.pad_h;
  g.pw = p.pad_w;
  g.count_include_pad = p.count_include_pad;
  return g;
}

std::string what(const char* op, const Tensor& in, const Tensor& out) {
  return detail::cat(op, " from ", in.meta_str(), " to ", out.meta_str());
}

// ---- max pool ------------------------------------------------------------------------------------

// One thread per output: the first maximum of the window clipped to the input (padding is skipped,
// not read as -inf). The test is the CPU's, strict '>' or isnan: ties keep the first maximum, a NaN
// wins and propagates (the index then follows the window's last NaN).
template <class T>
__global__ void max_pool_forward_kernel(const T* x, T* y, int64_t* indices, Geom g, int64_t total) {
  RETORT_GRID_STRIDE(o, total) {
    const int64_t ow = o % g.ow, oh = (o / g.ow) % g.oh, pl = o / g.out_plane();
    const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const int64_t hs = max(h0, int64_t(0)), he = min(h0 + g.kh, g.h);
    const int64_t ws = max(w0, int64_t(0)), we = min(w0 + g.kw, g.w);
    const T* xp = x + pl * g.in_plane();
    T best = -static_cast<T>(INFINITY);
    int64_t best_i = hs * g.w + ws;
    for (int64_t h = hs; h < he; ++h)
      for (int64_t w = ws; w < we; ++w) {
        const T v = xp[h * g.w + w];
        if (v > best || isnan(v)) {
          best = v;
          best_i = h * g.w + w;
        }
      }
    y[o] = best;
    indices[o] = best_i;
  }
}

// The outputs o whose window [o*stride - pad, o*stride - pad + kernel) holds input position i:
// o*stride <= i + pad and o*stride > i + pad - kernel. Returned as [lo, hi], possibly empty.
__device__ inline void covering_windows(int64_t i, int64_t pad, int64_t kernel, int64_t stride, int64_t out,
                                        int64_t& lo, int64_t& hi) {
  const int64_t below = i + pad - kernel;
  lo = below < 0 ? 0 : below / stride + 1;
  hi = min((i + pad) / stride, out - 1);
}

// The output rows [oh_lo, oh_hi] and columns [ow_lo, ow_hi] whose windows hold input (h, w).
struct Covering {
  int64_t oh_lo, oh_hi, ow_lo, ow_hi;
};
__device__ inline Covering covering(const Geom& g, int64_t h, int64_t w) {
  Covering c;
  covering_windows(h, g.ph, g.kh, g.sh, g.oh, c.oh_lo, c.oh_hi);
  covering_windows(w, g.pw, g.kw, g.sw, g.ow, c.ow_lo, c.ow_hi);
  return c;
}

// One thread per input element: the sum of gy over the outputs whose window holds it and whose argmax
// it is (an argmax always lies in its own window), in ascending (oh, ow) order.
template <class T>
__global__ void max_pool_backward_kernel(const T* gy, const int64_t* indices, T* gx, Geom g, int64_t total) {
  RETORT_GRID_STRIDE(i, total) {
    const int64_t pos = i % g.in_plane(), w = pos % g.w, h = pos / g.w, pl = i / g.in_plane();
    const T* gp = gy + pl * g.out_plane();
    const int64_t* ip = indices + pl * g.out_plane();
    const Covering cw = covering(g, h, w);
    T acc = 0;
    for (int64_t oh = cw.oh_lo; oh <= cw.oh_hi; ++oh)
      for (int64_t ow = cw.ow_lo; ow <= cw.ow_hi; ++ow)
        if (ip[oh * g.ow + ow] == pos) acc += gp[oh * g.ow + ow];
    gx[i] = acc;
  }
}

// ---- average pool --------------------------------------------------------------------------------

// The window of output (oh, ow): it starts at o*stride - pad and spans kernel elements, clipped to the
// padded input for the count_include_pad divisor and to the real input for the summed elements.
struct AvgWindow {
  int64_t hs, he, ws, we;
  double inv_divisor;
};

__device__ inline AvgWindow avg_window(const Geom& g, int64_t oh, int64_t ow) {
  int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  int64_t he = min(hs + g.kh, g.h + g.ph), we = min(ws + g.kw, g.w + g.pw);
  const int64_t padded = (he - hs) * (we - ws);
  hs = max(hs, int64_t(0));
  ws = max(ws, int64_t(0));
  he = min(he, g.h);
  we = min(we, g.w);
  const int64_t divisor = g.count_include_pad ? padded : (he - hs) * (we - ws);
  return {hs, he, ws, we, divisor > 0 ? 1.0 / static_cast<double>(divisor) : 0.0};
}

template <class T>
__global__ void avg_pool_forward_kernel(const T* x, T* y, Geom g, int64_t total) {
  RETORT_GRID_STRIDE(o, total) {
    const int64_t ow = o % g.ow, oh = (o / g.ow) % g.oh, pl = o / g.out_plane();
    const AvgWindow win = avg_window(g, oh, ow);
    const T* xp = x + pl * g.in_plane();
    double acc = 0;
    for (int64_t h = win.hs; h < win.he; ++h)
      for (int64_t w = win.ws; w < win.we; ++w) acc += static_cast<double>(xp[h * g.w + w]);
    y[o] = static_cast<T>(acc * win.inv_divisor);
  }
}

// One thread per input element, gathering the shares of the windows that hold it (see the top).
template <class T>
__global__ void avg_pool_backward_kernel(const T* gy, T* gx, Geom g, int64_t total) {
  RETORT_GRID_STRIDE(i, total) {
    const int64_t w = i % g.w, h = (i / g.w) % g.h, pl = i / g.in_plane();
    const T* gp = gy + pl * g.out_plane();
    const Covering cw = covering(g, h, w);
    T acc = 0;
    for (int64_t oh = cw.oh_lo; oh <= cw.oh_hi; ++oh)
      for (int64_t ow = cw.ow_lo; ow <= cw.ow_hi; ++ow) {
        const AvgWindow win = avg_window(g, oh, ow);
        if (h < win.hs || h >= win.he || w < win.ws || w >= win.we) continue;  // defensive; never true
        // __dmul_rn: a product nvcc may not fuse with the sum (the CPU rounds both, and so must we).
        acc += static_cast<T>(__dmul_rn(static_cast<double>(gp[oh * g.ow + ow]), win.inv_divisor));
      }
    gx[i] = acc;
  }
}

// ---- adaptive average pool -----------------------------------------------------------------------

// Bin o of `out` over `in`: [floor(o*in/out), ceil((o+1)*in/out)).
__device__ inline int64_t bin_start(int64_t o, int64_t in, int64_t out) { return o * in / out; }
__device__ inline int64_t bin_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

template <class T>
__global__ void adaptive_avg_forward_kernel(const T* x, T* y, Geom g, int64_t total) {
  RETORT_GRID_STRIDE(o, total) {
    const int64_t ow = o % g.ow, oh = (o / g.ow) % g.oh, pl = o / g.out_plane();
    const int64_t hs = bin_start(oh, g.h, g.oh), he = bin_end(oh, g.h, g.oh);
    const int64_t ws = bin_start(ow, g.w, g.ow), we = bin_end(ow, g.w, g.ow);
    const T* xp = x + pl * g.in_plane();
    double acc = 0;
    for (int64_t h = hs; h < he; ++h)
      for (int64_t w = ws; w < we; ++w) acc += static_cast<double>(xp[h * g.w + w]);
    y[o] = static_cast<T>(acc / static_cast<double>((he - hs) * (we - ws)));
  }
}

// The bins o holding input position i: bin_end(o) > i <=> o >= floor(i*out/in), and
// bin_start(o) <= i <=> o <= ceil((i+1)*out/in) - 1. Returned as [lo, hi].
__device__ inline void covering_bins(int64_t i, int64_t in, int64_t out, int64_t& lo, int64_t& hi) {
  lo = i * out / in;
  hi = min(((i + 1) * out + in - 1) / in - 1, out - 1);
}

// One thread per input element, gathering its bins' shares in the CPU's order (see the top).
template <class T>
__global__ void adaptive_avg_backward_kernel(const T* gy, T* gx, Geom g, int64_t total) {
  RETORT_GRID_STRIDE(i, total) {
    const int64_t w = i % g.w, h = (i / g.w) % g.h, pl = i / g.in_plane();
    const T* gp = gy + pl * g.out_plane();
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    covering_bins(h, g.h, g.oh, oh_lo, oh_hi);
    covering_bins(w, g.w, g.ow, ow_lo, ow_hi);
    T acc = 0;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      const int64_t hs = bin_start(oh, g.h, g.oh), he = bin_end(oh, g.h, g.oh);
      if (h < hs || h >= he) continue;  // defensive; never true
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const int64_t ws = bin_start(ow, g.w, g.ow), we = bin_end(ow, g.w, g.ow);
        if (w < ws || w >= we) continue;
        acc += static_cast<T>(static_cast<double>(gp[oh * g.ow + ow]) / static_cast<double>((he - hs) * (we - ws)));
      }
    }
    gx[i] = acc;
  }
}

}  // namespace

void CudaBackend::max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) {
  const int64_t total = y.numel();
  if (total == 0) return;
  const Geom g = geom_of(x, y, p);
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "max_pool2d_forward", [&](auto tag) {
    using T = decltype(tag);
    max_pool_forward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(x), ptr<T>(y), ptr<int64_t>(indices),
                                                                       g, total);
    RETORT_CUDA_LAUNCH_CHECK(what("max_pool2d_forward", x, y));
  });
}

void CudaBackend::max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Pool2dParams& p, Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  const Geom g = geom_of(gx, gy, p);
  cudaStream_t st = ctx().stream();
  dispatch_float(gy.dtype(), "max_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    max_pool_backward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(gy), ptr<int64_t>(indices),
                                                                        ptr<T>(gx), g, total);
    RETORT_CUDA_LAUNCH_CHECK(what("max_pool2d_backward", gy, gx));
  });
}

void CudaBackend::avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  const Geom g = geom_of(x, y, p);
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "avg_pool2d_forward", [&](auto tag) {
    using T = decltype(tag);
    avg_pool_forward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(x), ptr<T>(y), g, total);
    RETORT_CUDA_LAUNCH_CHECK(what("avg_pool2d_forward", x, y));
  });
}

void CudaBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  const Geom g = geom_of(gx, gy, p);
  cudaStream_t st = ctx().stream();
  dispatch_float(gy.dtype(), "avg_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    avg_pool_backward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(gy), ptr<T>(gx), g, total);
    RETORT_CUDA_LAUNCH_CHECK(what("avg_pool2d_backward", gy, gx));
  });
}

void CudaBackend::adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  const Geom g = geom_of(x, y);
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "adaptive_avg_pool2d_forward", [&](auto tag) {
    using T = decltype(tag);
    adaptive_avg_forward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(x), ptr<T>(y), g, total);
    RETORT_CUDA_LAUNCH_CHECK(what("adaptive_avg_pool2d_forward", x, y));
  });
}

void CudaBackend::adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  const Geom g = geom_of(gx, gy);
  cudaStream_t st = ctx().stream();
  dispatch_float(gy.dtype(), "adaptive_avg_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    adaptive_avg_backward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(gy), ptr<T>(gx), g, total);
    RETORT_CUDA_LAUNCH_CHECK(what("adaptive_avg_pool2d_backward", gy, gx));
  });
}

}  // namespace retort::cuda
