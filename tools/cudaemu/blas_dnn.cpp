// cudaemu: a CPU stand-in for cuBLAS and cuDNN, used only by the CUDA emulator build (see
// include/cuda_runtime.h). It implements only what engine/cuda calls (include/cublas_v2.h and
// include/cudnn.h list it), following the libraries' documented semantics, so that a mistake in how
// the backend calls them shows up on the CPU:
//  - arguments are checked as the libraries document and the same status is returned (cuBLAS: a null
//    or destroyed handle is CUBLAS_STATUS_NOT_INITIALIZED, bad sizes and leading dimensions are
//    CUBLAS_STATUS_INVALID_VALUE; cuDNN: inconsistent descriptors are CUDNN_STATUS_BAD_PARAM, a
//    configuration cuDNN has no kernel for is CUDNN_STATUS_NOT_SUPPORTED), and every failure is
//    explained on stderr ("cudaemu: <function>: <why> -> <status>");
//  - handles and descriptors are tracked, so a destroyed or never-created one is refused;
//  - alpha and beta are read from host memory with the type the library reads (cuDNN: double for F64
//    data, float otherwise), and beta == 0 overwrites the output without reading it (NaN included);
//  - every matrix and tensor the call reads or writes must lie inside one live device allocation
//    (cudaemu::is_device_range), as a GPU would need; otherwise CUBLAS/CUDNN_STATUS_EXECUTION_FAILED.
// Work runs at once on the calling thread (the emulator executes everything synchronously, in issue
// order), so the stream set on a handle is only recorded. The GEMMs are OpenBLAS calls, one per batch;
// convolutions are direct loops accumulating in the data type with FMAs. The math mode of a handle or convolution is
// recorded but does not change results (no TF32 emulation).
#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

struct cudnnContext {
  cudaStream_t stream = nullptr;
};

// A 4-D tensor: dims in NCHW order and the element stride of each (packed NCHW or NHWC).
struct cudnnTensorStruct {
  bool set = false;
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  int n = 0, c = 0, h = 0, w = 0;
  int64_t sn = 0, sc = 0, sh = 0, sw = 0;
};

// A 4-D filter: dims in KCRS order and the element stride of each (KCRS for NCHW, KRSC for NHWC).
struct cudnnFilterStruct {
  bool set = false;
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  int k = 0, c = 0, h = 0, w = 0;
  int64_t sk = 0, sc = 0, sh = 0, sw = 0;
};

struct cudnnConvolutionStruct {
  bool set = false;  // by cudnnSetConvolution2dDescriptor
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dilation_h = 1, dilation_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  int groups = 1;                           // cuDNN's default
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;  // cuDNN's default
};

namespace {

// ---- diagnostics ------------------------------------------------------------------------------------

[[gnu::format(printf, 3, 4)]] cublasStatus_t blas_fail(cublasStatus_t st, const char* fn, const char* fmt, ...) {
  std::fprintf(stderr, "cudaemu: %s: ", fn);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fprintf(stderr, " -> %s\n", cublasGetStatusName(st));
  return st;
}

[[gnu::format(printf, 3, 4)]] cudnnStatus_t dnn_fail(cudnnStatus_t st, const char* fn, const char* fmt, ...) {
  std::fprintf(stderr, "cudaemu: %s: ", fn);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fprintf(stderr, " -> %s\n", cudnnGetErrorString(st));
  return st;
}

// ---- live handles and descriptors -------------------------------------------------------------------

enum class Kind { CublasHandle, CudnnHandle, Tensor, Filter, Convolution };

std::mutex& registry_mutex() {
  static auto* mu = new std::mutex();  // leaked: handles may be destroyed during static destruction
  return *mu;
}
std::unordered_map<const void*, Kind>& registry() {
  static auto* live = new std::unordered_map<const void*, Kind>();
  return *live;
}
void track(const void* p, Kind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[p] = kind;
}
bool is_live(const void* p, Kind kind) {
  if (!p) return false;
  std::lock_guard<std::mutex> lock(registry_mutex());
  const auto it = registry().find(p);
  return it != registry().end() && it->second == kind;
}
// Forgets p; false when it was not a live object of that kind.
bool untrack(const void* p, Kind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  const auto it = registry().find(p);
  if (it == registry().end() || it->second != kind) return false;
  registry().erase(it);
  return true;
}

// cudnnCreate* and cudnnDestroy* of one kind of object: creating hands out a new tracked object;
// destroying null does nothing, and destroying what is not a live object of that kind is refused.
template <class T>
cudnnStatus_t create_dnn_object(T** out, Kind kind, const char* fn) {
  if (!out) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "null pointer");
  *out = new T();
  track(*out, kind);
  return CUDNN_STATUS_SUCCESS;
}
template <class T>
cudnnStatus_t destroy_dnn_object(T* p, Kind kind, const char* fn, const char* what) {
  if (!p) return CUDNN_STATUS_SUCCESS;
  if (!untrack(p, kind)) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%p is not a live %s", static_cast<void*>(p), what);
  delete p;
  return CUDNN_STATUS_SUCCESS;
}

// ---- device memory ----------------------------------------------------------------------------------

// Elements spanned by `count` blocks of `block` elements placed `stride` apart, and the offset of the
// lowest one relative to the first block (a negative stride puts later blocks below the first).
struct Span {
  int64_t offset = 0, elements = 0;
};
Span batched_span(int64_t block, int64_t stride, int64_t count) {
  if (block <= 0 || count <= 0) return {};
  const int64_t last = (count - 1) * stride;
  return {std::min<int64_t>(0, last), block + (last < 0 ? -last : last)};
}

template <class T>
bool on_device(const T* p, Span s) {
  if (s.elements == 0) return true;
  return cudaemu::is_device_range(p + s.offset, static_cast<size_t>(s.elements) * sizeof(T));
}

// ---- cuBLAS GEMM ------------------------------------------------------------------------------------

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasColMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

const char* op_name(cublasOperation_t op) {
  switch (op) {
    case CUBLAS_OP_N: return "N";
    case CUBLAS_OP_T: return "T";
    case CUBLAS_OP_C: return "C";
    default: return "?";
  }
}

