// CPU grid sampling: bilinear, zero padding, align_corners=false, as PyTorch's grid_sampler_2d.
//
// A grid point (gx, gy) in [-1, 1] maps to the pixel coordinate ix = ((gx + 1) * W - 1) / 2 (iy
// likewise), so -1 and 1 are the outer edges of the border pixels, not their centres. The four
// neighbouring pixels are blended; a neighbour outside the input contributes 0. Coordinates are
// computed in double. Forward splits (n, output row) across threads; backward splits n only,
// because gx is a scatter-add and each sample owns its own gx slice.
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

// The four bilinear neighbours of one grid point.
struct Corners {
  int64_t x0 = 0, y0 = 0;  // top-left neighbour; the others are +1 in x and/or y
  double wx = 0, wy = 0;   // fractional offsets: weight of the +1 neighbour along x and along y
  bool nan = false;        // a NaN coordinate: the output is NaN rather than silently 0
  bool in_x0 = false, in_x1 = false, in_y0 = false, in_y1 = false;
};

Corners corners(double gx, double gy, int64_t H, int64_t W) {
  Corners c;
  if (std::isnan(gx) || std::isnan(gy)) {
    c.nan = true;
    return c;
  }
  double ix = ((gx + 1.0) * static_cast<double>(W) - 1.0) / 2.0;
  double iy = ((gy + 1.0) * static_cast<double>(H) - 1.0) / 2.0;
  // Beyond one pixel outside every neighbour is padding, so clamping there changes nothing but keeps
  // huge or infinite coordinates from overflowing the integer conversion.
  ix = std::fmin(std::fmax(ix, -2.0), static_cast<double>(W) + 1.0);
  iy = std::fmin(std::fmax(iy, -2.0), static_cast<double>(H) + 1.0);
  const double fx = std::floor(ix), fy = std::floor(iy);
  c.x0 = static_cast<int64_t>(fx);
  c.y0 = static_cast<int64_t>(fy);
  c.wx = ix - fx;
  c.wy = iy - fy;
  c.in_x0 = c.x0 >= 0 && c.x0 < W;
  c.in_x1 = c.x0 + 1 >= 0 && c.x0 + 1 < W;
  c.in_y0 = c.y0 >= 0 && c.y0 < H;
  c.in_y1 = c.y0 + 1 >= 0 && c.y0 + 1 < H;
  return c;
}

// The four neighbour values of one channel plane (0 outside): v00 top-left, v01 top-right (x + 1),
// v10 bottom-left (y + 1), v11 bottom-right.
template <class T>
void neighbours(const T* plane, int64_t W, const Corners& c, double& v00, double& v01, double& v10, double& v11) {
  const int64_t i = c.y0 * W + c.x0;  // flat index of the top-left neighbour (may lie outside)
  v00 = c.in_y0 && c.in_x0 ? static_cast<double>(plane[i]) : 0.0;
  v01 = c.in_y0 && c.in_x1 ? static_cast<double>(plane[i + 1]) : 0.0;
  v10 = c.in_y1 && c.in_x0 ? static_cast<double>(plane[i + W]) : 0.0;
  v11 = c.in_y1 && c.in_x1 ? static_cast<double>(plane[i + W + 1]) : 0.0;
}

template <class T>
void grid_sample_fwd(const T* x, const T* grid, T* y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH,
                     int64_t OW) {
  const int64_t plane = H * W, out_plane = OH * OW;
#pragma omp parallel for if (N * C * out_plane > kParallelGrain)
  for (int64_t r = 0; r < N * OH; ++r) {
    const int64_t n = r / OH, oh = r % OH;
    for (int64_t ow = 0; ow < OW; ++ow) {
      const T* g = grid + ((n * OH + oh) * OW + ow) * 2;
      const Corners c = corners(static_cast<double>(g[0]), static_cast<double>(g[1]), H, W);
      const int64_t o = oh * OW + ow;
      for (int64_t ch = 0; ch < C; ++ch) {
        T* out = y + (n * C + ch) * out_plane + o;
        if (c.nan) {
          *out = std::numeric_limits<T>::quiet_NaN();
          continue;
        }
        double v00, v01, v10, v11;
        neighbours(x + (n * C + ch) * plane, W, c, v00, v01, v10, v11);
        *out = static_cast<T>((v00 * (1 - c.wx) + v01 * c.wx) * (1 - c.wy) + (v10 * (1 - c.wx) + v11 * c.wx) * c.wy);
      }
    }
  }
}

