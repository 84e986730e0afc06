// cudaemu: a CPU stand-in for cuSOLVER's batched symmetric eigendecomposition (include/cusolverDn.h),
// used only by the CUDA emulator build. Arguments are checked as cuSOLVER documents them (a null or
// destroyed handle is CUSOLVER_STATUS_NOT_INITIALIZED; bad sizes, leading dimensions, modes and type
// combinations are CUSOLVER_STATUS_INVALID_VALUE), every device buffer must lie inside one live
// allocation (else CUSOLVER_STATUS_EXECUTION_FAILED), and failures are explained on stderr.
//
// The decomposition is LAPACK's QR-iteration ?syev — a different algorithm from the CPU backend's
// divide-and-conquer ?syevd, as cuSOLVER's is, so the parity tests compare two computations rather than
// one with itself. The sign of an eigenvector is arbitrary in cuSOLVER too: the stand-in negates every
// odd-numbered vector of each matrix, so the backend's sign convention is exercised and a caller that
// relied on the library's signs would fail its parity test.
#include <cusolverDn.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <unordered_set>
#include <vector>

extern "C" {
void ssyev_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w, float* work,
            const int* lwork, int* info, size_t jobz_len, size_t uplo_len);
void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
            const int* lwork, int* info, size_t jobz_len, size_t uplo_len);
}

struct cusolverDnContext {
  cudaStream_t stream = nullptr;
};
struct cusolverDnParams {};

namespace {

[[gnu::format(printf, 3, 4)]] cusolverStatus_t fail(cusolverStatus_t st, const char* fn, const char* fmt, ...) {
  std::fprintf(stderr, "cudaemu: %s: ", fn);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fprintf(stderr, " -> cusolverStatus %d\n", static_cast<int>(st));
  return st;
}

std::mutex& mu() {
  static auto* m = new std::mutex();  // leaked: handles may be destroyed during static destruction
  return *m;
}
std::unordered_set<const void*>& live() {
  static auto* s = new std::unordered_set<const void*>();
  return *s;
}
void track(const void* p) {
  std::lock_guard<std::mutex> lock(mu());
  live().insert(p);
}
bool is_live(const void* p) {
  std::lock_guard<std::mutex> lock(mu());
  return p && live().count(p);
}
bool untrack(const void* p) {
  std::lock_guard<std::mutex> lock(mu());
  return live().erase(p) == 1;
}

int syev(int n, float* a, int lda, float* w) {
  int lwork = -1, info = 0;
  float query = 0;
  ssyev_("V", "U", &n, a, &lda, w, &query, &lwork, &info, 1, 1);
  lwork = static_cast<int>(query);
  std::vector<float> work(static_cast<size_t>(lwork));
  ssyev_("V", "U", &n, a, &lda, w, work.data(), &lwork, &info, 1, 1);
  return info;
}
int syev(int n, double* a, int lda, double* w) {
  int lwork = -1, info = 0;
  double query = 0;
  dsyev_("V", "U", &n, a, &lda, w, &query, &lwork, &info, 1, 1);
  lwork = static_cast<int>(query);
  std::vector<double> work(static_cast<size_t>(lwork));
  dsyev_("V", "U", &n, a, &lda, w, work.data(), &lwork, &info, 1, 1);
  return info;
}

// LAPACK reads one triangle named column-major, as cuSOLVER does, so uplo passes through; "L" for lower.
template <class T>
void decompose(int64_t n, T* A, int64_t lda, T* W, int* info, int64_t batch, bool lower) {
  for (int64_t k = 0; k < batch; ++k) {
    T* a = A + k * lda * n;
    T* w = W + k * n;
    int lapack_info = 0;
    if (lower) {  // mirror the lower triangle into the upper one, which syev is told to read
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = j + 1; i < n; ++i) a[i * lda + j] = a[j * lda + i];
    }
    lapack_info = syev(static_cast<int>(n), a, static_cast<int>(lda), w);
    info[k] = lapack_info;
    for (int64_t j = 1; j < n; j += 2)
      for (int64_t i = 0; i < n; ++i) a[j * lda + i] = -a[j * lda + i];
  }
}