template <class T>
cublasStatus_t gemm_strided_batched(const char* fn, cublasHandle_t handle, cublasOperation_t transa,
                                    cublasOperation_t transb, int64_t m, int64_t n, int64_t k, const T* alpha,
                                    const T* A, int64_t lda, long long strideA, const T* B, int64_t ldb,
                                    long long strideB, const T* beta, T* C, int64_t ldc, long long strideC,
                                    int64_t batchCount) {
  if (!is_live(handle, Kind::CublasHandle))
    return blas_fail(CUBLAS_STATUS_NOT_INITIALIZED, fn, "handle %p is not a live cuBLAS handle",
                     static_cast<void*>(handle));
  // For real types CUBLAS_OP_C is the plain transpose.
  const auto valid_op = [](cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; };
  if (!valid_op(transa) || !valid_op(transb))
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, fn, "invalid operation (transa %d, transb %d)",
                     static_cast<int>(transa), static_cast<int>(transb));
  if (m < 0 || n < 0 || k < 0 || batchCount < 0)
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, fn, "negative size (m %lld, n %lld, k %lld, batchCount %lld)",
                     static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                     static_cast<long long>(batchCount));
  // The stored matrices: A is rows_a x cols_a (m x k, or k x m when transposed), B rows_b x cols_b.
  const bool na = transa == CUBLAS_OP_N, nb = transb == CUBLAS_OP_N;
  const int64_t rows_a = na ? m : k, cols_a = na ? k : m;
  const int64_t rows_b = nb ? k : n, cols_b = nb ? n : k;
  if (lda < std::max<int64_t>(1, rows_a) || ldb < std::max<int64_t>(1, rows_b) || ldc < std::max<int64_t>(1, m))
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, fn,
                     "leading dimension too small: op(A) %s, op(B) %s, m %lld, n %lld, k %lld need lda >= %lld, "
                     "ldb >= %lld, ldc >= %lld; got lda %lld, ldb %lld, ldc %lld",
                     op_name(transa), op_name(transb), static_cast<long long>(m), static_cast<long long>(n),
                     static_cast<long long>(k), static_cast<long long>(std::max<int64_t>(1, rows_a)),
                     static_cast<long long>(std::max<int64_t>(1, rows_b)),
                     static_cast<long long>(std::max<int64_t>(1, m)), static_cast<long long>(lda),
                     static_cast<long long>(ldb), static_cast<long long>(ldc));
  if (!alpha || !beta) return blas_fail(CUBLAS_STATUS_INVALID_VALUE, fn, "alpha or beta is a null pointer");
  if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;  // nothing to compute

  // Host pointer mode (the default): the scalars are read from host memory, outside device access.
  const T a = *alpha, b = *beta;
  if (std::max({m, n, k, lda, ldb, ldc}) > INT_MAX)
    return blas_fail(CUBLAS_STATUS_NOT_SUPPORTED, fn, "sizes beyond 32 bits are not emulated (OpenBLAS takes int)");

  // BLAS semantics: with alpha == 0 or k == 0, A and B are not read; with beta == 0, C is not read.
  const bool reads_ab = k > 0 && a != T(0);
  if (reads_ab && !on_device(A, batched_span((cols_a - 1) * lda + rows_a, strideA, batchCount)))
    return blas_fail(CUBLAS_STATUS_EXECUTION_FAILED, fn,
                     "A (%lld x %lld, lda %lld, strideA %lld, %lld batch(es)) at %p is not inside one device "
                     "allocation",
                     static_cast<long long>(rows_a), static_cast<long long>(cols_a), static_cast<long long>(lda),
                     strideA, static_cast<long long>(batchCount), static_cast<const void*>(A));
  if (reads_ab && !on_device(B, batched_span((cols_b - 1) * ldb + rows_b, strideB, batchCount)))
    return blas_fail(CUBLAS_STATUS_EXECUTION_FAILED, fn,
                     "B (%lld x %lld, ldb %lld, strideB %lld, %lld batch(es)) at %p is not inside one device "
                     "allocation",
                     static_cast<long long>(rows_b), static_cast<long long>(cols_b), static_cast<long long>(ldb),
                     strideB, static_cast<long long>(batchCount), static_cast<const void*>(B));
  const int64_t c_extent = (n - 1) * ldc + m;
  if (!on_device(C, batched_span(c_extent, strideC, batchCount)))
    return blas_fail(CUBLAS_STATUS_EXECUTION_FAILED, fn,
                     "C (%lld x %lld, ldc %lld, strideC %lld, %lld batch(es)) at %p is not inside one device "
                     "allocation",
                     static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(ldc), strideC,
                     static_cast<long long>(batchCount), static_cast<const void*>(C));
  if (batchCount > 1 && (strideC < 0 ? -strideC : strideC) < c_extent)
    std::fprintf(stderr,
                 "cudaemu: %s: warning: the %lld output matrices overlap (strideC %lld < %lld): on a GPU the "
                 "result is undefined\n",
                 fn, static_cast<long long>(batchCount), strideC, static_cast<long long>(c_extent));

  const cudaemu::DeviceAccess access;
  const CBLAS_TRANSPOSE ta = na ? CblasNoTrans : CblasTrans, tb = nb ? CblasNoTrans : CblasTrans;
  for (int64_t i = 0; i < batchCount; ++i) {
    T* c = C + i * strideC;
    if (b == T(0) || !reads_ab) {  // C = beta * C here; beta == 0 writes zeros whatever C holds
      for (int64_t j = 0; j < n; ++j)
        for (int64_t r = 0; r < m; ++r) c[j * ldc + r] = b == T(0) ? T(0) : b * c[j * ldc + r];
    }
    if (reads_ab)
      blas_gemm(ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), a, A + i * strideA,
                static_cast<int>(lda), B + i * strideB, static_cast<int>(ldb), b == T(0) ? T(0) : b, c,
                static_cast<int>(ldc));
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

// ======================================================================================================
// cuBLAS
// ======================================================================================================

