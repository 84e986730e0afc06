// The CUDA context of one device: its stream, cuBLAS, cuDNN and cuSOLVER handles, a scratch workspace, and the
// checks that turn every failed CUDA, cuBLAS and cuDNN call into a retort::Error.
//
// One stream per device: every kernel, copy and library call of the backend is issued on it, so the
// device executes work in program order and the caching allocator may hand a freed block to the next
// request without waiting (the stream-ordered reuse PyTorch's allocator also relies on). The host
// only synchronises when it needs data back (copy_to_host, item()).
//
// A check names what was asked for:
//   RETORT_CUDA_CHECK(cudaMemcpyAsync(...), "copying ", n, " bytes to cuda:0");
// throws "CUDA error: cudaMemcpyAsync(...) failed with cudaErrorIllegalAddress (an illegal memory
// access was encountered) while copying 4096 bytes to cuda:0 [engine/cuda/memory.cu:42]".
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cusolverDn.h>

#include <cstddef>
#include <string>

#include "engine/cuda/cuda_device.h"
#include "engine/error.h"

namespace retort::cuda {

[[noreturn]] void fail_cuda(cudaError_t err, const char* expr, const char* file, int line, const std::string& what);
[[noreturn]] void fail_cublas(cublasStatus_t st, const char* expr, const char* file, int line, const std::string& what);
[[noreturn]] void fail_cudnn(cudnnStatus_t st, const char* expr, const char* file, int line, const std::string& what);
[[noreturn]] void fail_cusolver(cusolverStatus_t st, const char* expr, const char* file, int line,
                                const std::string& what);

#define RETORT_CUDA_CHECK(expr, ...)                                                                       \
  do {                                                                                                     \
    const cudaError_t retort_err_ = (expr);                                                                \
    if (retort_err_ != cudaSuccess)                                                                        \
      ::retort::cuda::fail_cuda(retort_err_, #expr, __FILE__, __LINE__, ::retort::detail::cat(__VA_ARGS__)); \
  } while (0)
#define RETORT_CUBLAS_CHECK(expr, ...)                                                                       \
  do {                                                                                                       \
    const cublasStatus_t retort_st_ = (expr);                                                                \
    if (retort_st_ != CUBLAS_STATUS_SUCCESS)                                                                 \
      ::retort::cuda::fail_cublas(retort_st_, #expr, __FILE__, __LINE__, ::retort::detail::cat(__VA_ARGS__)); \
  } while (0)
#define RETORT_CUDNN_CHECK(expr, ...)                                                                       \
  do {                                                                                                      \
    const cudnnStatus_t retort_st_ = (expr);                                                                \
    if (retort_st_ != CUDNN_STATUS_SUCCESS)                                                                 \
      ::retort::cuda::fail_cudnn(retort_st_, #expr, __FILE__, __LINE__, ::retort::detail::cat(__VA_ARGS__)); \
  } while (0)
#define RETORT_CUSOLVER_CHECK(expr, ...)                                                                       \
  do {                                                                                                         \
    const cusolverStatus_t retort_st_ = (expr);                                                                \
    if (retort_st_ != CUSOLVER_STATUS_SUCCESS)                                                                 \
      ::retort::cuda::fail_cusolver(retort_st_, #expr, __FILE__, __LINE__, ::retort::detail::cat(__VA_ARGS__)); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface at the
// next synchronising call, which is checked too).
#define RETORT_CUDA_LAUNCH_CHECK(...) RETORT_CUDA_CHECK(cudaGetLastError(), "launching ", __VA_ARGS__)

class Context {
 public:
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  // cuSOLVER's dense handle (bound to the stream) and its default 64-bit-API parameters, created on
  // first use: only symeig needs them.
  cusolverDnHandle_t cusolver();
  cusolverDnParams_t cusolver_params();
  // Scratch memory of at least `bytes` on this device (for cuDNN and reductions). Valid until the next
  // call that asks for more; work using it is stream-ordered, so growing it after earlier work was
  // queued is safe (the old block returns to the caching allocator, which reuses it in stream order).
  void* workspace(size_t bytes);
  // Blocks the host until all work queued on the stream has finished; checks for asynchronous faults.
  void synchronize(const char* what);
  // Makes this context's device current on the calling thread.
  void make_current() const;

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  cusolverDnParams_t cusolver_params_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// The context of device `index`, created on first use (and made current on the calling thread).
Context& context(int index);

// The global switches (deterministic, allow_tf32) are declared in cuda_device.h.

// Caching allocator statistics for one device (bytes).
struct MemoryStats {
  size_t allocated = 0;       // handed out to tensors now
  size_t reserved = 0;        // obtained from cudaMalloc (allocated + cached)
  size_t peak_allocated = 0;  // high-water mark of `allocated`
  int64_t cuda_mallocs = 0;   // calls to cudaMalloc so far (a warm training loop makes none)
};
MemoryStats memory_stats(int device);
void reset_peak_memory(int device);
// Returns every cached, unused block to the driver.
void empty_cache(int device);

}  // namespace retort::cuda
