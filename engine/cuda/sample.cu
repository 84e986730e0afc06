// CUDA resampling over NCHW with the CPU reference's rules: nearest-neighbour upsampling
// (engine/cpu/pool.cpp, PyTorch's mode="nearest") and bilinear grid sampling (engine/cpu/sample.cpp,
// zero padding, align_corners=false).
//
// upsample_nearest2d: output row d reads input row floor(float(d) * float(In / Out)), clamped to
// In - 1, computed in float as PyTorch and the CPU do (the float rounding decides some boundary
// cases, so the scale is formed on the host exactly as the CPU forms it). The backward gathers: one
// thread per input element sums, in ascending (oh, ow) order, the gradients of the outputs that read
// it, which is the CPU's scatter order, so results match it bit for bit without atomics.
//
// grid_sample: one thread per output location (n, oh, ow) computes the bilinear corners once and
// loops over the channels, as the CPU does; coordinates and blends are in double. The grid gradient
// belongs to its location's thread alone (summed over channels in double) and is deterministic. The
// input gradient is a scatter (four neighbours per location and channel, shared between nearby
// locations, wherever the grid points), and has two routes:
//   - by default, gx is zeroed and accumulated with atomicAdd in one kernel; the order of the
//     additions, and so the last bits of gx in F32, may vary between runs;
//   - in deterministic mode (cuda_device.h), it gathers. Each location is filed under the bucket of
//     its top-left neighbour (y0, x0), y0 in [-1, H-1] and x0 in [-1, W-1] (the others touch no
//     pixel): bucket sizes are counted (integer atomics, an exact count), scanned into offsets per
//     sample, and filled in ascending location order by one block per sample (grid_fill_kernel).
//     Then one thread per input element merges, in ascending location order, the four buckets whose
//     locations can reach it — (h, w), (h, w-1), (h-1, w), (h-1, w-1) — and adds their shares in T
//     from zero: the CPU's scatter order, so gx matches the CPU bit for bit and is the same in every
//     run. Four kernels where the default route has one, each linear in the grid or the input.
#include <climits>
#include <cmath>

#include "engine/cuda/cuda_device.h"
#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

// ---- nearest-neighbour upsampling ----------------------------------------------------------------

struct Nearest {
  int64_t h = 0, w = 0, oh = 0, ow = 0;
  float scale_h = 0, scale_w = 0;  // float(In) / float(Out), formed on the host as on the CPU
};

Nearest nearest_of(const Tensor& in, const Tensor& out) {
  Nearest g;
  g.h = in.shape()[2];
  g.w = in.shape()[3];
  g.oh = out.shape()[2];
  g.ow = out.shape()[3];
  g.scale_h = g.oh > 0 ? static_cast<float>(g.h) / static_cast<float>(g.oh) : 0.0f;
  g.scale_w = g.ow > 0 ? static_cast<float>(g.w) / static_cast<float>(g.ow) : 0.0f;
  return g;
}

// The input row (or column) that output d reads.
__device__ inline int64_t nearest_source(int64_t d, float scale, int64_t in) {
  return min(static_cast<int64_t>(floorf(static_cast<float>(d) * scale)), in - 1);
}

template <class T>
__global__ void upsample_nearest_forward_kernel(const T* x, T* y, Nearest g, int64_t total) {
  RETORT_GRID_STRIDE(o, total) {
    const int64_t ow = o % g.ow, oh = (o / g.ow) % g.oh, pl = o / (g.oh * g.ow);
    y[o] = x[(pl * g.h + nearest_source(oh, g.scale_h, g.h)) * g.w + nearest_source(ow, g.scale_w, g.w)];
  }
}