extern "C" {

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
  }
  return "unknown error";
}

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate", "handle is a null pointer");
  *handle = new cublasContext();
  track(*handle, Kind::CublasHandle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (!untrack(handle, Kind::CublasHandle))
    return blas_fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy", "handle %p is not a live cuBLAS handle",
                     static_cast<void*>(handle));
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  if (!is_live(handle, Kind::CublasHandle))
    return blas_fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream", "handle %p is not a live cuBLAS handle",
                     static_cast<void*>(handle));
  handle->stream = streamId;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
  if (!is_live(handle, Kind::CublasHandle))
    return blas_fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetStream", "handle %p is not a live cuBLAS handle",
                     static_cast<void*>(handle));
  if (!streamId) return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetStream", "streamId is a null pointer");
  *streamId = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!is_live(handle, Kind::CublasHandle))
    return blas_fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode", "handle %p is not a live cuBLAS handle",
                     static_cast<void*>(handle));
  // One of the modes, optionally with the CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION flag.
  const int base = static_cast<int>(mode) & ~static_cast<int>(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  const bool valid = base == CUBLAS_DEFAULT_MATH || base == CUBLAS_TENSOR_OP_MATH || base == CUBLAS_PEDANTIC_MATH ||
                     base == CUBLAS_TF32_TENSOR_OP_MATH || base == CUBLAS_FP32_EMULATED_BF16X9_MATH ||
                     base == CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH;
  if (!valid)
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode", "invalid math mode %d", static_cast<int>(mode));
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!is_live(handle, Kind::CublasHandle))
    return blas_fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetMathMode", "handle %p is not a live cuBLAS handle",
                     static_cast<void*>(handle));
  if (!mode) return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetMathMode", "mode is a null pointer");
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                            int64_t m, int64_t n, int64_t k, const float* alpha, const float* A,
                                            int64_t lda, long long int strideA, const float* B, int64_t ldb,
                                            long long int strideB, const float* beta, float* C, int64_t ldc,
                                            long long int strideC, int64_t batchCount) {
  return gemm_strided_batched("cublasSgemmStridedBatched_64", handle, transa, transb, m, n, k, alpha, A, lda, strideA,
                              B, ldb, strideB, beta, C, ldc, strideC, batchCount);
}

cublasStatus_t cublasDgemmStridedBatched_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                            int64_t m, int64_t n, int64_t k, const double* alpha, const double* A,
                                            int64_t lda, long long int strideA, const double* B, int64_t ldb,
                                            long long int strideB, const double* beta, double* C, int64_t ldc,
                                            long long int strideC, int64_t batchCount) {
  return gemm_strided_batched("cublasDgemmStridedBatched_64", handle, transa, transb, m, n, k, alpha, A, lda, strideA,
                              B, ldb, strideB, beta, C, ldc, strideC, batchCount);
}

}  // extern "C"

// ======================================================================================================
// cuDNN
// ======================================================================================================

namespace {

enum class Dir { Forward, BackwardData, BackwardFilter };

bool valid_data_type(cudnnDataType_t t) { return t >= CUDNN_DATA_FLOAT && t <= CUDNN_DATA_COMPLEX_FP64; }
bool valid_format(cudnnTensorFormat_t f) { return f >= CUDNN_TENSOR_NCHW && f <= CUDNN_TENSOR_NCHW_VECT_C; }

const char* data_type_name(cudnnDataType_t t) {
  switch (t) {
    case CUDNN_DATA_FLOAT: return "CUDNN_DATA_FLOAT";
    case CUDNN_DATA_DOUBLE: return "CUDNN_DATA_DOUBLE";
    case CUDNN_DATA_HALF: return "CUDNN_DATA_HALF";
    case CUDNN_DATA_BFLOAT16: return "CUDNN_DATA_BFLOAT16";
    default: return "another data type";
  }
}

cudnnStatus_t check_handle(cudnnHandle_t handle, const char* fn) {
  if (!is_live(handle, Kind::CudnnHandle))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "handle %p is not a live cuDNN handle", static_cast<void*>(handle));
  return CUDNN_STATUS_SUCCESS;
}

// Element strides of a packed 4-D layout, in NCHW (or KCRS) dimension order.
void packed_strides(cudnnTensorFormat_t format, int c, int h, int w, int64_t* sn, int64_t* sc, int64_t* sh,
                    int64_t* sw) {
  if (format == CUDNN_TENSOR_NHWC) {
    *sc = 1;
    *sw = c;
    *sh = static_cast<int64_t>(w) * c;
    *sn = static_cast<int64_t>(h) * w * c;
  } else {
    *sw = 1;
    *sh = w;
    *sc = static_cast<int64_t>(h) * w;
    *sn = static_cast<int64_t>(c) * h * w;
  }
}

// A convolution's sizes, checked against all three descriptors, and the strides of its operands.
struct Geometry {
  int N = 0, C = 0, H = 0, W = 0;          // input x
  int K = 0, Cg = 0, R = 0, S = 0;         // filter: output channels, input channels per group, size
  int P = 0, Q = 0;                        // output y: height and width
  int groups = 1, Kg = 0;                  // output channels per group
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  bool flip = false;                       // CUDNN_CONVOLUTION: the filter is applied rotated by 180 degrees
  int64_t xs[4] = {}, ws[4] = {}, ys[4] = {};  // element strides, in NCHW / KCRS order
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  int64_t x_count = 0, w_count = 0, y_count = 0;
};

// The output size cudnnGetConvolution2dForwardOutputDim gives; BAD_PARAM when the descriptors disagree.
cudnnStatus_t output_dims(const char* fn, const cudnnConvolutionStruct& conv, const cudnnTensorStruct& x,
                          const cudnnFilterStruct& w, int* p, int* q) {
  if (x.c != w.c * conv.groups)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn,
                    "the input has %d channels but the filter has %d per group and there are %d group(s)", x.c, w.c,
                    conv.groups);
  const int64_t eff_h = static_cast<int64_t>(w.h - 1) * conv.dilation_h + 1;
  const int64_t eff_w = static_cast<int64_t>(w.w - 1) * conv.dilation_w + 1;
  const int64_t in_h = x.h + 2LL * conv.pad_h, in_w = x.w + 2LL * conv.pad_w;
  if (eff_h > in_h || eff_w > in_w)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn,
                    "the dilated filter (%lld x %lld) is larger than the padded input (%lld x %lld)",
                    static_cast<long long>(eff_h), static_cast<long long>(eff_w), static_cast<long long>(in_h),
                    static_cast<long long>(in_w));
  *p = static_cast<int>((in_h - eff_h) / conv.u + 1);
  *q = static_cast<int>((in_w - eff_w) / conv.v + 1);
  return CUDNN_STATUS_SUCCESS;
}

