// Symmetric eigendecomposition on the GPU (engine/backend.h, symeig): cuSOLVER's batched syev
// (cusolverDnXsyevBatched, the 64-bit API: one call for the whole batch, any n — in chunks where the
// batch holds more than the INT32_MAX elements per call its implementation handles), then our kernel that
// transposes its column-major eigenvectors into row-major columns and fixes each one's sign as the CPU
// does (largest-magnitude component positive), so both backends return the same vectors.
//
// cuSOLVER writes a convergence flag per matrix to device memory, and our kernel a flag per matrix
// holding a NaN or inf (for which a solver may return finite garbage, as LAPACK does); both are read
// back at once (one host synchronisation per call) so that either becomes an error here, naming the
// matrix, rather than a silently wrong result.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

// One thread per eigenvector: src [B, n, n] column-major per matrix (vector j at src + j*n),
// dst [B, n, n] row-major with vector j in column j.
template <class T>
__global__ void eigvec_sign_transpose(const T* __restrict__ src, T* __restrict__ dst, int64_t batch, int64_t n) {
  RETORT_GRID_STRIDE(t, batch * n) {
    const int64_t b = t / n, j = t % n;
    const T* col = src + b * n * n + j * n;
    int64_t big = 0;
    T big_abs = fabs(col[0]);
    for (int64_t i = 1; i < n; ++i) {
      const T a = fabs(col[i]);
      if (a > big_abs) { big_abs = a; big = i; }
    }
    const T s = col[big] < T(0) ? T(-1) : T(1);
    T* out = dst + b * n * n + j;
    for (int64_t i = 0; i < n; ++i) out[i * n] = s * col[i];
  }
}

// flags[b] = 1 where matrix b has a NaN or inf, else 0; one thread per matrix, so that no two threads
// store to the same flag (which the eigendecomposition's O(n^3) dwarfs anyway).
template <class T>
__global__ void nonfinite_flags(const T* __restrict__ a, int* __restrict__ flags, int64_t batch, int64_t n) {
  RETORT_GRID_STRIDE(b, batch) {
    const T* m = a + b * n * n;
    int bad = 0;
    for (int64_t i = 0; i < n * n; ++i) bad |= !(fabs(m[i]) <= std::numeric_limits<T>::max());
    flags[b] = bad;
  }
}

constexpr size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

// cuSOLVER documents n * lda * batchSize <= INT32_MAX for syevBatched ("a limitation of the current
// implementation"); tests lower it to exercise the chunked path.
int64_t g_symeig_max_elements = std::numeric_limits<int32_t>::max();

}  // namespace

int64_t symeig_max_elements_per_call() { return g_symeig_max_elements; }
void set_symeig_max_elements_per_call(int64_t elements) {
  g_symeig_max_elements = elements > 0 ? std::min<int64_t>(elements, std::numeric_limits<int32_t>::max())
                                       : std::numeric_limits<int32_t>::max();
}

void CudaBackend::symeig(const Tensor& a, Tensor& values, Tensor& vectors) {
  if (a.numel() == 0) return;
  const int64_t batch = a.shape()[0], n = a.shape()[1];
  Context& c = ctx();
  dispatch_float(a.dtype(), "symeig", [&](auto tag) {
    using T = decltype(tag);
    const cudaDataType dt = sizeof(T) == 4 ? CUDA_R_32F : CUDA_R_64F;
    const auto what = [&] { return detail::cat("the symmetric eigendecomposition of ", a.meta_str()); };
    cusolverDnHandle_t h = c.cusolver();
    cusolverDnParams_t params = c.cusolver_params();
    const size_t matrix_bytes = static_cast<size_t>(batch * n * n) * sizeof(T);
    RETORT_CHECK(n * n <= g_symeig_max_elements, "symeig: ", a.meta_str(), ": matrices of ", n, " x ", n,
                 " exceed cuSOLVER's batched solver (at most ", g_symeig_max_elements, " elements per call)");
    const int64_t per_call = std::min(batch, g_symeig_max_elements / (n * n));  // matrices per cuSOLVER call
    const int64_t last = batch % per_call;                                      // a shorter last call, if any
    size_t dev_bytes = 0, host_bytes = 0;
    // Row-major lower triangle = column-major upper. The workspace suits the largest call.
    for (const int64_t count : {per_call, last}) {
      if (count == 0) continue;
      size_t d = 0, hb = 0;
      RETORT_CUSOLVER_CHECK(cusolverDnXsyevBatched_bufferSize(h, params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER,
                                                              n, dt, ptr<T>(a), n, dt, ptr<T>(values), dt, &d, &hb,
                                                              count),
                            "sizing the workspace of ", what());
      dev_bytes = std::max(dev_bytes, d);
      host_bytes = std::max(host_bytes, hb);
    }
    // Workspace: [cuSOLVER's | the matrices, overwritten by eigenvectors | one info per matrix | one
    // non-finite flag per matrix] — info and flags come back to the host in one copy.
    const size_t status_bytes = 2 * static_cast<size_t>(batch) * sizeof(int);
    char* ws = static_cast<char*>(c.workspace(align_up(dev_bytes) + align_up(matrix_bytes) + status_bytes));
    T* work_a = reinterpret_cast<T*>(ws + align_up(dev_bytes));
    int* info = reinterpret_cast<int*>(ws + align_up(dev_bytes) + align_up(matrix_bytes));
    int* flags = info + batch;
    RETORT_CUDA_CHECK(cudaMemsetAsync(info, 0, status_bytes, c.stream()), "zeroing the status of ", what());
    nonfinite_flags<T><<<blocks_for(batch), kThreads, 0, c.stream()>>>(ptr<T>(a), flags, batch, n);
    RETORT_CUDA_LAUNCH_CHECK("nonfinite_flags for ", what());
    RETORT_CUDA_CHECK(cudaMemcpyAsync(work_a, ptr<T>(a), matrix_bytes, cudaMemcpyDeviceToDevice, c.stream()),
                      "copying the input of ", what());
    std::vector<char> host_ws(host_bytes);
    for (int64_t b0 = 0; b0 < batch; b0 += per_call) {
      const int64_t count = std::min(per_call, batch - b0);
      RETORT_CUSOLVER_CHECK(cusolverDnXsyevBatched(h, params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, n, dt,
                                                   work_a + b0 * n * n, n, dt, ptr<T>(values) + b0 * n, dt, ws,
                                                   dev_bytes, host_bytes ? host_ws.data() : nullptr, host_bytes,
                                                   info + b0, count),
                            what(), " (matrices ", b0, " to ", b0 + count - 1, ")");
    }
    eigvec_sign_transpose<T><<<blocks_for(batch * n), kThreads, 0, c.stream()>>>(work_a, ptr<T>(vectors), batch, n);
    RETORT_CUDA_LAUNCH_CHECK("eigvec_sign_transpose for ", what());
    std::vector<int> status(2 * static_cast<size_t>(batch));  // info, then flags
    copy_to_host(info, status.data(), status_bytes);
    for (int64_t b = 0; b < batch; ++b) {
      const int inf = status[static_cast<size_t>(b)], nonfinite = status[static_cast<size_t>(batch + b)];
      RETORT_CHECK(!nonfinite, "symeig: matrix ", b, " of ", a.meta_str(),
                   " has non-finite entries (NaN or inf): no eigendecomposition");
      RETORT_CHECK(inf == 0, "symeig: cusolverDnXsyevBatched failed on matrix ", b, " of ", a.meta_str(), " (info ", inf,
                   inf > 0 ? ": the algorithm did not converge)" : ": an invalid argument)");
    }
  });
}

}  // namespace retort::cuda
