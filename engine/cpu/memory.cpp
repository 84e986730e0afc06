// CPU memory: 64-byte aligned allocations (one cache line, AVX-512 friendly), copies, fill and cast.
//
// Large blocks are cached. glibc gives a freed block of megabytes back to the kernel (munmap, or a
// heap trim), and the next step's allocation of the same size page-faults every page back in: on the
// 2-core AMD EPYC of docs/performance.md that was 23 % of resnet8x4's inference step (`--profile`:
// deallocate 5.3 of 78 ms, and the faults inside the kernels). So a freed block of kCacheFrom bytes or
// more goes to a free list of its size (rounded up to 64 KiB) and the next allocation of that size
// takes it back; a step repeats the same shapes, so after the first step nothing is mapped or
// faulted. The lists hold at most kCacheLimit bytes (a block that would pass it is freed), and
// host_empty_cache() frees them all. Small blocks go straight to malloc, which recycles them itself.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

constexpr size_t kCacheFrom = size_t{1} << 20;   // 1 MiB
constexpr size_t kCacheStep = size_t{1} << 16;   // large sizes are rounded up to 64 KiB
constexpr size_t kCacheLimit = size_t{1} << 30;  // 1 GiB held in the free lists at most

struct HostCache {
  std::mutex mu;
  std::unordered_map<void*, size_t> live;  // large blocks handed out: pointer -> rounded size
  std::multimap<size_t, void*> free;        // cached blocks by rounded size
  HostCacheStats stats;
};

HostCache& host_cache() {
  static auto* c = new HostCache();  // leaked: tensors may be freed during static destruction
  return *c;
}

}  // namespace

HostCacheStats host_cache_stats() {
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void host_empty_cache() {
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [size, p] : c.free) std::free(p);
  c.free.clear();
  c.stats.cached_bytes = 0;
}

bool CpuBackend::supports(const std::string& kernel, DType dtype) const {
  // Every kernel exists for F32 and F64; memory, fill, cast and copies also handle I64.
  if (is_floating(dtype)) return true;
  return kernel == "allocate" || kernel == "fill" || kernel == "cast" || kernel == "copy" ||
         kernel == "strided_copy";
}

void* CpuBackend::allocate(size_t nbytes) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) return nullptr;
  const bool large = rounded >= kCacheFrom;
  if (large) {
    rounded = (rounded + kCacheStep - 1) / kCacheStep * kCacheStep;
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const auto it = c.free.find(rounded);
    if (it != c.free.end()) {
      void* p = it->second;
      c.free.erase(it);
      c.stats.cached_bytes -= rounded;
      ++c.stats.reused;
      c.live.emplace(p, rounded);
      return p;
    }
  }
  void* p = std::aligned_alloc(64, rounded);
  if (!p && large) {  // cached blocks of other sizes may be what stands in the way
    host_empty_cache();
    p = std::aligned_alloc(64, rounded);
  }
  RETORT_CHECK(p != nullptr, "out of host memory: allocating ", nbytes, " bytes failed");
  if (large) {
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    ++c.stats.fresh;
    c.live.emplace(p, rounded);
  }
  return p;
}

void CpuBackend::deallocate(void* ptr) {
  if (!ptr) return;
  {
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const auto it = c.live.find(ptr);
    if (it != c.live.end()) {
      const size_t size = it->second;
      c.live.erase(it);
      if (c.stats.cached_bytes + size <= kCacheLimit) {
        c.free.emplace(size, ptr);
        c.stats.cached_bytes += size;
        return;
      }
    }
  }
  std::free(ptr);
}

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