// Checks x, w, conv and y for a convolution in direction `dir` (y is dy for the backward passes) and
// fills *g. BAD_PARAM and NOT_SUPPORTED follow the return values cuDNN documents for the direction.
cudnnStatus_t make_geometry(const char* fn, Dir dir, const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                            const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y, Geometry* g) {
  const char* xn = dir == Dir::BackwardData ? "dx" : "x";
  const char* yn = dir == Dir::Forward ? "y" : "dy";
  const char* wn = dir == Dir::BackwardFilter ? "dw" : "w";
  if (!is_live(x, Kind::Tensor) || !x->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the %s descriptor is not a live, set tensor descriptor", xn);
  if (!is_live(y, Kind::Tensor) || !y->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the %s descriptor is not a live, set tensor descriptor", yn);
  if (!is_live(w, Kind::Filter) || !w->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the %s descriptor is not a live, set filter descriptor", wn);
  if (!is_live(conv, Kind::Convolution) || !conv->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the convolution descriptor is not a live, set 2-D descriptor");
  if (x->dtype != w->dtype || x->dtype != y->dtype)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "data types differ: %s %s, %s %s, %s %s", xn,
                    data_type_name(x->dtype), wn, data_type_name(w->dtype), yn, data_type_name(y->dtype));
  if (w->k % conv->groups != 0)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%d output channels are not a multiple of the %d group(s)", w->k,
                    conv->groups);
  int p = 0, q = 0;
  if (const cudnnStatus_t st = output_dims(fn, *conv, *x, *w, &p, &q); st != CUDNN_STATUS_SUCCESS) return st;
  if (y->n != x->n || y->c != w->k || y->h != p || y->w != q)
    return dnn_fail(dir == Dir::Forward ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM, fn,
                    "%s is [%d, %d, %d, %d] but the convolution of %s [%d, %d, %d, %d] gives [%d, %d, %d, %d]", yn,
                    y->n, y->c, y->h, y->w, xn, x->n, x->c, x->h, x->w, x->n, w->k, p, q);
  // The configurations cuDNN documents for these calls that the emulator implements: FLOAT_CONFIG
  // (F32 data, F32 compute) and DOUBLE_CONFIG (F64 data, F64 compute).
  const bool f32 = x->dtype == CUDNN_DATA_FLOAT && conv->compute == CUDNN_DATA_FLOAT;
  const bool f64 = x->dtype == CUDNN_DATA_DOUBLE && conv->compute == CUDNN_DATA_DOUBLE;
  if (!f32 && !f64)
    return dnn_fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, fn, "data type %s with compute type %s is not supported",
                    data_type_name(x->dtype), data_type_name(conv->compute));
  if (x->format == CUDNN_TENSOR_NCHW_VECT_C || y->format == CUDNN_TENSOR_NCHW_VECT_C ||
      w->format == CUDNN_TENSOR_NCHW_VECT_C)
    return dnn_fail(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, fn, "CUDNN_TENSOR_NCHW_VECT_C is not emulated");

  g->N = x->n, g->C = x->c, g->H = x->h, g->W = x->w;
  g->K = w->k, g->Cg = w->c, g->R = w->h, g->S = w->w;
  g->P = p, g->Q = q;
  g->groups = conv->groups, g->Kg = w->k / conv->groups;
  g->pad_h = conv->pad_h, g->pad_w = conv->pad_w, g->u = conv->u, g->v = conv->v;
  g->dil_h = conv->dilation_h, g->dil_w = conv->dilation_w;
  g->flip = conv->mode == CUDNN_CONVOLUTION;
  const int64_t xs[4] = {x->sn, x->sc, x->sh, x->sw}, ws[4] = {w->sk, w->sc, w->sh, w->sw},
                ys[4] = {y->sn, y->sc, y->sh, y->sw};
  std::copy(xs, xs + 4, g->xs);
  std::copy(ws, ws + 4, g->ws);
  std::copy(ys, ys + 4, g->ys);
  g->dtype = x->dtype;
  g->x_count = static_cast<int64_t>(x->n) * x->c * x->h * x->w;
  g->w_count = static_cast<int64_t>(w->k) * w->c * w->h * w->w;
  g->y_count = static_cast<int64_t>(y->n) * y->c * y->h * y->w;
  return CUDNN_STATUS_SUCCESS;
}

// Calls f(x offset, w offset, y offset) for every product x * w that output element y sums:
//   y[n, k, p, q] = sum over c < Cg, r < R, s < S of x[n, g Cg + c, p u - pad_h + r dil_h, q v - pad_w + s dil_w]
//                   * w[k, c, r', s'],  g = k / Kg,
// with (r', s') = (r, s) for cross-correlation and (R-1-r, S-1-s) for convolution; taps in the zero
// padding contribute nothing.
template <class F>
void for_each_product(const Geometry& g, F&& f) {
  for (int n = 0; n < g.N; ++n)
    for (int k = 0; k < g.K; ++k) {
      const int group = k / g.Kg;
      for (int p = 0; p < g.P; ++p)
        for (int q = 0; q < g.Q; ++q) {
          const int64_t yo = n * g.ys[0] + k * g.ys[1] + p * g.ys[2] + q * g.ys[3];
          for (int c = 0; c < g.Cg; ++c) {
            const int ci = group * g.Cg + c;
            for (int r = 0; r < g.R; ++r) {
              const int ih = p * g.u - g.pad_h + r * g.dil_h;
              if (ih < 0 || ih >= g.H) continue;
              const int rr = g.flip ? g.R - 1 - r : r;
              for (int s = 0; s < g.S; ++s) {
                const int iw = q * g.v - g.pad_w + s * g.dil_w;
                if (iw < 0 || iw >= g.W) continue;
                const int ss = g.flip ? g.S - 1 - s : s;
                f(n * g.xs[0] + ci * g.xs[1] + ih * g.xs[2] + iw * g.xs[3],
                  k * g.ws[0] + c * g.ws[1] + rr * g.ws[2] + ss * g.ws[3], yo);
              }
            }
          }
        }
    }
}

// out = alpha * acc + beta * out over a packed tensor; beta == 0 does not read out.
template <class T>
void blend(T* out, const std::vector<T>& acc, double alpha, double beta) {
  for (size_t i = 0; i < acc.size(); ++i)
    out[i] = static_cast<T>(beta == 0.0 ? alpha * acc[i] : alpha * acc[i] + beta * static_cast<double>(out[i]));
}

// Products are accumulated in the data type with fused multiply-adds, as cuDNN's FP32 (FMA math) and
// FP64 kernels do, one long sum per output — so F32 results carry a GPU's kind of rounding error (a
// little more: cuDNN's sums are blocked), and the parity tests' F32 tolerances are exercised as they
// will be on a GPU rather than against sums exact to double.
template <class T>
void run_conv(Dir dir, const Geometry& g, const void* in1, const void* in2, void* out, double alpha, double beta) {
  std::vector<T> acc;
  switch (dir) {
    case Dir::Forward: {  // in1 = x, in2 = w, out = y
      const T* x = static_cast<const T*>(in1);
      const T* w = static_cast<const T*>(in2);
      acc.assign(static_cast<size_t>(g.y_count), T(0));
      for_each_product(g, [&](int64_t xo, int64_t wo, int64_t yo) {
        acc[yo] = std::fma(x[xo], w[wo], acc[yo]);
      });
      break;
    }
    case Dir::BackwardData: {  // in1 = w, in2 = dy, out = dx
      const T* w = static_cast<const T*>(in1);
      const T* dy = static_cast<const T*>(in2);
      acc.assign(static_cast<size_t>(g.x_count), T(0));
      for_each_product(g, [&](int64_t xo, int64_t wo, int64_t yo) {
        acc[xo] = std::fma(dy[yo], w[wo], acc[xo]);
      });
      break;
    }
    case Dir::BackwardFilter: {  // in1 = x, in2 = dy, out = dw
      const T* x = static_cast<const T*>(in1);
      const T* dy = static_cast<const T*>(in2);
      acc.assign(static_cast<size_t>(g.w_count), T(0));
      for_each_product(g, [&](int64_t xo, int64_t wo, int64_t yo) {
        acc[wo] = std::fma(x[xo], dy[yo], acc[wo]);
      });
      break;
    }
  }
  blend(static_cast<T*>(out), acc, alpha, beta);
}

bool valid_algo(Dir dir, int algo) {
  switch (dir) {
    case Dir::Forward: return algo >= 0 && algo < CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    case Dir::BackwardData: return algo >= 0 && algo < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
    case Dir::BackwardFilter: return algo >= 0 && algo < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  }
  return false;
}

// BAD_PARAM for a value outside the enum; NOT_SUPPORTED for the one cuDNN documents as not implemented.
cudnnStatus_t check_algo(const char* fn, Dir dir, int algo) {
  if (!valid_algo(dir, algo)) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "invalid algorithm %d", algo);
  if (dir == Dir::BackwardFilter && algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD)
    return dnn_fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD is not implemented");
  return CUDNN_STATUS_SUCCESS;
}

