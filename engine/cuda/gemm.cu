// CUDA GEMM through cuBLAS: row-major strided-batched products (engine/backend.h, GemmArgs).
//
// cuBLAS is column-major. A row-major matrix M [r, c] with leading dimension ld is, read column-major,
// M^T [c, r] with the same ld, so the row-major product C = op(A) @ op(B) is computed as the
// column-major product C^T = op(B)^T @ op(A)^T: A and B swap places, and so do m and n; each keeps its
// own transpose flag. No data moves.
//
// F32 follows IEEE single precision unless allow_tf32() (RETORT_ALLOW_TF32=1): the handle's math mode
// is set on every call, so toggling the switch takes effect at the next GEMM. CUBLAS_DEFAULT_MATH
// never uses TF32 by itself in cuBLAS 11+ (only CUBLAS_TF32_TENSOR_OP_MATH, or the driver override
// NVIDIA_TF32_OVERRIDE=1, would). F64 is unaffected by the math mode.
#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

void CudaBackend::gemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  Context& c = ctx();
  cublasHandle_t h = c.cublas();
  // In the column-major view, cuBLAS's first operand is our B and its second our A.
  const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  // GemmArgs allows any leading dimension when k == 0, cuBLAS does not; the swapped call's minimums are
  // the same stored widths as in the row-major view.
  const int64_t lda = g.blas_lda(), ldb = g.blas_ldb();
  const auto what = [&] {
    return detail::cat("a ", dtype_name(g.dtype), " GEMM of [", g.m, ", ", g.k, "] @ [", g.k, ", ", g.n, "]",
                       g.trans_a ? " (A transposed)" : "", g.trans_b ? " (B transposed)" : "", " x ", g.batch,
                       " batch(es), lda ", g.lda, ", ldb ", g.ldb, ", ldc ", g.ldc);
  };
  if (g.dtype == DType::F32) {
    RETORT_CUBLAS_CHECK(cublasSetMathMode(h, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                        "setting the cuBLAS math mode (TF32 ", allow_tf32() ? "allowed" : "off", ")");
    const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
    RETORT_CUBLAS_CHECK(cublasSgemmStridedBatched_64(h, op_first, op_second, g.n, g.m, g.k, &alpha,
                                                     static_cast<const float*>(g.b), ldb, g.stride_b,
                                                     static_cast<const float*>(g.a), lda, g.stride_a, &beta,
                                                     static_cast<float*>(g.c), g.ldc, g.stride_c, g.batch),
                        what());
  } else if (g.dtype == DType::F64) {
    const double alpha = g.alpha, beta = g.beta;
    RETORT_CUBLAS_CHECK(cublasDgemmStridedBatched_64(h, op_first, op_second, g.n, g.m, g.k, &alpha,
                                                     static_cast<const double*>(g.b), ldb, g.stride_b,
                                                     static_cast<const double*>(g.a), lda, g.stride_a, &beta,
                                                     static_cast<double*>(g.c), g.ldc, g.stride_c, g.batch),
                        what());
  } else {
    RETORT_FAIL("gemm (cuda): unsupported dtype ", dtype_name(g.dtype), " (expected f32 or f64)");
  }
}

}  // namespace retort::cuda