// The outputs d in [lo, hi] that may read input i: d * In / Out lies within a rounding error of
// [i, i + 1), so d lies in [i*Out/In, (i+1)*Out/In] widened by one on each side; the caller checks
// each candidate with nearest_source itself. Input In - 1 also takes every clamped output up to Out - 1.
__device__ inline void nearest_readers(int64_t i, int64_t in, int64_t out, int64_t& lo, int64_t& hi) {
  lo = max(i * out / in - 1, int64_t(0));
  hi = min(((i + 1) * out + in - 1) / in + 1, out - 1);
}

template <class T>
__global__ void upsample_nearest_backward_kernel(const T* gy, T* gx, Nearest g, int64_t total) {
  RETORT_GRID_STRIDE(i, total) {
    const int64_t w = i % g.w, h = (i / g.w) % g.h, pl = i / (g.h * g.w);
    const T* gp = gy + pl * g.oh * g.ow;
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    nearest_readers(h, g.h, g.oh, oh_lo, oh_hi);
    nearest_readers(w, g.w, g.ow, ow_lo, ow_hi);
    T acc = 0;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      if (nearest_source(oh, g.scale_h, g.h) != h) continue;
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow)
        if (nearest_source(ow, g.scale_w, g.w) == w) acc += gp[oh * g.ow + ow];
    }
    gx[i] = acc;
  }
}

// ---- grid sampling -------------------------------------------------------------------------------

struct GridGeom {
  int64_t n = 0, c = 0, h = 0, w = 0, oh = 0, ow = 0;
};

// The four bilinear neighbours of one grid point (the CPU's Corners, same arithmetic).
struct Corners {
  int64_t x0 = 0, y0 = 0;  // top-left neighbour; the others are +1 in x and/or y
  double wx = 0, wy = 0;   // weight of the +1 neighbour along x and along y
  bool nan = false;        // a NaN coordinate: the output is NaN rather than silently 0
  bool in_x0 = false, in_x1 = false, in_y0 = false, in_y1 = false;
};

// Grid value g in [-1, 1] -> pixel coordinate ((g + 1) * size - 1) / 2; the product is rounded on its
// own (__dmul_rn: no fused multiply-add), as on the CPU, because floor() of the result picks the
// neighbours. Clamped to [-2, size + 1], beyond which every neighbour is padding anyway.
__device__ inline double pixel_coord(double g, int64_t size) {
  const double v = (__dmul_rn(g + 1.0, static_cast<double>(size)) - 1.0) / 2.0;
  return fmin(fmax(v, -2.0), static_cast<double>(size) + 1.0);
}