// The workspace an emulated algorithm needs: the first candidate of each direction asks for one element
// per element it writes (plus one), the second for none, so callers run both their workspace and their
// no-workspace paths. The convolution fills it with 0xFF bytes before computing (real scratch holds
// garbage and is written by the algorithm), so a workspace that overlaps an operand shows in the result.
size_t required_workspace(Dir dir, const Geometry& g, int algo) {
  const size_t elem = g.dtype == CUDNN_DATA_DOUBLE ? sizeof(double) : sizeof(float);
  switch (dir) {
    case Dir::Forward:
      return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? (static_cast<size_t>(g.y_count) + 1) * elem : 0;
    case Dir::BackwardData:
      return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 ? (static_cast<size_t>(g.x_count) + 1) * elem : 0;
    case Dir::BackwardFilter:
      return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ? (static_cast<size_t>(g.w_count) + 1) * elem : 0;
  }
  return 0;
}

// The heuristics' answer: a deterministic algorithm first, then (for the backward passes) a
// non-deterministic one, so callers that filter on determinism are exercised. Each is reported with
// the convolution's math type and its workspace (required_workspace); when the configuration cannot
// run, each carries the reason in its status (the call itself succeeds, as cuDNN's does).
template <class Perf, class Algo>
cudnnStatus_t heuristics(const char* fn, Dir dir, cudnnHandle_t handle, const cudnnTensorStruct* x,
                         const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y,
                         int requested, int* returned, Perf* perf, Algo det_algo, Algo nondet_algo) {
  if (const cudnnStatus_t st = check_handle(handle, fn); st != CUDNN_STATUS_SUCCESS) return st;
  if (requested <= 0 || !returned || !perf)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount %d, returnedAlgoCount %p, perfResults %p",
                    requested, static_cast<void*>(returned), static_cast<void*>(perf));
  Geometry g;
  const cudnnStatus_t st = make_geometry(fn, dir, x, w, conv, y, &g);
  if (st != CUDNN_STATUS_SUCCESS && CUDNN_STATUS_CATEGORY(st) != CUDNN_STATUS_NOT_SUPPORTED) return st;
  const Algo algos[2] = {det_algo, nondet_algo};
  const cudnnDeterminism_t det[2] = {CUDNN_DETERMINISTIC, dir == Dir::Forward ? CUDNN_DETERMINISTIC
                                                                              : CUDNN_NON_DETERMINISTIC};
  const int n = std::min(requested, 2);
  for (int i = 0; i < n; ++i) {
    perf[i] = Perf{};
    perf[i].algo = algos[i];
    perf[i].status = st;
    perf[i].time = -1.0f;  // a heuristic: nothing was timed
    perf[i].memory = st == CUDNN_STATUS_SUCCESS ? required_workspace(dir, g, static_cast<int>(algos[i])) : 0;
    perf[i].determinism = det[i];
    perf[i].mathType = conv->math;
  }
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t workspace_size(const char* fn, Dir dir, cudnnHandle_t handle, const cudnnTensorStruct* x,
                             const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv,
                             const cudnnTensorStruct* y, int algo, size_t* bytes) {
  if (const cudnnStatus_t st = check_handle(handle, fn); st != CUDNN_STATUS_SUCCESS) return st;
  if (!bytes) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "sizeInBytes is a null pointer");
  Geometry g;
  if (const cudnnStatus_t st = make_geometry(fn, dir, x, w, conv, y, &g); st != CUDNN_STATUS_SUCCESS) return st;
  if (const cudnnStatus_t st = check_algo(fn, dir, algo); st != CUDNN_STATUS_SUCCESS) return st;
  *bytes = required_workspace(dir, g, algo);
  return CUDNN_STATUS_SUCCESS;
}

