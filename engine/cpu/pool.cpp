// CPU pooling and nearest-neighbour resampling over NCHW, with PyTorch's window and index rules.
//
// Every kernel loops over the N*C planes in parallel (OpenMP); a plane's output, and in the backward
// its input gradient, belong to one iteration only, so the scatter-adds of the backwards need no
// atomics and results do not depend on the thread count. Backwards zero gx themselves. Window sums
// accumulate in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

struct Planes {
  int64_t count = 0;  // N * C
  int64_t h = 0, w = 0;
};

Planes planes_of(const Tensor& t) { return {t.shape()[0] * t.shape()[1], t.shape()[2], t.shape()[3]}; }

// Adaptive pooling bin i of `out` over `in`: [floor(i*in/out), ceil((i+1)*in/out)).
int64_t bin_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
int64_t bin_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

// Source row/column of each destination one for mode="nearest". PyTorch computes the scale and the
// product in float (not double), which decides some boundary cases, so this does too.
std::vector<int64_t> nearest_sources(int64_t in, int64_t out) {
  std::vector<int64_t> src(static_cast<size_t>(out));
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t d = 0; d < out; ++d)
    src[d] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(d) * scale)), in - 1);
  return src;
}

}  // namespace

// ---- max pool ------------------------------------------------------------------------------------

void CpuBackend::max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) {
  dispatch_float(x.dtype(), "max_pool2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(x), out = planes_of(y);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t* pidx = indices.data<int64_t>();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < in.count; ++pl) {
      const T* xp = px + pl * in.h * in.w;
      for (int64_t oh = 0; oh < out.h; ++oh) {
        const int64_t h0 = oh * p.stride_h - p.pad_h;
        const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + p.kernel_h, in.h);
        for (int64_t ow = 0; ow < out.w; ++ow) {
          const int64_t w0 = ow * p.stride_w - p.pad_w;
          const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w0 + p.kernel_w, in.w);
          // Padding is skipped rather than read as -inf; the index starts on a real element so the
          // backward stays in bounds even for a window that somehow saw only -inf.
          T best = -std::numeric_limits<T>::infinity();
          int64_t best_i = hs * in.w + ws;
          for (int64_t h = hs; h < he; ++h)
            for (int64_t w = ws; w < we; ++w) {
              const T v = xp[h * in.w + w];
              // Strict '>' keeps the first maximum on ties; a NaN wins and propagates, as in PyTorch.
              if (v > best || std::isnan(v)) {
                best = v;
                best_i = h * in.w + w;
              }
            }
          const int64_t o = (pl * out.h + oh) * out.w + ow;
          py[o] = best;
          pidx[o] = best_i;
        }
      }
    }
  });
}

void CpuBackend::max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Pool2dParams&, Tensor& gx) {
  dispatch_float(gy.dtype(), "max_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(gx), out = planes_of(gy);
    const T* pg = gy.data<T>();
    const int64_t* pidx = indices.data<int64_t>();
    T* pgx = gx.data<T>();
    const int64_t in_plane = in.h * in.w, out_plane = out.h * out.w;
#pragma omp parallel for if (gx.numel() + gy.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < in.count; ++pl) {
      T* gp = pgx + pl * in_plane;
      std::fill(gp, gp + in_plane, T(0));
      const T* g = pg + pl * out_plane;
      const int64_t* idx = pidx + pl * out_plane;
      for (int64_t o = 0; o < out_plane; ++o) gp[idx[o]] += g[o];
    }
  });
}

// ---- average pool --------------------------------------------------------------------------------
// A window starts at o*stride - pad and spans kernel elements, clipped to the padded input for the
// count_include_pad divisor and to the real input for the summed elements (and the other divisor).
// Rows and columns clip independently, so the window is a product of a row span (per output row) and
// a column span (per output column), worked out once per call. Both directions run separably: the
// forward sums each output row's input rows into a column-sum row (vectorised), then each window's
// columns; the backward spreads an output row's shares along a row, then adds that row to each input
// row the windows cover. (A loop over the 2-D window per output, with its bounds and divisor worked
// out there, was 3-5x slower: ShuffleNetV1's shortcut pools, session 23.)

