// CUDA context, error checks and global switches (see context.h).
#include "engine/cuda/context.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "engine/backend.h"
#include "engine/cuda/cuda_device.h"
#include "engine/env.h"

namespace retort::cuda {

void* raw_allocate(int device, size_t nbytes);  // allocator.cu
void raw_free(int device, void* p);

namespace {
std::string where(const char* file, int line) {
  std::string f(file);
  const auto pos = f.find("engine/cuda/");
  return detail::cat(" [", pos == std::string::npos ? f : f.substr(pos), ":", line, "]");
}
std::string asked(const std::string& what) { return what.empty() ? std::string() : " while " + what; }

// Read on first use (env_switch refuses a value other than 0 or 1; check_environment reads them first).
bool& deterministic_setting() {
  static bool on = env_switch("RETORT_CUDA_DETERMINISTIC", false);
  return on;
}
bool& allow_tf32_setting() {
  static bool on = env_switch("RETORT_ALLOW_TF32", false);
  return on;
}
}  // namespace

void fail_cuda(cudaError_t err, const char* expr, const char* file, int line, const std::string& what) {
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  if (err == cudaErrorMemoryAllocation)
    RETORT_FAIL("CUDA out of memory", asked(what), ": ", expr, " failed", where(file, line));
  RETORT_FAIL("CUDA error: ", expr, " failed with ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")",
              asked(what), where(file, line));
}

void fail_cublas(cublasStatus_t st, const char* expr, const char* file, int line, const std::string& what) {
  RETORT_FAIL("cuBLAS error: ", expr, " failed with ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ")",
              asked(what), where(file, line));
}

void fail_cudnn(cudnnStatus_t st, const char* expr, const char* file, int line, const std::string& what) {
  RETORT_FAIL("cuDNN error: ", expr, " failed with ", cudnnGetErrorString(st), asked(what), where(file, line));
}

namespace {
// cuSOLVER has no status-to-string function; the names of cusolver_common.h.
const char* cusolver_status_name(cusolverStatus_t st) {
  switch (st) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED (out of device memory)";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "an unnamed cuSOLVER status";
  }
}
}  // namespace

void fail_cusolver(cusolverStatus_t st, const char* expr, const char* file, int line, const std::string& what) {
  RETORT_FAIL("cuSOLVER error: ", expr, " failed with ", cusolver_status_name(st), " (", static_cast<int>(st), ")",
              asked(what), where(file, line));
}

Context::Context(int device) : device_(device) {
  const int n = device_count();
  RETORT_CHECK(device >= 0 && device < n, "cuda:", device, ": ", n, " CUDA device(s) visible");
  make_current();
  RETORT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating the stream of cuda:", device);
  RETORT_CUBLAS_CHECK(cublasCreate(&cublas_), "creating the cuBLAS handle of cuda:", device);
  RETORT_CUBLAS_CHECK(cublasSetStream(cublas_, stream_), "binding cuBLAS to the stream of cuda:", device);
  RETORT_CUDNN_CHECK(cudnnCreate(&cudnn_), "creating the cuDNN handle of cuda:", device);
  RETORT_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_), "binding cuDNN to the stream of cuda:", device);
}

Context::~Context() {
  // Process exit: errors are ignored here (the driver may already be shutting down).
  if (workspace_) raw_free(device_, workspace_);
  if (cusolver_params_) cusolverDnDestroyParams(cusolver_params_);
  if (cusolver_) cusolverDnDestroy(cusolver_);
  if (cudnn_) cudnnDestroy(cudnn_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

cusolverDnHandle_t Context::cusolver() {
  if (!cusolver_) {
    RETORT_CUSOLVER_CHECK(cusolverDnCreate(&cusolver_), "creating the cuSOLVER handle of cuda:", device_);
    RETORT_CUSOLVER_CHECK(cusolverDnSetStream(cusolver_, stream_), "binding cuSOLVER to the stream of cuda:", device_);
  }
  return cusolver_;
}

cusolverDnParams_t Context::cusolver_params() {
  if (!cusolver_params_)
    RETORT_CUSOLVER_CHECK(cusolverDnCreateParams(&cusolver_params_), "creating cuSOLVER parameters on cuda:", device_);
  return cusolver_params_;
}

void Context::make_current() const {
  RETORT_CUDA_CHECK(cudaSetDevice(device_), "selecting cuda:", device_);
}

void* Context::workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  // Grow geometrically so a sequence of slightly larger requests does not reallocate each time.
  const size_t want = std::max(bytes, workspace_bytes_ * 2);
  if (workspace_) raw_free(device_, workspace_);
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  try {
    workspace_ = raw_allocate(device_, want);
    workspace_bytes_ = want;
  } catch (const Error&) {
    if (want == bytes) throw;
    workspace_ = raw_allocate(device_, bytes);  // the doubled size did not fit; the request itself may
    workspace_bytes_ = bytes;
  }
  return workspace_;
}

void Context::synchronize(const char* what) {
  RETORT_CUDA_CHECK(cudaStreamSynchronize(stream_), what);
}

Context& context(int index) {
  static auto* mu = new std::mutex();
  // Leaked on purpose (the mutex too): tensors in static storage may be freed after main() returns, and must still find
  // their device's context and allocator then (the driver reclaims everything at process exit).
  static auto* contexts = new std::array<std::unique_ptr<Context>, 64>();
  RETORT_CHECK(index >= 0 && index < static_cast<int>(contexts->size()), "cuda:", index, ": device index out of range");
  std::lock_guard<std::mutex> lock(*mu);
  auto& c = (*contexts)[static_cast<size_t>(index)];
  if (!c) c = std::make_unique<Context>(index);
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != index) c->make_current();
  return *c;
}

bool deterministic() { return deterministic_setting(); }
void set_deterministic(bool on) { deterministic_setting() = on; }
bool allow_tf32() { return allow_tf32_setting(); }
void set_allow_tf32(bool on) {
  allow_tf32_setting() = on;
}

}  // namespace retort::cuda