// The three convolution calls. in1/in2/out are (x, w, y) forward, (w, dy, dx) backward data and
// (x, dy, dw) backward filter.
cudnnStatus_t convolve(const char* fn, Dir dir, cudnnHandle_t handle, const void* alpha, const cudnnTensorStruct* x,
                       const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y,
                       int algo, void* workspace, size_t workspace_bytes, const void* beta, const void* in1,
                       const void* in2, void* out) {
  if (const cudnnStatus_t st = check_handle(handle, fn); st != CUDNN_STATUS_SUCCESS) return st;
  Geometry g;
  if (const cudnnStatus_t st = make_geometry(fn, dir, x, w, conv, y, &g); st != CUDNN_STATUS_SUCCESS) return st;
  if (!alpha || !beta || !in1 || !in2 || !out)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "a null pointer among alpha %p, beta %p and the data (%p, %p, %p)",
                    alpha, beta, in1, in2, out);
  if (const cudnnStatus_t st = check_algo(fn, dir, algo); st != CUDNN_STATUS_SUCCESS) return st;
  // RETORT_CUDAEMU_CUDNN_REFUSE=1 (read at every call): the heuristics' first algorithm of each direction
  // is refused at launch, as a real cuDNN may refuse one it proposed, with a sub-code of the "not
  // supported" category — cuDNN 9 reports CUDNN_STATUS_NOT_SUPPORTED_SHAPE (3002) and its siblings where
  // older versions said CUDNN_STATUS_NOT_SUPPORTED (3000); callers test CUDNN_STATUS_CATEGORY.
  if (const char* v = std::getenv("RETORT_CUDAEMU_CUDNN_REFUSE"); v && std::strcmp(v, "1") == 0) {
    const int first = dir == Dir::Forward        ? static_cast<int>(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
                      : dir == Dir::BackwardData ? static_cast<int>(CUDNN_CONVOLUTION_BWD_DATA_ALGO_1)
                                                 : static_cast<int>(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1);
    if (algo == first)
      return dnn_fail(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, fn, "algorithm %d refused (RETORT_CUDAEMU_CUDNN_REFUSE=1)", algo);
  }

  // The scaling factors live in host memory: double for F64 data, float otherwise.
  const bool f64 = g.dtype == CUDNN_DATA_DOUBLE;
  const double a = f64 ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
  const double b = f64 ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);

  const size_t elem = f64 ? sizeof(double) : sizeof(float);
  const int64_t counts[3] = {dir == Dir::BackwardData ? g.w_count : g.x_count,
                             dir == Dir::Forward ? g.w_count : g.y_count,
                             dir == Dir::Forward ? g.y_count : dir == Dir::BackwardData ? g.x_count : g.w_count};
  const void* ptrs[3] = {in1, in2, out};
  const char* names[3][3] = {{"x", "w", "y"}, {"w", "dy", "dx"}, {"x", "dy", "dw"}};
  for (int i = 0; i < 3; ++i)
    if (!cudaemu::is_device_range(ptrs[i], static_cast<size_t>(counts[i]) * elem))
      return dnn_fail(CUDNN_STATUS_EXECUTION_FAILED, fn, "%s (%lld elements at %p) is not inside one device allocation",
                      names[static_cast<int>(dir)][i], static_cast<long long>(counts[i]), ptrs[i]);
  if (workspace && workspace_bytes > 0 && !cudaemu::is_device_range(workspace, workspace_bytes))
    return dnn_fail(CUDNN_STATUS_EXECUTION_FAILED, fn, "the workspace (%zu bytes at %p) is not inside one device "
                    "allocation", workspace_bytes, workspace);
  const size_t needed = required_workspace(dir, g, algo);
  if (needed > 0 && (!workspace || workspace_bytes < needed))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "algorithm %d needs a workspace of %zu bytes; got %zu at %p", algo,
                    needed, workspace_bytes, workspace);

  const cudaemu::DeviceAccess access;
  if (needed > 0) std::memset(workspace, 0xFF, needed);
  if (f64)
    run_conv<double>(dir, g, in1, in2, out, a, b);
  else
    run_conv<float>(dir, g, in1, in2, out, a, b);
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char* cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
#define RETORT_CUDAEMU_NAME(s) \
  case s: return #s;
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_SUCCESS)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_INITIALIZED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_DEPRECATED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_LICENSE_ERROR)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_RUNTIME_IN_PROGRESS)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_RUNTIME_FP_OVERFLOW)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_SHAPE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_PADDING)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
    RETORT_CUDAEMU_NAME(CUDNN_STATUS_EXECUTION_FAILED_CURAND)
#undef RETORT_CUDAEMU_NAME
  }
  return "CUDNN_UNKNOWN_STATUS";
}