namespace {
struct Span {
  int64_t lo, hi;  // clipped to the real input
  int64_t padded;  // length clipped to the padded input only (the count_include_pad divisor's factor)
};

std::vector<Span> avg_spans(int64_t out, int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  std::vector<Span> spans(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const int64_t lo = o * stride - pad, hi = std::min(lo + kernel, in + pad);
    spans[static_cast<size_t>(o)] = {std::max<int64_t>(lo, 0), std::min(hi, in), hi - lo};
  }
  return spans;
}

struct AvgPlan {
  std::vector<Span> rows, cols;
  bool count_include_pad;
  double inv_divisor(const Span& r, const Span& c) const {
    const int64_t d = count_include_pad ? r.padded * c.padded : (r.hi - r.lo) * (c.hi - c.lo);
    return d > 0 ? 1.0 / static_cast<double>(d) : 0.0;
  }
};

AvgPlan avg_plan(const Pool2dParams& p, const Planes& in, const Planes& out) {
  return {avg_spans(out.h, in.h, p.kernel_h, p.stride_h, p.pad_h), avg_spans(out.w, in.w, p.kernel_w, p.stride_w, p.pad_w),
          p.count_include_pad};
}
}  // namespace

void CpuBackend::avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  dispatch_float(x.dtype(), "avg_pool2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(x), out = planes_of(y);
    const AvgPlan plan = avg_plan(p, in, out);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel if (x.numel() > kParallelGrain)
    {
      std::vector<double> colsum(static_cast<size_t>(in.w));
#pragma omp for
      for (int64_t pl = 0; pl < in.count; ++pl) {
        const T* xp = px + pl * in.h * in.w;
        T* yp = py + pl * out.h * out.w;
        for (int64_t oh = 0; oh < out.h; ++oh) {
          const Span& r = plan.rows[static_cast<size_t>(oh)];
          std::fill(colsum.begin(), colsum.end(), 0.0);
          for (int64_t h = r.lo; h < r.hi; ++h) {
            const T* xr = xp + h * in.w;
            for (int64_t w = 0; w < in.w; ++w) colsum[static_cast<size_t>(w)] += static_cast<double>(xr[w]);
          }
          for (int64_t ow = 0; ow < out.w; ++ow) {
            const Span& c = plan.cols[static_cast<size_t>(ow)];
            double acc = 0;
            for (int64_t w = c.lo; w < c.hi; ++w) acc += colsum[static_cast<size_t>(w)];
            yp[oh * out.w + ow] = static_cast<T>(acc * plan.inv_divisor(r, c));
          }
        }
      }
    }
  });
}

void CpuBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  dispatch_float(gy.dtype(), "avg_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(gx), out = planes_of(gy);
    const AvgPlan plan = avg_plan(p, in, out);
    const T* pg = gy.data<T>();
    T* pgx = gx.data<T>();
#pragma omp parallel if (gx.numel() > kParallelGrain)
    {
      std::vector<T> spread(static_cast<size_t>(in.w));
#pragma omp for
      for (int64_t pl = 0; pl < in.count; ++pl) {
        T* gp = pgx + pl * in.h * in.w;
        std::fill(gp, gp + in.h * in.w, T(0));
        const T* g = pg + pl * out.h * out.w;
        for (int64_t oh = 0; oh < out.h; ++oh) {
          const Span& r = plan.rows[static_cast<size_t>(oh)];
          std::fill(spread.begin(), spread.end(), T(0));
          for (int64_t ow = 0; ow < out.w; ++ow) {
            const Span& c = plan.cols[static_cast<size_t>(ow)];
            const T share = static_cast<T>(static_cast<double>(g[oh * out.w + ow]) * plan.inv_divisor(r, c));
            for (int64_t w = c.lo; w < c.hi; ++w) spread[static_cast<size_t>(w)] += share;
          }
          for (int64_t h = r.lo; h < r.hi; ++h) {
            T* gr = gp + h * in.w;
            for (int64_t w = 0; w < in.w; ++w) gr[w] += spread[static_cast<size_t>(w)];
          }
        }
      }
    }
  });
}