template <class T>
void grid_sample_bwd(const T* gy, const T* x, const T* grid, T* gx, T* ggrid, int64_t N, int64_t C, int64_t H,
                     int64_t W, int64_t OH, int64_t OW) {
  const int64_t plane = H * W, out_plane = OH * OW;
#pragma omp parallel for if (N * C * out_plane > kParallelGrain)
  for (int64_t n = 0; n < N; ++n) {
    if (gx)
      for (int64_t i = 0; i < C * plane; ++i) gx[n * C * plane + i] = T(0);
    for (int64_t o = 0; o < out_plane; ++o) {
      const T* g = grid + (n * out_plane + o) * 2;
      const Corners c = corners(static_cast<double>(g[0]), static_cast<double>(g[1]), H, W);
      double dix = 0, diy = 0;  // d(sum over channels of gy * y) / d(ix, iy)
      for (int64_t ch = 0; ch < C && !c.nan; ++ch) {
        const double go = static_cast<double>(gy[(n * C + ch) * out_plane + o]);
        if (gx) {
          T* p = gx + (n * C + ch) * plane;
          const int64_t i = c.y0 * W + c.x0;
          if (c.in_y0 && c.in_x0) p[i] += static_cast<T>(go * (1 - c.wx) * (1 - c.wy));
          if (c.in_y0 && c.in_x1) p[i + 1] += static_cast<T>(go * c.wx * (1 - c.wy));
          if (c.in_y1 && c.in_x0) p[i + W] += static_cast<T>(go * (1 - c.wx) * c.wy);
          if (c.in_y1 && c.in_x1) p[i + W + 1] += static_cast<T>(go * c.wx * c.wy);
        }
        if (ggrid) {
          double v00, v01, v10, v11;
          neighbours(x + (n * C + ch) * plane, W, c, v00, v01, v10, v11);
          dix += go * ((v01 - v00) * (1 - c.wy) + (v11 - v10) * c.wy);
          diy += go * ((v10 - v00) * (1 - c.wx) + (v11 - v01) * c.wx);
        }
      }
      if (ggrid) {
        T* gg = ggrid + (n * out_plane + o) * 2;
        // d ix / d gx = W / 2 and d iy / d gy = H / 2.
        const double nan = std::numeric_limits<double>::quiet_NaN();
        gg[0] = static_cast<T>(c.nan ? nan : dix * static_cast<double>(W) / 2.0);
        gg[1] = static_cast<T>(c.nan ? nan : diy * static_cast<double>(H) / 2.0);
      }
    }
  }
}

}  // namespace

void CpuBackend::grid_sample_forward(const Tensor& x, const Tensor& grid, Tensor& y) {
  const Shape& s = x.shape();
  dispatch_float(x.dtype(), "grid_sample_forward", [&](auto tag) {
    using T = decltype(tag);
    grid_sample_fwd<T>(x.data<T>(), grid.data<T>(), y.data<T>(), s[0], s[1], s[2], s[3], grid.shape()[1],
                       grid.shape()[2]);
  });
}

void CpuBackend::grid_sample_backward(const Tensor& gy, const Tensor& x, const Tensor& grid, Tensor& gx,
                                      Tensor& ggrid) {
  const Shape& s = x.shape();
  dispatch_float(x.dtype(), "grid_sample_backward", [&](auto tag) {
    using T = decltype(tag);
    grid_sample_bwd<T>(gy.data<T>(), x.data<T>(), grid.data<T>(), gx.defined() ? gx.data<T>() : nullptr,
                       ggrid.defined() ? ggrid.data<T>() : nullptr, s[0], s[1], s[2], s[3], grid.shape()[1],
                       grid.shape()[2]);
  });
}

}  // namespace retort::cpu
