// CPU strided copy: the one kernel behind permute, slice, cat, pad and expand.
// Dimensions are first coalesced: size-1 dimensions dropped, and neighbours merged wherever both
// views step through them as one (stride[d] == shape[d+1] * stride[d+1] on both sides), so that a
// channel split, a cat or a channel shuffle copies whole contiguous planes with memcpy instead of
// one short image row at a time. The innermost remaining dimension runs as a strided loop (memcpy
// when contiguous on both sides); outer indices are split across threads.
// Also here: gathering and scattering whole rows of a table by index (one memcpy per row).
#include <cstring>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_plan.h"

namespace retort::cpu {

namespace {

template <class T>
void strided_copy_typed(const T* src, const StridedView& sv0, T* dst, const StridedView& dv0, const Shape& shape0) {
  const CopyPlan c = coalesce_copy(sv0, dv0, shape0);
  const Shape& shape = c.shape;
  const StridedView &sv = c.src, &dv = c.dst;
  const int nd = static_cast<int>(shape.size());
  if (nd == 0) { dst[dv.offset] = src[sv.offset]; return; }
  const int64_t inner = shape[nd - 1], si = sv.strides[nd - 1], di = dv.strides[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= shape[d];
#pragma omp parallel for if (rows * inner > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t os = sv.offset, od = dv.offset, rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % shape[d];
      rem /= shape[d];
      os += i * sv.strides[d];
      od += i * dv.strides[d];
    }
    if (si == 1 && di == 1) std::memcpy(dst + od, src + os, inner * sizeof(T));
    else for (int64_t i = 0; i < inner; ++i) dst[od + i * di] = src[os + i * si];
  }
}
}  // namespace

void CpuBackend::gather_rows(const Tensor& table, const Tensor& indices, Tensor& out) {
  const size_t row = static_cast<size_t>(table.numel() / table.size(0)) * dtype_size(table.dtype());
  const char* src = static_cast<const char*>(table.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  const int64_t* idx = indices.data<int64_t>();
#pragma omp parallel for if (out.numel() > kParallelGrain)
  for (int64_t i = 0; i < indices.numel(); ++i) std::memcpy(dst + i * row, src + idx[i] * row, row);
}

void CpuBackend::scatter_rows(Tensor& table, const Tensor& indices, const Tensor& rows) {
  const size_t row = static_cast<size_t>(table.numel() / table.size(0)) * dtype_size(table.dtype());
  const char* src = static_cast<const char*>(rows.raw_data());
  char* dst = static_cast<char*>(table.raw_data());
  const int64_t* idx = indices.data<int64_t>();
#pragma omp parallel for if (rows.numel() > kParallelGrain)
  for (int64_t i = 0; i < indices.numel(); ++i) std::memcpy(dst + idx[i] * row, src + i * row, row);
}

void CpuBackend::strided_copy(const Tensor& src, const StridedView& sv, Tensor& dst, const StridedView& dv,
                              const Shape& shape) {
  if (shape_numel(shape) == 0) return;
  switch (src.dtype()) {
    case DType::F32: strided_copy_typed(src.data<float>(), sv, dst.data<float>(), dv, shape); break;
    case DType::F64: strided_copy_typed(src.data<double>(), sv, dst.data<double>(), dv, shape); break;
    case DType::I64: strided_copy_typed(src.data<int64_t>(), sv, dst.data<int64_t>(), dv, shape); break;
  }
}

}  // namespace retort::cpu