// ---- adaptive average pool -----------------------------------------------------------------------

void CpuBackend::adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) {
  dispatch_float(x.dtype(), "adaptive_avg_pool2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(x), out = planes_of(y);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < in.count; ++pl) {
      const T* xp = px + pl * in.h * in.w;
      T* yp = py + pl * out.h * out.w;
      for (int64_t oh = 0; oh < out.h; ++oh) {
        const int64_t hs = bin_start(oh, in.h, out.h), he = bin_end(oh, in.h, out.h);
        for (int64_t ow = 0; ow < out.w; ++ow) {
          const int64_t ws = bin_start(ow, in.w, out.w), we = bin_end(ow, in.w, out.w);
          double acc = 0;
          for (int64_t h = hs; h < he; ++h)
            for (int64_t w = ws; w < we; ++w) acc += xp[h * in.w + w];
          yp[oh * out.w + ow] = static_cast<T>(acc / static_cast<double>((he - hs) * (we - ws)));
        }
      }
    }
  });
}

void CpuBackend::adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& gx) {
  dispatch_float(gy.dtype(), "adaptive_avg_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(gx), out = planes_of(gy);
    const T* pg = gy.data<T>();
    T* pgx = gx.data<T>();
#pragma omp parallel for if (gx.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < in.count; ++pl) {
      T* gp = pgx + pl * in.h * in.w;
      std::fill(gp, gp + in.h * in.w, T(0));
      const T* g = pg + pl * out.h * out.w;
      for (int64_t oh = 0; oh < out.h; ++oh) {
        const int64_t hs = bin_start(oh, in.h, out.h), he = bin_end(oh, in.h, out.h);
        for (int64_t ow = 0; ow < out.w; ++ow) {
          const int64_t ws = bin_start(ow, in.w, out.w), we = bin_end(ow, in.w, out.w);
          const T share =
              static_cast<T>(static_cast<double>(g[oh * out.w + ow]) / static_cast<double>((he - hs) * (we - ws)));
          for (int64_t h = hs; h < he; ++h)
            for (int64_t w = ws; w < we; ++w) gp[h * in.w + w] += share;
        }
      }
    }
  });
}

// ---- nearest-neighbour resampling ----------------------------------------------------------------

void CpuBackend::upsample_nearest2d_forward(const Tensor& x, Tensor& y) {
  dispatch_float(x.dtype(), "upsample_nearest2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(x), out = planes_of(y);
    const std::vector<int64_t> src_h = nearest_sources(in.h, out.h), src_w = nearest_sources(in.w, out.w);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for if (y.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < in.count; ++pl) {
      const T* xp = px + pl * in.h * in.w;
      T* yp = py + pl * out.h * out.w;
      for (int64_t oh = 0; oh < out.h; ++oh) {
        const T* row = xp + src_h[oh] * in.w;
        for (int64_t ow = 0; ow < out.w; ++ow) yp[oh * out.w + ow] = row[src_w[ow]];
      }
    }
  });
}

void CpuBackend::upsample_nearest2d_backward(const Tensor& gy, Tensor& gx) {
  dispatch_float(gy.dtype(), "upsample_nearest2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const Planes in = planes_of(gx), out = planes_of(gy);
    const std::vector<int64_t> src_h = nearest_sources(in.h, out.h), src_w = nearest_sources(in.w, out.w);
    const T* pg = gy.data<T>();
    T* pgx = gx.data<T>();
#pragma omp parallel for if (gy.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < in.count; ++pl) {
      T* gp = pgx + pl * in.h * in.w;
      std::fill(gp, gp + in.h * in.w, T(0));
      const T* g = pg + pl * out.h * out.w;
      for (int64_t oh = 0; oh < out.h; ++oh) {
        T* row = gp + src_h[oh] * in.w;
        for (int64_t ow = 0; ow < out.w; ++ow) row[src_w[ow]] += g[oh * out.w + ow];
      }
    }
  });
}

}  // namespace retort::cpu
