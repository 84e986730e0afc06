// Symmetric eigendecomposition on the CPU: LAPACK's divide-and-conquer ?syevd (from OpenBLAS, which
// carries LAPACK; Debian ships no lapack.h beside it, so the two Fortran entry points are declared
// here), one call per matrix of the batch, matrices split across threads.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"

extern "C" {
void ssyevd_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w, float* work,
             const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len, size_t uplo_len);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
             const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len, size_t uplo_len);
}

namespace retort::cpu {

namespace {

constexpr int kNonFinite = -1000000;  // a `failed` code LAPACK never returns

int syevd(int n, float* a, float* w, std::vector<float>& work, std::vector<int>& iwork) {
  int lwork = static_cast<int>(work.size()), liwork = static_cast<int>(iwork.size()), info = 0;
  ssyevd_("V", "U", &n, a, &n, w, work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  return info;
}
int syevd(int n, double* a, double* w, std::vector<double>& work, std::vector<int>& iwork) {
  int lwork = static_cast<int>(work.size()), liwork = static_cast<int>(iwork.size()), info = 0;
  dsyevd_("V", "U", &n, a, &n, w, work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  return info;
}

// A row-major symmetric matrix is its own column-major storage, and LAPACK's "U" (upper, column-major)
// is our lower triangle. The eigenvectors come back as columns of a column-major matrix, i.e. rows of
// `work_a` here; they are written transposed into `vectors` with the sign convention of backend.h.
template <class T>
void symeig_typed(const Tensor& a, Tensor& values, Tensor& vectors) {
  const int64_t batch = a.shape()[0];
  const int n = static_cast<int>(a.shape()[1]);
  const T* src = a.data<T>();
  T* w_out = values.data<T>();
  T* v_out = vectors.data<T>();
  // LAPACK's documented minimum workspaces for JOBZ = 'V'.
  const size_t lwork = 1 + 6 * static_cast<size_t>(n) + 2 * static_cast<size_t>(n) * n;
  const size_t liwork = 3 + 5 * static_cast<size_t>(n);
  std::vector<int> failed(batch, 0);
  // OpenBLAS would thread the many tiny BLAS calls inside ?syevd: measured 14x slower than one thread
  // on 8x8 matrices (2 cores), and far worse on a busy machine. Matrices run one per thread instead,
  // each LAPACK call single-threaded; the thread count is restored afterwards. (In OpenBLAS's OpenMP
  // build, openblas_set_num_threads also sets OpenMP's, which is what --threads sets.)
  const int blas_threads = omp_get_max_threads();
  openblas_set_num_threads(1);
  struct Restore {
    int n;
    ~Restore() { openblas_set_num_threads(n); }
  } restore{blas_threads};
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(batch, blas_threads))) if (batch * n * n > 4096)
  {
    std::vector<T> m(static_cast<size_t>(n) * n), work(lwork);
    std::vector<int> iwork(liwork);
#pragma omp for
    for (int64_t b = 0; b < batch; ++b) {
      const T* ab = src + b * n * n;
      bool finite = true;
      for (int64_t i = 0; i < static_cast<int64_t>(n) * n; ++i) {
        m[i] = ab[i];
        finite = finite && std::isfinite(ab[i]);
      }
      if (!finite) {  // LAPACK returns finite garbage for some NaN inputs: refuse instead
        failed[b] = kNonFinite;
        continue;
      }
      T* wb = w_out + b * n;
      failed[b] = syevd(n, m.data(), wb, work, iwork);
      if (failed[b] != 0) continue;
      T* vb = v_out + b * n * n;
      for (int j = 0; j < n; ++j) {
        const T* col = m.data() + static_cast<size_t>(j) * n;  // eigenvector j
        int big = 0;
        for (int i = 1; i < n; ++i)
          if (std::abs(col[i]) > std::abs(col[big])) big = i;
        const T s = col[big] < 0 ? T(-1) : T(1);
        for (int i = 0; i < n; ++i) vb[static_cast<size_t>(i) * n + j] = s * col[i];
      }
    }
  }
  for (int64_t b = 0; b < batch; ++b) {
    RETORT_CHECK(failed[b] != kNonFinite, "symeig: matrix ", b, " of ", a.meta_str(),
                 " has non-finite entries (NaN or inf): no eigendecomposition");
    RETORT_CHECK(failed[b] == 0, "symeig: LAPACK ", a.dtype() == DType::F32 ? "ssyevd" : "dsyevd",
                 " failed on matrix ", b, " of ", a.meta_str(), " (info ", failed[b],
                 failed[b] > 0 ? ": the algorithm did not converge)" : ": an invalid argument)");
  }
}

}  // namespace

void CpuBackend::symeig(const Tensor& a, Tensor& values, Tensor& vectors) {
  if (a.numel() == 0) return;
  if (a.dtype() == DType::F32) symeig_typed<float>(a, values, vectors);
  else if (a.dtype() == DType::F64) symeig_typed<double>(a, values, vectors);
  else RETORT_FAIL("symeig: unsupported dtype ", dtype_name(a.dtype()));
}

}  // namespace retort::cpu
