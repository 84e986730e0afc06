// Caching device allocator: the training loop never calls cudaMalloc once its first step has run.
//
// Requests are rounded up to a size class (512 B below 1 MiB, 1 MiB steps above: a training step
// asks for the same sizes every iteration, so exact classes hit every time after the first step).
// Freed blocks go to their class's free list, not back to the driver. Reuse needs no synchronisation
// because all work of a device runs on its one stream (context.h): a block freed by the host after
// queueing its last use is handed out again only to work queued later on the same stream.
// When cudaMalloc fails, every cached block is released and the request retried once; if it fails
// again, the error says how much was asked for and how the device's memory is spent.
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/cuda/context.h"

namespace retort::cuda {

namespace {

constexpr size_t kSmall = 512, kLarge = size_t(1) << 20;

size_t size_class(size_t n) {
  if (n < kLarge) return (n + kSmall - 1) / kSmall * kSmall;
  return (n + kLarge - 1) / kLarge * kLarge;
}

std::string mib(size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1024.0 * 1024.0));
  return buf;
}

struct DeviceCache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // size class -> cached blocks
  std::unordered_map<void*, size_t> live;                      // block -> size class
  size_t cached = 0;
  MemoryStats stats;

  // Requires mu held.
  void release_cached(int device) {
    if (cached == 0) return;
    RETORT_CUDA_CHECK(cudaSetDevice(device), "selecting cuda:", device, " to release cached memory");
    // cudaFree synchronises anyway: a fault of a kernel queued earlier surfaces here, named as such,
    // rather than as a failed allocation or free.
    RETORT_CUDA_CHECK(cudaDeviceSynchronize(), "waiting for the work queued on cuda:", device,
                      " before releasing cached memory (a kernel or copy queued earlier failed)");
    for (auto& [sz, blocks] : free_blocks) {
      while (!blocks.empty()) {  // the books follow each block actually freed
        RETORT_CUDA_CHECK(cudaFree(blocks.back()), "releasing a cached block of ", mib(sz), " on cuda:", device);
        blocks.pop_back();
        stats.reserved -= sz;
        cached -= sz;
      }
    }
    free_blocks.clear();
  }
};

DeviceCache& cache(int device) {
  static auto* mu = new std::mutex();  // leaked with the caches: see context.cu
  static auto* caches = new std::unordered_map<int, DeviceCache*>();
  std::lock_guard<std::mutex> lock(*mu);
  auto& c = (*caches)[device];
  if (!c) c = new DeviceCache();
  return *c;
}

}  // namespace

void* raw_allocate(int device, size_t nbytes) {
  if (nbytes == 0) return nullptr;
  DeviceCache& dc = cache(device);
  const size_t sz = size_class(nbytes);
  std::lock_guard<std::mutex> lock(dc.mu);
  void* p = nullptr;
  auto it = dc.free_blocks.find(sz);
  if (it != dc.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    dc.cached -= sz;
  } else {
    RETORT_CUDA_CHECK(cudaSetDevice(device), "selecting cuda:", device, " to allocate ", mib(sz));
    cudaError_t err = cudaMalloc(&p, sz);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      dc.release_cached(device);
      err = cudaMalloc(&p, sz);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      if (err == cudaErrorMemoryAllocation)
        RETORT_FAIL("CUDA out of memory: allocating ", mib(sz), " on cuda:", device, " failed (tensors hold ",
                    mib(dc.stats.allocated), ", the device has ", mib(free_b), " free of ", mib(total_b),
                    "); a smaller batch or smaller inputs need less, or free tensors");
      fail_cuda(err, "cudaMalloc", __FILE__, __LINE__, detail::cat("allocating ", mib(sz), " on cuda:", device));
    }
    dc.stats.reserved += sz;
    dc.stats.cuda_mallocs += 1;
  }
  dc.live[p] = sz;
  dc.stats.allocated += sz;
  dc.stats.peak_allocated = std::max(dc.stats.peak_allocated, dc.stats.allocated);
  return p;
}

void raw_free(int device, void* p) {
  if (!p) return;
  DeviceCache& dc = cache(device);
  std::lock_guard<std::mutex> lock(dc.mu);
  auto it = dc.live.find(p);
  if (it == dc.live.end()) return;  // not ours (cannot happen through Storage); never free twice
  const size_t sz = it->second;
  dc.live.erase(it);
  dc.stats.allocated -= sz;
  dc.free_blocks[sz].push_back(p);
  dc.cached += sz;
}

MemoryStats memory_stats(int device) {
  DeviceCache& dc = cache(device);
  std::lock_guard<std::mutex> lock(dc.mu);
  return dc.stats;
}

void reset_peak_memory(int device) {
  DeviceCache& dc = cache(device);
  std::lock_guard<std::mutex> lock(dc.mu);
  dc.stats.peak_allocated = dc.stats.allocated;
}

void empty_cache(int device) {
  DeviceCache& dc = cache(device);
  std::lock_guard<std::mutex> lock(dc.mu);
  dc.release_cached(device);
}

}  // namespace retort::cuda
