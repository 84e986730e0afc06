// CUDA strided copy: the one kernel behind permute, slice, cat, pad and expand (engine/cpu/copy.cpp is
// the reference).
//
// As on the CPU, the copied shape is first coalesced on the host: size-1 dimensions dropped and
// neighbours merged wherever both views step through them as one. A copy that is then contiguous on
// both sides is a plain cudaMemcpyAsync; anything else runs one thread per element (grid-stride),
// which turns its flat index into a source and a destination offset. Consecutive threads take
// consecutive destination elements of the innermost dimension, so writes (and reads, unless the view
// transposes) are coalesced. Elements are copied as raw 4- or 8-byte words, so one kernel serves every
// dtype.
#include <cstdint>

#include "engine/cuda/kernels.cuh"
#include "engine/kernel_plan.h"

namespace retort::cuda {

namespace {

constexpr int kMaxDims = 8;

struct DeviceCopyPlan {
  int nd = 0;
  int64_t size[kMaxDims] = {}, ss[kMaxDims] = {}, ds[kMaxDims] = {};  // shape, source and destination strides
  int64_t src_offset = 0, dst_offset = 0;
};

// The CPU's plan (kernel_plan.h), in a fixed-size struct a kernel can take by value.
DeviceCopyPlan device_plan(const StridedView& sv, const StridedView& dv, const Shape& shape) {
  const CopyPlan c = coalesce_copy(sv, dv, shape);
  RETORT_CHECK(c.shape.size() <= static_cast<size_t>(kMaxDims), "strided_copy (cuda): at most ", kMaxDims,
               " dimensions after merging contiguous ones; got ", c.shape.size(), " for shape ", shape_str(shape));
  DeviceCopyPlan p;
  p.nd = static_cast<int>(c.shape.size());
  for (int d = 0; d < p.nd; ++d) {
    p.size[d] = c.shape[d];
    p.ss[d] = c.src.strides[d];
    p.ds[d] = c.dst.strides[d];
  }
  p.src_offset = c.src.offset;
  p.dst_offset = c.dst.offset;
  return p;
}

// W is an unsigned word of the element's size: the copy moves bits, whatever the dtype.
template <class W>
__global__ void __launch_bounds__(kThreads) strided_copy_kernel(const W* src, W* dst, int64_t n, DeviceCopyPlan p) {
  RETORT_GRID_STRIDE(i, n) {
    int64_t os = p.src_offset, od = p.dst_offset, rem = i;
    for (int d = p.nd - 1; d > 0; --d) {  // innermost first; the outermost index is what remains
      const int64_t c = rem % p.size[d];
      rem /= p.size[d];
      os += c * p.ss[d];
      od += c * p.ds[d];
    }
    if (p.nd > 0) {
      os += rem * p.ss[0];
      od += rem * p.ds[0];
    }
    dst[od] = src[os];
  }
}

}  // namespace

void CudaBackend::strided_copy(const Tensor& src, const StridedView& sv, Tensor& dst, const StridedView& dv,
                               const Shape& shape) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  RETORT_CHECK(sv.strides.size() == shape.size() && dv.strides.size() == shape.size(),
               "strided_copy (cuda): views need one stride per dimension of ", shape_str(shape), ", got ",
               sv.strides.size(), " and ", dv.strides.size());
  const DeviceCopyPlan p = device_plan(sv, dv, shape);
  const size_t esize = dtype_size(src.dtype());
  if (p.nd == 1 && p.ss[0] == 1 && p.ds[0] == 1) {  // one contiguous run on both sides
    const char* s = static_cast<const char*>(src.raw_data()) + p.src_offset * static_cast<int64_t>(esize);
    char* d = static_cast<char*>(dst.raw_data()) + p.dst_offset * static_cast<int64_t>(esize);
    copy(s, d, static_cast<size_t>(n) * esize);
    return;
  }
  cudaStream_t st = ctx().stream();
  if (esize == 4) {
    strided_copy_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<uint32_t>(src), ptr<uint32_t>(dst), n, p);
  } else if (esize == 8) {
    strided_copy_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<uint64_t>(src), ptr<uint64_t>(dst), n, p);
  } else {
    RETORT_FAIL("strided_copy (cuda): unsupported dtype ", dtype_name(src.dtype()));
  }
  RETORT_CUDA_LAUNCH_CHECK("strided_copy of ", shape_str(shape), " from ", src.meta_str(), " to ", dst.meta_str());
}

// ---- rows of a table ----------------------------------------------------------------------------

namespace {
// One thread per element; consecutive threads take consecutive elements of a row, so both sides are
// coalesced. W: the element's bits (4 or 8 bytes). d: the row length.
template <class W>
__global__ void __launch_bounds__(kThreads) gather_rows_kernel(const W* table, const int64_t* idx, W* out, int64_t n,
                                                               int64_t d) {
  RETORT_GRID_STRIDE(i, n) {
    const int64_t r = i / d;
    out[i] = table[idx[r] * d + (i - r * d)];
  }
}

template <class W>
__global__ void __launch_bounds__(kThreads) scatter_rows_kernel(W* table, const int64_t* idx, const W* rows, int64_t n,
                                                                int64_t d) {
  RETORT_GRID_STRIDE(i, n) {
    const int64_t r = i / d;
    table[idx[r] * d + (i - r * d)] = rows[i];
  }
}
}  // namespace

void CudaBackend::gather_rows(const Tensor& table, const Tensor& indices, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int64_t d = n / indices.numel();
  cudaStream_t st = ctx().stream();
  if (dtype_size(table.dtype()) == 4)
    gather_rows_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<uint32_t>(table), ptr<int64_t>(indices), ptr<uint32_t>(out), n, d);
  else
    gather_rows_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<uint64_t>(table), ptr<int64_t>(indices), ptr<uint64_t>(out), n, d);
  RETORT_CUDA_LAUNCH_CHECK("gather_rows of ", out.meta_str(), " from ", table.meta_str());
}

void CudaBackend::scatter_rows(Tensor& table, const Tensor& indices, const Tensor& rows) {
  const int64_t n = rows.numel();
  if (n == 0) return;
  const int64_t d = n / indices.numel();
  cudaStream_t st = ctx().stream();
  if (dtype_size(table.dtype()) == 4)
    scatter_rows_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<uint32_t>(table), ptr<int64_t>(indices), ptr<uint32_t>(rows), n, d);
  else
    scatter_rows_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<uint64_t>(table), ptr<int64_t>(indices), ptr<uint64_t>(rows), n, d);
  RETORT_CUDA_LAUNCH_CHECK("scatter_rows of ", rows.meta_str(), " into ", table.meta_str());
}

}  // namespace retort::cuda
