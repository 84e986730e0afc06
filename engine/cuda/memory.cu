// CUDA memory: allocation through the caching allocator, host <-> device copies (host-to-device
// through pinned staging buffers, asynchronously), fill and cast.
#include <cstring>
#include <mutex>
#include <type_traits>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

void* raw_allocate(int device, size_t nbytes);  // allocator.cu
void raw_free(int device, void* p);

CudaBackend::CudaBackend(int index) : index_(index) {}

Context& CudaBackend::ctx() const { return context(index_); }

std::string CudaBackend::name() const { return detail::cat("cuda:", index_); }

bool CudaBackend::supports(const std::string& kernel, DType dtype) const {
  // Every kernel of backend.h exists for F32 and F64; memory, fill, cast and copies also handle I64.
  // Names that are not Backend methods are not supported (backend.h: answer false, never guess).
  static const char* const kKernels[] = {
      "allocate", "deallocate", "copy_to_host", "copy_from_host", "copy", "fill", "cast", "unary", "binary",
      "reduce", "strided_copy", "gather_rows", "scatter_rows", "gemm", "symeig", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
      "batchnorm_forward_train", "batchnorm_forward_eval", "batchnorm_backward", "max_pool2d_forward",
      "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward", "adaptive_avg_pool2d_forward",
      "adaptive_avg_pool2d_backward", "upsample_nearest2d_forward", "upsample_nearest2d_backward",
      "grid_sample_forward", "grid_sample_backward", "softmax_forward", "softmax_backward",
      "cross_entropy_forward", "cross_entropy_backward", "sgd_step", "adam_step", "synchronize"};
  bool known = false;
  for (const char* k : kKernels) known = known || kernel == k;
  if (!known) return false;
  if (is_floating(dtype)) return true;
  return kernel == "allocate" || kernel == "fill" || kernel == "cast" || kernel == "copy" ||
         kernel == "strided_copy";
}

void CudaBackend::synchronize() { ctx().synchronize(detail::cat("waiting for cuda:", index_).c_str()); }

void* CudaBackend::allocate(size_t nbytes) {
  ctx();  // creates the context (and checks the device index) on first use
  return raw_allocate(index_, nbytes);
}

void CudaBackend::deallocate(void* ptr) { raw_free(index_, ptr); }

void CudaBackend::copy_to_host(const void* src, void* host_dst, size_t n) {
  if (!n) return;
  Context& c = ctx();
  RETORT_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, n, cudaMemcpyDeviceToHost, c.stream()), "copying ", n,
                    " bytes from cuda:", index_, " to the host");
  c.synchronize("waiting for a device-to-host copy");
}

namespace {

// Host-to-device copies go through a ring of pinned (page-locked) staging buffers: the host copies the
// source into a free slot and queues a DMA from it, then returns at once. This is what lets the data
// loader's next batch be prepared while the GPU still trains on the previous one. A slot is reused only
// after the event recorded behind its last DMA has completed.
struct Staging {
  static constexpr int kSlots = 4;
  static constexpr size_t kMinPinned = 64 * 1024;  // below this the driver's own staging is as fast
  std::mutex mu;
  void* host[kSlots] = {};
  size_t cap[kSlots] = {};
  cudaEvent_t done[kSlots] = {};
  int next = 0;
};

Staging& staging(int device) {
  static auto* all = new Staging[64];  // leaked: see context.cu
  return all[device];
}

}  // namespace

void CudaBackend::copy_from_host(const void* host_src, void* dst, size_t n) {
  if (!n) return;
  Context& c = ctx();
  if (n < Staging::kMinPinned) {
    RETORT_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, n, cudaMemcpyHostToDevice, c.stream()), "copying ", n,
                      " bytes from the host to cuda:", index_);
    return;
  }
  Staging& s = staging(index_);
  std::lock_guard<std::mutex> lock(s.mu);
  const int slot = s.next;
  s.next = (s.next + 1) % Staging::kSlots;
  if (s.done[slot]) RETORT_CUDA_CHECK(cudaEventSynchronize(s.done[slot]), "waiting for a pinned staging buffer");
  else RETORT_CUDA_CHECK(cudaEventCreateWithFlags(&s.done[slot], cudaEventDisableTiming), "creating an event");
  if (s.cap[slot] < n) {
    if (s.host[slot]) RETORT_CUDA_CHECK(cudaFreeHost(s.host[slot]), "freeing a pinned staging buffer");
    s.host[slot] = nullptr;
    s.cap[slot] = 0;
    RETORT_CUDA_CHECK(cudaHostAlloc(&s.host[slot], n, cudaHostAllocDefault), "allocating ", n,
                      " bytes of pinned host memory for host-to-device copies");
    s.cap[slot] = n;
  }
  std::memcpy(s.host[slot], host_src, n);
  RETORT_CUDA_CHECK(cudaMemcpyAsync(dst, s.host[slot], n, cudaMemcpyHostToDevice, c.stream()), "copying ", n,
                    " bytes from the host to cuda:", index_);
  RETORT_CUDA_CHECK(cudaEventRecord(s.done[slot], c.stream()), "recording a copy event");
}

void CudaBackend::copy(const void* src, void* dst, size_t n) {
  if (!n) return;
  RETORT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, ctx().stream()), "copying ", n,
                    " bytes within cuda:", index_);
}

namespace {

template <class T>
__global__ void fill_kernel(T* p, int64_t n, T v) {
  RETORT_GRID_STRIDE(i, n) p[i] = v;
}

template <class S, class D>
__global__ void cast_kernel(const S* s, D* d, int64_t n) {
  RETORT_GRID_STRIDE(i, n) {
    if constexpr (std::is_same_v<D, int64_t> && !std::is_same_v<S, int64_t>) d[i] = float_to_int64(s[i]);
    else d[i] = static_cast<D>(s[i]);
  }
}

template <class S>
void cast_from(const S* s, Tensor& dst, int64_t n, cudaStream_t st) {
  switch (dst.dtype()) {
    case DType::F32: cast_kernel<<<blocks_for(n), kThreads, 0, st>>>(s, ptr<float>(dst), n); break;
    case DType::F64: cast_kernel<<<blocks_for(n), kThreads, 0, st>>>(s, ptr<double>(dst), n); break;
    case DType::I64: cast_kernel<<<blocks_for(n), kThreads, 0, st>>>(s, ptr<int64_t>(dst), n); break;
  }
}

}  // namespace

void CudaBackend::fill(Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t st = ctx().stream();
  switch (out.dtype()) {
    case DType::F32: fill_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<float>(out), n, static_cast<float>(value)); break;
    case DType::F64: fill_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<double>(out), n, value); break;
    case DType::I64:
      fill_kernel<<<blocks_for(n), kThreads, 0, st>>>(ptr<int64_t>(out), n, static_cast<int64_t>(value));
      break;
  }
  RETORT_CUDA_LAUNCH_CHECK("fill of ", out.meta_str());
}

void CudaBackend::cast(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  if (n == 0) return;
  cudaStream_t st = ctx().stream();
  switch (src.dtype()) {
    case DType::F32: cast_from(ptr<float>(src), dst, n, st); break;
    case DType::F64: cast_from(ptr<double>(src), dst, n, st); break;
    case DType::I64: cast_from(ptr<int64_t>(src), dst, n, st); break;
  }
  RETORT_CUDA_LAUNCH_CHECK("cast of ", src.meta_str(), " to ", dtype_name(dst.dtype()));
}

}  // namespace retort::cuda
