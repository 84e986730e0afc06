// CUDA reductions over a set of dimensions (engine/cpu/reduce.cpp is the reference).
//
// Any set of reduced dimensions is handled by one kernel. On the host, x's dimensions are split into
// the kept ones (which index the output) and the reduced ones, and each list is merged into as few
// (size, stride) pairs as possible. Output element o then reads x at kept.offset(o) + red.offset(k)
// for every reduced index k in [0, red).
//
// A block of 256 threads handles `out_lanes` consecutive outputs with `red_lanes` threads on each
// (out_lanes * red_lanes = 256). Each thread folds every red_lanes-th element of its output's
// reduction, then the red_lanes partial results are combined by a tree in shared memory. The order of
// operations depends only on the shapes, never on timing, so results are deterministic (no atomics).
// The lane layout follows memory:
//  - when x's innermost dimension is kept (e.g. a sum over dim 0 of [N, C]), neighbouring outputs are
//    neighbours in memory, so up to 32 outputs run side by side, threadIdx-fastest, and a warp reads
//    32 consecutive elements; the remaining threads split each reduction;
//  - otherwise the reduction runs along contiguous memory (a sum over the last dims, over H, W of
//    NCHW), so the reduction lanes are threadIdx-fastest: one block per output for long reductions,
//    and for short ones several outputs per block (as few lanes each as the reduction needs).
// Sums accumulate in double, as on the CPU.
#include <limits>
#include <type_traits>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

constexpr int kMaxDims = 8;

// Merged (size, stride) dimensions; offset(i) is the element offset of flat index i over them.
struct Dims {
  int nd = 0;
  int64_t size[kMaxDims] = {}, stride[kMaxDims] = {};
  __device__ int64_t offset(int64_t i) const {
    if (nd == 0) return 0;
    int64_t off = 0;
    for (int d = nd - 1; d > 0; --d) {  // innermost first; the outermost index is what remains
      off += (i % size[d]) * stride[d];
      i /= size[d];
    }
    return off + i * stride[0];
  }
};

// Drops size-1 dimensions and merges neighbours that step through memory as one.
Dims merge_dims(const std::vector<int64_t>& size, const std::vector<int64_t>& stride, const Tensor& x,
                const char* which) {
  std::vector<int64_t> ms, mt;
  for (size_t d = 0; d < size.size(); ++d) {
    if (size[d] == 1) continue;
    if (!ms.empty() && mt.back() == size[d] * stride[d]) {
      ms.back() *= size[d];
      mt.back() = stride[d];
    } else {
      ms.push_back(size[d]);
      mt.push_back(stride[d]);
    }
  }
  RETORT_CHECK(ms.size() <= static_cast<size_t>(kMaxDims), "reduce (cuda): at most ", kMaxDims, " ", which,
               " dimensions after merging contiguous ones; got ", ms.size(), " for ", x.meta_str());
  Dims r;
  r.nd = static_cast<int>(ms.size());
  for (int d = 0; d < r.nd; ++d) {
    r.size[d] = ms[d];
    r.stride[d] = mt[d];
  }
  return r;
}

template <ReduceOp Op, class A>
__device__ __forceinline__ A identity() {
  if constexpr (Op == ReduceOp::Sum) return A(0);
  else if constexpr (Op == ReduceOp::Max) return -std::numeric_limits<A>::infinity();
  else {
    static_assert(Op == ReduceOp::Min, "identity (CUDA): this ReduceOp has no implementation");
    return std::numeric_limits<A>::infinity();
  }
}

// The CPU's comparisons (dtype.h): a NaN on either side wins, so one NaN makes the max/min NaN.
template <ReduceOp Op, class A>
__device__ __forceinline__ A combine(A acc, A v) {
  if constexpr (Op == ReduceOp::Sum) return acc + v;
  else if constexpr (Op == ReduceOp::Max) return max_keep_nan(acc, v);
  else {
    static_assert(Op == ReduceOp::Min, "combine (CUDA): this ReduceOp has no implementation");
    return min_keep_nan(acc, v);
  }
}