// ---- handles ----------------------------------------------------------------------------------------

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  return create_dnn_object(handle, Kind::CudnnHandle, "cudnnCreate");
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  return destroy_dnn_object(handle, Kind::CudnnHandle, "cudnnDestroy", "cuDNN handle");
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
  if (const cudnnStatus_t st = check_handle(handle, "cudnnSetStream"); st != CUDNN_STATUS_SUCCESS) return st;
  handle->stream = streamId;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t* streamId) {
  if (const cudnnStatus_t st = check_handle(handle, "cudnnGetStream"); st != CUDNN_STATUS_SUCCESS) return st;
  if (!streamId) return dnn_fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetStream", "streamId is a null pointer");
  *streamId = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

// ---- tensor and filter descriptors -------------------------------------------------------------------

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* tensorDesc) {
  return create_dnn_object(tensorDesc, Kind::Tensor, "cudnnCreateTensorDescriptor");
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format,
                                         cudnnDataType_t dataType, int n, int c, int h, int w) {
  const char* fn = "cudnnSetTensor4dDescriptor";
  if (!is_live(tensorDesc, Kind::Tensor))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%p is not a live tensor descriptor", static_cast<void*>(tensorDesc));
  if (!valid_format(format) || !valid_data_type(dataType))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "invalid format %d or data type %d", static_cast<int>(format),
                    static_cast<int>(dataType));
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "dimensions [%d, %d, %d, %d] must be positive", n, c, h, w);
  if (static_cast<int64_t>(n) * c * h * w > INT32_MAX)
    return dnn_fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "[%d, %d, %d, %d] exceeds 2 Gi elements", n, c, h, w);
  cudnnTensorStruct& t = *tensorDesc;
  t.dtype = dataType;
  t.format = format;
  t.n = n, t.c = c, t.h = h, t.w = w;
  packed_strides(format, c, h, w, &t.sn, &t.sc, &t.sh, &t.sw);
  t.set = true;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
  return destroy_dnn_object(tensorDesc, Kind::Tensor, "cudnnDestroyTensorDescriptor", "tensor descriptor");
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* filterDesc) {
  return create_dnn_object(filterDesc, Kind::Filter, "cudnnCreateFilterDescriptor");
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  const char* fn = "cudnnSetFilter4dDescriptor";
  if (!is_live(filterDesc, Kind::Filter))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%p is not a live filter descriptor", static_cast<void*>(filterDesc));
  if (!valid_format(format) || !valid_data_type(dataType))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "invalid format %d or data type %d", static_cast<int>(format),
                    static_cast<int>(dataType));
  if (k <= 0 || c <= 0 || h <= 0 || w <= 0)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "dimensions [%d, %d, %d, %d] must be positive", k, c, h, w);
  cudnnFilterStruct& f = *filterDesc;
  f.dtype = dataType;
  f.format = format;
  f.k = k, f.c = c, f.h = h, f.w = w;
  packed_strides(format, c, h, w, &f.sk, &f.sc, &f.sh, &f.sw);  // KCRS, or KRSC for NHWC
  f.set = true;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
  return destroy_dnn_object(filterDesc, Kind::Filter, "cudnnDestroyFilterDescriptor", "filter descriptor");
}

// ---- convolution descriptors -----------------------------------------------------------------------

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* convDesc) {
  return create_dnn_object(convDesc, Kind::Convolution, "cudnnCreateConvolutionDescriptor");
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
  return destroy_dnn_object(convDesc, Kind::Convolution, "cudnnDestroyConvolutionDescriptor", "convolution descriptor");
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType) {
  const char* fn = "cudnnSetConvolutionMathType";
  if (!is_live(convDesc, Kind::Convolution))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%p is not a live convolution descriptor", static_cast<void*>(convDesc));
  if (mathType < CUDNN_DEFAULT_MATH || mathType > CUDNN_FMA_MATH)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "invalid math type %d", static_cast<int>(mathType));
  convDesc->math = mathType;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t* mathType) {
  const char* fn = "cudnnGetConvolutionMathType";
  if (!is_live(convDesc, Kind::Convolution) || !mathType)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "bad descriptor %p or null mathType", static_cast<void*>(convDesc));
  *mathType = convDesc->math;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t convDesc, int groupCount) {
  const char* fn = "cudnnSetConvolutionGroupCount";
  if (!is_live(convDesc, Kind::Convolution))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%p is not a live convolution descriptor", static_cast<void*>(convDesc));
  if (groupCount < 1) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "invalid group count %d", groupCount);
  convDesc->groups = groupCount;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionGroupCount(cudnnConvolutionDescriptor_t convDesc, int* groupCount) {
  const char* fn = "cudnnGetConvolutionGroupCount";
  if (!is_live(convDesc, Kind::Convolution) || !groupCount)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "bad descriptor %p or null groupCount", static_cast<void*>(convDesc));
  *groupCount = convDesc->groups;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w, int u,
                                              int v, int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType) {
  const char* fn = "cudnnSetConvolution2dDescriptor";
  if (!is_live(convDesc, Kind::Convolution))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "%p is not a live convolution descriptor", static_cast<void*>(convDesc));
  if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "pad %d x %d (must be >= 0), stride %d x %d and dilation %d x %d "
                    "(must be > 0)", pad_h, pad_w, u, v, dilation_h, dilation_w);
  if ((mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) || !valid_data_type(computeType))
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "invalid mode %d or compute type %d", static_cast<int>(mode),
                    static_cast<int>(computeType));
  cudnnConvolutionStruct& c = *convDesc;
  c.pad_h = pad_h, c.pad_w = pad_w, c.u = u, c.v = v, c.dilation_h = dilation_h, c.dilation_w = dilation_w;
  c.mode = mode;
  c.compute = computeType;
  c.set = true;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                    const cudnnTensorDescriptor_t inputTensorDesc,
                                                    const cudnnFilterDescriptor_t filterDesc, int* n, int* c, int* h,
                                                    int* w) {
  const char* fn = "cudnnGetConvolution2dForwardOutputDim";
  if (!is_live(convDesc, Kind::Convolution) || !convDesc->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the convolution descriptor is not a live, set 2-D descriptor");
  if (!is_live(inputTensorDesc, Kind::Tensor) || !inputTensorDesc->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the input descriptor is not a live, set tensor descriptor");
  if (!is_live(filterDesc, Kind::Filter) || !filterDesc->set)
    return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "the filter descriptor is not a live, set filter descriptor");
  if (!n || !c || !h || !w) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "a null output pointer");
  int p = 0, q = 0;
  if (const cudnnStatus_t st = output_dims(fn, *convDesc, *inputTensorDesc, *filterDesc, &p, &q);
      st != CUDNN_STATUS_SUCCESS)
    return st;
  *n = inputTensorDesc->n;
  *c = filterDesc->k;
  *h = p;
  *w = q;
  return CUDNN_STATUS_SUCCESS;
}