__device__ inline Corners corners(double gx, double gy, int64_t H, int64_t W) {
  Corners c;
  if (isnan(gx) || isnan(gy)) {
    c.nan = true;
    return c;
  }
  const double ix = pixel_coord(gx, W), iy = pixel_coord(gy, H);
  const double fx = floor(ix), fy = floor(iy);
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

// The four neighbour values of one channel plane (0 outside): v00 top-left, v01 x + 1, v10 y + 1, v11 both.
template <class T>
__device__ inline void neighbours(const T* plane, int64_t W, const Corners& c, double& v00, double& v01, double& v10,
                                  double& v11) {
  const int64_t i = c.y0 * W + c.x0;  // flat index of the top-left neighbour (may lie outside)
  v00 = c.in_y0 && c.in_x0 ? static_cast<double>(plane[i]) : 0.0;
  v01 = c.in_y0 && c.in_x1 ? static_cast<double>(plane[i + 1]) : 0.0;
  v10 = c.in_y1 && c.in_x0 ? static_cast<double>(plane[i + W]) : 0.0;
  v11 = c.in_y1 && c.in_x1 ? static_cast<double>(plane[i + W + 1]) : 0.0;
}

// The corners of grid location r (flat over [N, OH, OW]): every kernel reads the grid through this, so
// the forward, the backwards and the deterministic gather's count and fill agree on each location.
template <class T>
__device__ inline Corners corners_at(const T* grid, int64_t r, const GridGeom& g) {
  return corners(static_cast<double>(grid[r * 2]), static_cast<double>(grid[r * 2 + 1]), g.h, g.w);
}

// One thread per output location (n, oh, ow); consecutive threads write consecutive outputs of each
// channel plane.
template <class T>
__global__ void grid_sample_forward_kernel(const T* x, const T* grid, T* y, GridGeom g, int64_t total) {
  RETORT_GRID_STRIDE(r, total) {
    const int64_t out_plane = g.oh * g.ow, n = r / out_plane, o = r - n * out_plane;
    const Corners c = corners_at(grid, r, g);
    for (int64_t ch = 0; ch < g.c; ++ch) {
      T* out = y + (n * g.c + ch) * out_plane + o;
      if (c.nan) {
        *out = static_cast<T>(NAN);
        continue;
      }
      double v00, v01, v10, v11;
      neighbours(x + (n * g.c + ch) * g.h * g.w, g.w, c, v00, v01, v10, v11);
      *out = static_cast<T>((v00 * (1 - c.wx) + v01 * c.wx) * (1 - c.wy) + (v10 * (1 - c.wx) + v11 * c.wx) * c.wy);
    }
  }
}

// One thread per output location: scatters gy's bilinear shares into gx (atomics, gx zeroed first)
// and writes the location's grid gradient. Either output may be null.
template <class T>
__global__ void grid_sample_backward_kernel(const T* gy, const T* x, const T* grid, T* gx, T* ggrid, GridGeom g,
                                            int64_t total) {
  RETORT_GRID_STRIDE(r, total) {
    const int64_t out_plane = g.oh * g.ow, plane = g.h * g.w, n = r / out_plane, o = r - n * out_plane;
    const Corners c = corners_at(grid, r, g);
    double dix = 0, diy = 0;  // d(sum over channels of gy * y) / d(ix, iy)
    for (int64_t ch = 0; ch < g.c && !c.nan; ++ch) {
      const double go = static_cast<double>(gy[(n * g.c + ch) * out_plane + o]);
      if (gx) {
        T* p = gx + (n * g.c + ch) * plane;
        const int64_t i = c.y0 * g.w + c.x0;
        if (c.in_y0 && c.in_x0) atomicAdd(p + i, static_cast<T>(go * (1 - c.wx) * (1 - c.wy)));
        if (c.in_y0 && c.in_x1) atomicAdd(p + i + 1, static_cast<T>(go * c.wx * (1 - c.wy)));
        if (c.in_y1 && c.in_x0) atomicAdd(p + i + g.w, static_cast<T>(go * (1 - c.wx) * c.wy));
        if (c.in_y1 && c.in_x1) atomicAdd(p + i + g.w + 1, static_cast<T>(go * c.wx * c.wy));
      }
      if (ggrid) {
        double v00, v01, v10, v11;
        neighbours(x + (n * g.c + ch) * plane, g.w, c, v00, v01, v10, v11);
        dix += go * ((v01 - v00) * (1 - c.wy) + (v11 - v10) * c.wy);
        diy += go * ((v10 - v00) * (1 - c.wx) + (v11 - v01) * c.wx);
      }
    }
    if (ggrid) {
      // d ix / d gx = W / 2 and d iy / d gy = H / 2.
      T* gg = ggrid + r * 2;
      gg[0] = static_cast<T>(c.nan ? static_cast<double>(NAN) : dix * static_cast<double>(g.w) / 2.0);
      gg[1] = static_cast<T>(c.nan ? static_cast<double>(NAN) : diy * static_cast<double>(g.h) / 2.0);
    }
  }
}

// ---- deterministic input gradient (see the top) --------------------------------------------------

// The bucket of a location's top-left neighbour, in [0, (H+1)(W+1)), or -1 when no neighbour is inside
// (a NaN coordinate, or more than one pixel outside).
__device__ inline int64_t bucket_of(const Corners& c, const GridGeom& g) {
  if (c.nan || c.y0 < -1 || c.y0 > g.h - 1 || c.x0 < -1 || c.x0 > g.w - 1) return -1;
  return (c.y0 + 1) * (g.w + 1) + (c.x0 + 1);
}

// Per location: counts[n][bucket] += 1 (counts: N rows of B + 1, zeroed).
template <class T>
__global__ void grid_count_kernel(const T* grid, int* counts, GridGeom g, int64_t buckets, int64_t total) {
  RETORT_GRID_STRIDE(r, total) {
    const int64_t n = r / (g.oh * g.ow);
    const int64_t b = bucket_of(corners_at(grid, r, g), g);
    if (b >= 0) atomicAdd(counts + n * (buckets + 1) + b, 1);
  }
}

// One block per sample: counts -> exclusive offsets in place (row n holds B + 1 entries; the last
// becomes the sample's total). A Hillis-Steele scan over blockDim.x entries at a time, carried over.
constexpr int kScanThreads = 256;
__global__ void grid_scan_kernel(int* counts, int64_t rows, int64_t len) {
  __shared__ int buf[kScanThreads];
  const int tid = static_cast<int>(threadIdx.x);
  for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
    int* row = counts + n * len;
    int carry = 0;
    for (int64_t base = 0; base < len; base += kScanThreads) {
      const int64_t i = base + tid;
      const int v = i < len ? row[i] : 0;
      int x = v;
      for (int off = 1; off < kScanThreads; off <<= 1) {
        buf[tid] = x;
        __syncthreads();
        if (tid >= off) x += buf[tid - off];
        __syncthreads();
      }
      buf[tid] = x;
      __syncthreads();
      const int chunk_total = buf[kScanThreads - 1];
      __syncthreads();
      if (i < len) row[i] = carry + x - v;
      carry += chunk_total;
    }
  }
}

