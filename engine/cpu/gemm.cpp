// CPU GEMM through OpenBLAS (cblas, row-major). Batched calls loop over the batch; each call is
// multithreaded by OpenBLAS itself (OpenMP flavour, sharing our thread pool).
#include <cblas.h>
#include <omp.h>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

void CpuBackend::gemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  const int64_t lda = g.blas_lda(), ldb = g.blas_ldb();  // GemmArgs allows anything when k == 0
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.trans_b ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < g.batch; ++i) {
    if (g.dtype == DType::F32) {
      cblas_sgemm(CblasRowMajor, ta, tb, g.m, g.n, g.k, static_cast<float>(g.alpha),
                  static_cast<const float*>(g.a) + i * g.stride_a, lda,
                  static_cast<const float*>(g.b) + i * g.stride_b, ldb, static_cast<float>(g.beta),
                  static_cast<float*>(g.c) + i * g.stride_c, g.ldc);
    } else if (g.dtype == DType::F64) {
      cblas_dgemm(CblasRowMajor, ta, tb, g.m, g.n, g.k, g.alpha, static_cast<const double*>(g.a) + i * g.stride_a,
                  lda, static_cast<const double*>(g.b) + i * g.stride_b, ldb, g.beta,
                  static_cast<double*>(g.c) + i * g.stride_c, g.ldc);
    } else {
      RETORT_FAIL("gemm: unsupported dtype ", dtype_name(g.dtype));
    }
  }
}

}  // namespace retort::cpu

namespace retort {

// Debian's OpenBLAS is built with DYNAMIC_ARCH: it picks its kernels at load time, and on some
// machines it has been seen to fall back to old ones. Logging the choice makes that visible.
std::string cpu_backend_info() {
  return detail::cat("OpenBLAS (", openblas_get_corename(), " kernels; ", openblas_get_config(), "), ",
                     omp_get_max_threads(), " threads; ", cpu::dnnl_info());
}

}  // namespace retort