// ---- forward ----------------------------------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
  const char* fn = "cudnnGetConvolutionForwardAlgorithmMaxCount";
  if (const cudnnStatus_t st = check_handle(handle, fn); st != CUDNN_STATUS_SUCCESS) return st;
  if (!count) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "count is a null pointer");
  *count = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
                                                     const cudnnFilterDescriptor_t filterDesc,
                                                     const cudnnConvolutionDescriptor_t convDesc,
                                                     const cudnnTensorDescriptor_t destDesc,
                                                     const int requestedAlgoCount, int* returnedAlgoCount,
                                                     cudnnConvolutionFwdAlgoPerf_t* perfResults) {
  return heuristics("cudnnGetConvolutionForwardAlgorithm_v7", Dir::Forward, handle, srcDesc, filterDesc, convDesc,
                    destDesc, requestedAlgoCount, returnedAlgoCount, perfResults,
                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                      const cudnnFilterDescriptor_t wDesc,
                                                      const cudnnConvolutionDescriptor_t convDesc,
                                                      const cudnnTensorDescriptor_t yDesc,
                                                      cudnnConvolutionFwdAlgo_t algo, size_t* sizeInBytes) {
  return workspace_size("cudnnGetConvolutionForwardWorkspaceSize", Dir::Forward, handle, xDesc, wDesc, convDesc,
                        yDesc, algo, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc,
                                      const void* x, const cudnnFilterDescriptor_t wDesc, const void* w,
                                      const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionFwdAlgo_t algo,
                                      void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
                                      const cudnnTensorDescriptor_t yDesc, void* y) {
  return convolve("cudnnConvolutionForward", Dir::Forward, handle, alpha, xDesc, wDesc, convDesc, yDesc, algo,
                  workSpace, workSpaceSizeInBytes, beta, x, w, y);
}

// ---- backward data ----------------------------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
  const char* fn = "cudnnGetConvolutionBackwardDataAlgorithmMaxCount";
  if (const cudnnStatus_t st = check_handle(handle, fn); st != CUDNN_STATUS_SUCCESS) return st;
  if (!count) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "count is a null pointer");
  *count = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t handle,
                                                          const cudnnFilterDescriptor_t filterDesc,
                                                          const cudnnTensorDescriptor_t diffDesc,
                                                          const cudnnConvolutionDescriptor_t convDesc,
                                                          const cudnnTensorDescriptor_t gradDesc,
                                                          const int requestedAlgoCount, int* returnedAlgoCount,
                                                          cudnnConvolutionBwdDataAlgoPerf_t* perfResults) {
  return heuristics("cudnnGetConvolutionBackwardDataAlgorithm_v7", Dir::BackwardData, handle, gradDesc, filterDesc,
                    convDesc, diffDesc, requestedAlgoCount, returnedAlgoCount, perfResults,
                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc,
                                                           const cudnnTensorDescriptor_t dyDesc,
                                                           const cudnnConvolutionDescriptor_t convDesc,
                                                           const cudnnTensorDescriptor_t dxDesc,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t* sizeInBytes) {
  return workspace_size("cudnnGetConvolutionBackwardDataWorkspaceSize", Dir::BackwardData, handle, dxDesc, wDesc,
                        convDesc, dyDesc, algo, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                           const cudnnFilterDescriptor_t wDesc, const void* w,
                                           const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                           const cudnnConvolutionDescriptor_t convDesc,
                                           cudnnConvolutionBwdDataAlgo_t algo, void* workSpace,
                                           size_t workSpaceSizeInBytes, const void* beta,
                                           const cudnnTensorDescriptor_t dxDesc, void* dx) {
  return convolve("cudnnConvolutionBackwardData", Dir::BackwardData, handle, alpha, dxDesc, wDesc, convDesc, dyDesc,
                  algo, workSpace, workSpaceSizeInBytes, beta, w, dy, dx);
}

// ---- backward filter --------------------------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
  const char* fn = "cudnnGetConvolutionBackwardFilterAlgorithmMaxCount";
  if (const cudnnStatus_t st = check_handle(handle, fn); st != CUDNN_STATUS_SUCCESS) return st;
  if (!count) return dnn_fail(CUDNN_STATUS_BAD_PARAM, fn, "count is a null pointer");
  *count = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t handle,
                                                            const cudnnTensorDescriptor_t srcDesc,
                                                            const cudnnTensorDescriptor_t diffDesc,
                                                            const cudnnConvolutionDescriptor_t convDesc,
                                                            const cudnnFilterDescriptor_t gradDesc,
                                                            const int requestedAlgoCount, int* returnedAlgoCount,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t* perfResults) {
  return heuristics("cudnnGetConvolutionBackwardFilterAlgorithm_v7", Dir::BackwardFilter, handle, srcDesc, gradDesc,
                    convDesc, diffDesc, requestedAlgoCount, returnedAlgoCount, perfResults,
                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle,
                                                             const cudnnTensorDescriptor_t xDesc,
                                                             const cudnnTensorDescriptor_t dyDesc,
                                                             const cudnnConvolutionDescriptor_t convDesc,
                                                             const cudnnFilterDescriptor_t gradDesc,
                                                             cudnnConvolutionBwdFilterAlgo_t algo,
                                                             size_t* sizeInBytes) {
  return workspace_size("cudnnGetConvolutionBackwardFilterWorkspaceSize", Dir::BackwardFilter, handle, xDesc,
                        gradDesc, convDesc, dyDesc, algo, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             const cudnnTensorDescriptor_t xDesc, const void* x,
                                             const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace,
                                             size_t workSpaceSizeInBytes, const void* beta,
                                             const cudnnFilterDescriptor_t dwDesc, void* dw) {
  return convolve("cudnnConvolutionBackwardFilter", Dir::BackwardFilter, handle, alpha, xDesc, dwDesc, convDesc,
                  dyDesc, algo, workSpace, workSpaceSizeInBytes, beta, x, dy, dw);
}

}  // extern "C"