// One block per sample: files each location's index o in its bucket, in ascending o. The block takes
// kScanThreads locations at a time, in order; a thread's slot is its bucket's cursor plus the number
// of earlier threads of the chunk in the same bucket (read from the chunk's keys in shared memory),
// and the chunk's last thread of each bucket advances the cursor once every thread has read it. No
// atomics and no sort: the lists come out ordered, and the work is linear in the locations however
// they crowd into buckets (a grid sending every location to one point included).
template <class T>
__global__ void grid_fill_kernel(const T* grid, const int* offsets, int* cursor, int* entries, GridGeom g,
                                 int64_t buckets) {
  __shared__ int64_t key[kScanThreads];
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t out_plane = g.oh * g.ow;
  for (int64_t n = blockIdx.x; n < g.n; n += gridDim.x) {
    const int* off = offsets + n * (buckets + 1);
    int* cur = cursor + n * buckets;
    int* e = entries + n * out_plane;
    for (int64_t base = 0; base < out_plane; base += kScanThreads) {
      const int64_t o = base + tid;
      int64_t b = -1;
      if (o < out_plane) b = bucket_of(corners_at(grid, n * out_plane + o, g), g);
      key[tid] = b;
      __syncthreads();
      int rank = 0;
      bool last = true;
      if (b >= 0) {
        for (int j = 0; j < tid; ++j) rank += key[j] == b;
        for (int j = tid + 1; j < kScanThreads && last; ++j) last = key[j] != b;
        e[off[b] + cur[b] + rank] = static_cast<int>(o);
      }
      __syncthreads();  // every thread has read its bucket's cursor
      if (b >= 0 && last) cur[b] += rank + 1;
      __syncthreads();  // cursors advanced and keys free before the next chunk
    }
  }
}

