// CPU memory: 64-byte aligned allocations (one cache line, AVX-512 friendly), copies, fill and cast.
#include <cstdlib>
#include <cstring>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

bool CpuBackend::supports(const std::string& kernel, DType dtype) const {
  // Every kernel exists for F32 and F64; memory, fill, cast and copies also handle I64.
  if (is_floating(dtype)) return true;
  return kernel == "allocate" || kernel == "fill" || kernel == "cast" || kernel == "copy" ||
         kernel == "strided_copy";
}

void* CpuBackend::allocate(size_t nbytes) {
  const size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) return nullptr;
  void* p = std::aligned_alloc(64, rounded);
  RETORT_CHECK(p != nullptr, "out of host memory: allocating ", nbytes, " bytes failed");
  return p;
}

void CpuBackend::deallocate(void* ptr) { std::free(ptr); }

void CpuBackend::copy_to_host(const void* src, void* dst, size_t n) { if (n) std::memcpy(dst, src, n); }
void CpuBackend::copy_from_host(const void* src, void* dst, size_t n) { if (n) std::memcpy(dst, src, n); }
void CpuBackend::copy(const void* src, void* dst, size_t n) { if (n) std::memcpy(dst, src, n); }

namespace {
template <class T>
void fill_typed(T* p, int64_t n, T v) {
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

template <class S, class D>
void cast_typed(const S* s, D* d, int64_t n) {
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
}

template <class S>
void cast_from(const S* s, Tensor& dst, int64_t n) {
  switch (dst.dtype()) {
    case DType::F32: cast_typed(s, dst.data<float>(), n); break;
    case DType::F64: cast_typed(s, dst.data<double>(), n); break;
    case DType::I64: cast_typed(s, dst.data<int64_t>(), n); break;
  }
}
}  // namespace

void CpuBackend::fill(Tensor& out, double value) {
  switch (out.dtype()) {
    case DType::F32: fill_typed(out.data<float>(), out.numel(), static_cast<float>(value)); break;
    case DType::F64: fill_typed(out.data<double>(), out.numel(), value); break;
    case DType::I64: fill_typed(out.data<int64_t>(), out.numel(), static_cast<int64_t>(value)); break;
  }
}

void CpuBackend::cast(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  switch (src.dtype()) {
    case DType::F32: cast_from(src.data<float>(), dst, n); break;
    case DType::F64: cast_from(src.data<double>(), dst, n); break;
    case DType::I64: cast_from(src.data<int64_t>(), dst, n); break;
  }
}

}  // namespace retort::cpu