template <ReduceOp Op, class T>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const T* x, T* y, int64_t n_out, int64_t red, Dims kept, Dims rdims, int out_lanes,
                  int red_lanes, bool outputs_fast) {
  using A = std::conditional_t<Op == ReduceOp::Sum, double, T>;  // accumulator
  __shared__ A partial[kThreads];
  const int t = threadIdx.x;
  const int o_lane = outputs_fast ? t % out_lanes : t / red_lanes;
  const int r_lane = outputs_fast ? t / out_lanes : t % red_lanes;
  A* mine = partial + r_lane * out_lanes + o_lane;
  // Block-uniform loop over groups of out_lanes outputs, so every thread reaches each barrier.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * out_lanes; base < n_out;
       base += static_cast<int64_t>(gridDim.x) * out_lanes) {
    const int64_t o = base + o_lane;
    A acc = identity<Op, A>();
    if (o < n_out) {
      const T* px = x + kept.offset(o);
      for (int64_t k = r_lane; k < red; k += red_lanes) acc = combine<Op>(acc, static_cast<A>(px[rdims.offset(k)]));
    }
    *mine = acc;
    __syncthreads();
    for (int s = red_lanes / 2; s > 0; s >>= 1) {  // tree over the reduction lanes of each output
      if (r_lane < s) *mine = combine<Op>(*mine, mine[s * out_lanes]);
      __syncthreads();
    }
    if (r_lane == 0 && o < n_out) {
      y[o] = static_cast<T>(*mine);
    }
    __syncthreads();  // `partial` is rewritten by the next group
  }
}

int pow2_at_least(int64_t n, int cap) {
  int p = 1;
  while (p < n && p < cap) p *= 2;
  return p;
}

}  // namespace

void CudaBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, Tensor& out) {
  RETORT_CHECK(x.numel() > 0 || op == ReduceOp::Sum, "reduce: max/min of an empty tensor ", x.meta_str());
  const int64_t n_out = out.numel();
  if (n_out == 0) return;
  if (dims.empty()) {  // nothing reduced: out is x
    copy(x.raw_data(), out.raw_data(), x.nbytes());
    return;
  }
  // Split x's dimensions (and contiguous strides) into kept and reduced.
  const Shape& shape = x.shape();
  const auto strides = contiguous_strides(shape);
  std::vector<int64_t> ks, kt, rs, rt;
  size_t next = 0;
  for (int d = 0; d < static_cast<int>(shape.size()); ++d) {
    const bool reduced = next < dims.size() && dims[next] == d;
    if (reduced) ++next;
    (reduced ? rs : ks).push_back(shape[d]);
    (reduced ? rt : kt).push_back(strides[d]);
  }
  const Dims kept = merge_dims(ks, kt, x, "kept"), rdims = merge_dims(rs, rt, x, "reduced");
  const int64_t red = shape_numel(rs);  // 0 for an empty sum: the kernel writes 0, as the CPU does

  // Lane layout (see the top of the file).
  const bool outputs_fast = kept.nd > 0 && kept.stride[kept.nd - 1] == 1;
  int out_lanes, red_lanes;
  if (outputs_fast) {
    out_lanes = pow2_at_least(n_out, 32);
    red_lanes = kThreads / out_lanes;
  } else {
    red_lanes = pow2_at_least(red, kThreads);
    out_lanes = kThreads / red_lanes;
  }
  const unsigned grid = blocks_for(n_out, out_lanes);
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    const T* px = ptr<T>(x);
    T* py = ptr<T>(out);
    switch (op) {
      case ReduceOp::Sum:
        reduce_kernel<ReduceOp::Sum, T><<<grid, kThreads, 0, st>>>(px, py, n_out, red, kept, rdims, out_lanes,
                                                                    red_lanes, outputs_fast);
        break;
      case ReduceOp::Max:
        reduce_kernel<ReduceOp::Max, T><<<grid, kThreads, 0, st>>>(px, py, n_out, red, kept, rdims, out_lanes,
                                                                    red_lanes, outputs_fast);
        break;
      case ReduceOp::Min:
        reduce_kernel<ReduceOp::Min, T><<<grid, kThreads, 0, st>>>(px, py, n_out, red, kept, rdims, out_lanes,
                                                                    red_lanes, outputs_fast);
        break;
    }
  });
  static const char* const kNames[] = {"sum", "max", "min"};
  RETORT_CUDA_LAUNCH_CHECK("reduce (", kNames[static_cast<int>(op)], ") of ", x.meta_str(), " into ",
                           out.meta_str());
}

}  // namespace retort::cuda