// One thread per input element (n, ch, h, w): merges the four buckets whose locations reach it —
// as their top-left (00), top-right (01), bottom-left (10) or bottom-right (11) neighbour — in
// ascending location order and sums the shares with the CPU's expressions.
template <class T>
__global__ void grid_gather_kernel(const T* gy, const T* grid, const int* offsets, const int* entries, T* gx,
                                   GridGeom g, int64_t total) {
  RETORT_GRID_STRIDE(i, total) {
    const int64_t w = i % g.w, h = (i / g.w) % g.h, nc = i / (g.h * g.w), n = nc / g.c;
    const int64_t out_plane = g.oh * g.ow, buckets = (g.h + 1) * (g.w + 1);
    const int* off = offsets + n * (buckets + 1);
    const int* e = entries + n * out_plane;
    // Bucket (y0 + 1, x0 + 1) of the top-left neighbour that puts this pixel in each corner.
    const int64_t b[4] = {(h + 1) * (g.w + 1) + (w + 1), (h + 1) * (g.w + 1) + w, h * (g.w + 1) + (w + 1),
                          h * (g.w + 1) + w};
    int pos[4], end[4];
    for (int k = 0; k < 4; ++k) {
      pos[k] = off[b[k]];
      end[k] = off[b[k] + 1];
    }
    const T* gyp = gy + nc * out_plane;
    T acc = 0;
    for (;;) {
      int best = -1;
      for (int k = 0; k < 4; ++k)
        if (pos[k] < end[k] && (best < 0 || e[pos[k]] < e[pos[best]])) best = k;
      if (best < 0) break;
      const int64_t o = e[pos[best]++];
      const Corners c = corners_at(grid, n * out_plane + o, g);
      const double go = static_cast<double>(gyp[o]);
      switch (best) {
        case 0: acc += static_cast<T>(go * (1 - c.wx) * (1 - c.wy)); break;
        case 1: acc += static_cast<T>(go * c.wx * (1 - c.wy)); break;
        case 2: acc += static_cast<T>(go * (1 - c.wx) * c.wy); break;
        default: acc += static_cast<T>(go * c.wx * c.wy); break;
      }
    }
    gx[i] = acc;
  }
}

GridGeom grid_of(const Tensor& x, const Tensor& grid) {
  GridGeom g;
  g.n = x.shape()[0];
  g.c = x.shape()[1];
  g.h = x.shape()[2];
  g.w = x.shape()[3];
  g.oh = grid.shape()[1];
  g.ow = grid.shape()[2];
  return g;
}

}  // namespace

void CudaBackend::upsample_nearest2d_forward(const Tensor& x, Tensor& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  const Nearest g = nearest_of(x, y);
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "upsample_nearest2d_forward", [&](auto tag) {
    using T = decltype(tag);
    upsample_nearest_forward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(x), ptr<T>(y), g, total);
    RETORT_CUDA_LAUNCH_CHECK("upsample_nearest2d_forward from ", x.meta_str(), " to ", y.meta_str());
  });
}

void CudaBackend::upsample_nearest2d_backward(const Tensor& gy, Tensor& gx) {
  const int64_t total = gx.numel();
  if (total == 0) return;
  const Nearest g = nearest_of(gx, gy);
  cudaStream_t st = ctx().stream();
  dispatch_float(gy.dtype(), "upsample_nearest2d_backward", [&](auto tag) {
    using T = decltype(tag);
    upsample_nearest_backward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(gy), ptr<T>(gx), g, total);
    RETORT_CUDA_LAUNCH_CHECK("upsample_nearest2d_backward from ", gy.meta_str(), " to ", gx.meta_str());
  });
}

void CudaBackend::grid_sample_forward(const Tensor& x, const Tensor& grid, Tensor& y) {
  const GridGeom g = grid_of(x, grid);
  const int64_t total = g.n * g.oh * g.ow;
  if (total == 0 || g.c == 0) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "grid_sample_forward", [&](auto tag) {
    using T = decltype(tag);
    grid_sample_forward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(x), ptr<T>(grid), ptr<T>(y), g,
                                                                          total);
    RETORT_CUDA_LAUNCH_CHECK("grid_sample_forward of ", x.meta_str(), " at grid ", grid.meta_str());
  });
}

