// Launch helpers shared by the CUDA kernel files (device code; include only from .cu files).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/cuda/context.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/tensor.h"

namespace retort::cuda {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements (capped: the loop covers the rest).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, 65535LL * 8));
}

#define RETORT_GRID_STRIDE(i, n)                                                                      \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);              \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Runs f(tag) with tag a value of the C++ type of `dt` (float or double); throws for other dtypes.
template <class F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: RETORT_FAIL(op, " (cuda): unsupported dtype ", dtype_name(dt), " (expected f32 or f64)");
  }
}

template <class T> inline T* ptr(Tensor& t) { return static_cast<T*>(t.raw_data()); }
template <class T> inline const T* ptr(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}

// Warp and block sums (any blockDim.x that is a multiple of 32, at most 1024).
template <class T>
__device__ inline T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}
template <class T>
__device__ inline T warp_max(T v) {
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}
// Sum over the block; the result is valid in thread 0. `shared` holds 32 values of T.
template <class T>
__device__ inline T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int nwarps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < nwarps ? shared[lane] : T(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

}  // namespace retort::cuda