cusolverStatus_t check_common(const char* fn, cusolverDnHandle_t handle, cusolverEigMode_t jobz, cublasFillMode_t uplo,
                              int64_t n, cudaDataType ta, int64_t lda, cudaDataType tw, cudaDataType tc,
                              int64_t batch) {
  if (!is_live(handle))
    return fail(CUSOLVER_STATUS_NOT_INITIALIZED, fn, "handle %p is not a live cuSOLVER handle", static_cast<void*>(handle));
  if (jobz != CUSOLVER_EIG_MODE_VECTOR && jobz != CUSOLVER_EIG_MODE_NOVECTOR)
    return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "invalid jobz %d", static_cast<int>(jobz));
  if (uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER)
    return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "invalid uplo %d", static_cast<int>(uplo));
  if (n < 0 || batch < 0 || lda < (n > 1 ? n : 1))
    return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "bad sizes: n %lld, lda %lld, batchSize %lld",
                static_cast<long long>(n), static_cast<long long>(lda), static_cast<long long>(batch));
  // cuSOLVER's documented limit of its batched implementation.
  if (n * lda * batch > INT32_MAX)
    return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "n * lda * batchSize = %lld exceeds INT32_MAX (split the batch)",
                static_cast<long long>(n * lda * batch));
  if (ta != tw || ta != tc || (ta != CUDA_R_32F && ta != CUDA_R_64F))
    return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "unsupported types (A %d, W %d, compute %d; emulated: all R_32F or all R_64F)",
                static_cast<int>(ta), static_cast<int>(tw), static_cast<int>(tc));
  if (n > 2147483647 / (n > 0 ? n : 1))
    return fail(CUSOLVER_STATUS_NOT_SUPPORTED, fn, "n %lld beyond 32 bits is not emulated", static_cast<long long>(n));
  return CUSOLVER_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* handle) {
  if (!handle) return fail(CUSOLVER_STATUS_INVALID_VALUE, "cusolverDnCreate", "handle is a null pointer");
  *handle = new cusolverDnContext();
  track(*handle);
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle) {
  if (!untrack(handle))
    return fail(CUSOLVER_STATUS_NOT_INITIALIZED, "cusolverDnDestroy", "handle %p is not a live cuSOLVER handle",
                static_cast<void*>(handle));
  delete handle;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t streamId) {
  if (!is_live(handle))
    return fail(CUSOLVER_STATUS_NOT_INITIALIZED, "cusolverDnSetStream", "handle %p is not a live cuSOLVER handle",
                static_cast<void*>(handle));
  handle->stream = streamId;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t* params) {
  if (!params) return fail(CUSOLVER_STATUS_INVALID_VALUE, "cusolverDnCreateParams", "params is a null pointer");
  *params = new cusolverDnParams();
  track(*params);
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t params) {
  if (!untrack(params))
    return fail(CUSOLVER_STATUS_INVALID_VALUE, "cusolverDnDestroyParams", "params %p is not a live parameter object",
                static_cast<void*>(params));
  delete params;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXsyevBatched_bufferSize(cusolverDnHandle_t handle, cusolverDnParams_t params,
                                                   cusolverEigMode_t jobz, cublasFillMode_t uplo, int64_t n,
                                                   cudaDataType dataTypeA, const void*, int64_t lda,
                                                   cudaDataType dataTypeW, const void*, cudaDataType computeType,
                                                   size_t* workspaceInBytesOnDevice, size_t* workspaceInBytesOnHost,
                                                   int64_t batchSize) {
  const char* fn = "cusolverDnXsyevBatched_bufferSize";
  if (!is_live(params)) return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "params is not a live parameter object");
  const cusolverStatus_t st = check_common(fn, handle, jobz, uplo, n, dataTypeA, lda, dataTypeW, computeType, batchSize);
  if (st != CUSOLVER_STATUS_SUCCESS) return st;
  if (!workspaceInBytesOnDevice || !workspaceInBytesOnHost)
    return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "a workspace size pointer is null");
  // The stand-in works in host memory; it asks for a little device workspace so the caller's is checked.
  *workspaceInBytesOnDevice = 256;
  *workspaceInBytesOnHost = 0;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXsyevBatched(cusolverDnHandle_t handle, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                        cublasFillMode_t uplo, int64_t n, cudaDataType dataTypeA, void* A, int64_t lda,
                                        cudaDataType dataTypeW, void* W, cudaDataType computeType, void* bufferOnDevice,
                                        size_t workspaceInBytesOnDevice, void*, size_t, int* info, int64_t batchSize) {
  const char* fn = "cusolverDnXsyevBatched";
  if (!is_live(params)) return fail(CUSOLVER_STATUS_INVALID_VALUE, fn, "params is not a live parameter object");
  const cusolverStatus_t st = check_common(fn, handle, jobz, uplo, n, dataTypeA, lda, dataTypeW, computeType, batchSize);
  if (st != CUSOLVER_STATUS_SUCCESS) return st;
  if (jobz != CUSOLVER_EIG_MODE_VECTOR)
    return fail(CUSOLVER_STATUS_NOT_SUPPORTED, fn, "only CUSOLVER_EIG_MODE_VECTOR is emulated");
  if (batchSize == 0 || n == 0) return CUSOLVER_STATUS_SUCCESS;
  const size_t elem = dataTypeA == CUDA_R_32F ? 4 : 8;
  const size_t a_bytes = static_cast<size_t>(lda * n * batchSize) * elem, w_bytes = static_cast<size_t>(n * batchSize) * elem;
  if (workspaceInBytesOnDevice < 256 || !cudaemu::is_device_range(bufferOnDevice, workspaceInBytesOnDevice))
    return fail(CUSOLVER_STATUS_EXECUTION_FAILED, fn, "the device workspace (%zu bytes at %p) is smaller than asked for "
                "or not inside one device allocation", workspaceInBytesOnDevice, bufferOnDevice);
  if (!cudaemu::is_device_range(A, a_bytes) || !cudaemu::is_device_range(W, w_bytes) ||
      !cudaemu::is_device_range(info, static_cast<size_t>(batchSize) * sizeof(int)))
    return fail(CUSOLVER_STATUS_EXECUTION_FAILED, fn, "A (%zu bytes at %p), W (%zu bytes at %p) or info (at %p) is "
                "not inside one device allocation", a_bytes, A, w_bytes, W, static_cast<void*>(info));
  const cudaemu::DeviceAccess access;
  const bool lower = uplo == CUBLAS_FILL_MODE_LOWER;
  if (dataTypeA == CUDA_R_32F)
    decompose(n, static_cast<float*>(A), lda, static_cast<float*>(W), info, batchSize, lower);
  else
    decompose(n, static_cast<double*>(A), lda, static_cast<double*>(W), info, batchSize, lower);
  return CUSOLVER_STATUS_SUCCESS;
}

}  // extern "C"