void CudaBackend::grid_sample_backward(const Tensor& gy, const Tensor& x, const Tensor& grid, Tensor& gx,
                                       Tensor& ggrid) {
  const GridGeom g = grid_of(x, grid);
  Context& cx = ctx();
  cudaStream_t st = cx.stream();
  const bool want_gx = gx.defined() && gx.numel() > 0, want_ggrid = ggrid.defined() && ggrid.numel() > 0;
  const bool gather = want_gx && deterministic();
  if (want_gx && !gather)
    RETORT_CUDA_CHECK(cudaMemsetAsync(gx.raw_data(), 0, gx.nbytes(), st), "zeroing the grid_sample input gradient ",
                      gx.meta_str());
  const int64_t total = g.n * g.oh * g.ow;
  RETORT_CHECK(!gather || g.oh * g.ow < INT_MAX, "grid_sample_backward (cuda, deterministic): ", g.oh * g.ow,
               " grid locations per sample exceed the gather's 32-bit indices (grid ", grid.meta_str(), ")");
  if (gather && total == 0)
    RETORT_CUDA_CHECK(cudaMemsetAsync(gx.raw_data(), 0, gx.nbytes(), st), "zeroing the grid_sample input gradient ",
                      gx.meta_str());
  if (total == 0 || (!want_gx && !want_ggrid)) return;
  dispatch_float(x.dtype(), "grid_sample_backward", [&](auto tag) {
    using T = decltype(tag);
    if (want_ggrid || !gather) {
      grid_sample_backward_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(
          ptr<T>(gy), ptr<T>(x), ptr<T>(grid), want_gx && !gather ? ptr<T>(gx) : nullptr,
          want_ggrid ? ptr<T>(ggrid) : nullptr, g, total);
      RETORT_CUDA_LAUNCH_CHECK("grid_sample_backward of ", x.meta_str(), " at grid ", grid.meta_str());
    }
    if (!gather) return;
    // Bucket lists in the workspace as int: offsets [N, B + 1], fill cursors [N, B], entries [N, OH*OW].
    const unsigned samples = static_cast<unsigned>(std::min<int64_t>(g.n, 65535));
    const int64_t buckets = (g.h + 1) * (g.w + 1);
    const size_t n_off = static_cast<size_t>(g.n * (buckets + 1)), n_fill = static_cast<size_t>(g.n * buckets);
    int* offsets = static_cast<int*>(cx.workspace((n_off + n_fill + static_cast<size_t>(total)) * sizeof(int)));
    int* cursor = offsets + n_off;
    int* entries = cursor + n_fill;
    RETORT_CUDA_CHECK(cudaMemsetAsync(offsets, 0, (n_off + n_fill) * sizeof(int), st),
                      "zeroing the grid_sample bucket counts");
    grid_count_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(ptr<T>(grid), offsets, g, buckets, total);
    RETORT_CUDA_LAUNCH_CHECK("grid_sample_backward bucket count at grid ", grid.meta_str());
    grid_scan_kernel<<<samples, kScanThreads, 0, st>>>(offsets, g.n, buckets + 1);
    RETORT_CUDA_LAUNCH_CHECK("grid_sample_backward bucket scan at grid ", grid.meta_str());
    grid_fill_kernel<T><<<samples, kScanThreads, 0, st>>>(ptr<T>(grid), offsets, cursor, entries, g, buckets);
    RETORT_CUDA_LAUNCH_CHECK("grid_sample_backward bucket fill at grid ", grid.meta_str());
    const int64_t in_total = gx.numel();
    grid_gather_kernel<T><<<blocks_for(in_total), kThreads, 0, st>>>(ptr<T>(gy), ptr<T>(grid), offsets, entries,
                                                                     ptr<T>(gx), g, in_total);
    RETORT_CUDA_LAUNCH_CHECK("grid_sample_backward input gradient (gather) of ", x.meta_str(), " at grid ",
                             grid.meta_str());
  });
}

}  // namespace retort::cuda
