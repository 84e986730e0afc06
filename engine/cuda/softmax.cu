// CUDA softmax family and cross entropy (engine/cpu/softmax.cpp is the reference: same formulas, all
// arithmetic in double, the row maximum subtracted before exponentiating).
//
// Softmax along any dimension views the tensor as [outer, D, inner]: each of the outer * inner rows
// holds D elements `inner` apart. One row is handled by a group of lanes, chosen on the host:
//  - Thread: one thread per row, looping over D serially exactly as the CPU does. Used when rows are
//    strided (inner > 1: neighbouring rows are neighbours in memory, so a warp's reads coalesce
//    across rows) and for very short rows, where wider groups would sit idle.
//  - Warp: 32 lanes per row (D up to 1024): lanes stride over the row, then combine by shuffles.
//  - Block: the whole block per row (longer rows, e.g. a large vocabulary).
// Group reductions use butterfly shuffles (and, for a block, one fixed pass over the per-warp
// values), so every lane ends with the same bits and the order depends only on the shapes: results
// are deterministic. Cross entropy writes each row's loss to scratch memory and a second one-block
// kernel sums them in a fixed order, so the 0-D loss needs no atomics either.
#include <cmath>
#include <limits>
#include <type_traits>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

struct RowLayout {
  int64_t outer = 1, dim = 1, inner = 1;
  __host__ __device__ int64_t rows() const { return outer * inner; }
  // First element of row r; the row's elements are `inner` apart.
  __device__ int64_t base(int64_t r) const { return (r / inner) * dim * inner + r % inner; }
};

RowLayout row_layout(const Shape& s, int d) {
  RowLayout l;
  for (int i = 0; i < d; ++i) l.outer *= s[i];
  l.dim = s[d];
  for (int i = d + 1; i < static_cast<int>(s.size()); ++i) l.inner *= s[i];
  return l;
}

// A product rounded on its own (never fused into an FMA with a following add), as the CPU computes it.
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {  // fmax is commutative (unlike a < b ? b : a with NaNs), so all lanes agree
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

enum class Lanes { Thread, Warp, Block };

// The lanes that share one row, and the rows a group visits (a grid-stride loop over rows that is
// uniform across the group, so shuffles and barriers are reached by every lane).
template <Lanes L>
struct RowGroup {
  __device__ int lane() const {
    if constexpr (L == Lanes::Thread) return 0;
    else if constexpr (L == Lanes::Warp) return threadIdx.x & 31;
    else return threadIdx.x;
  }
  __device__ int size() const {
    if constexpr (L == Lanes::Thread) return 1;
    else if constexpr (L == Lanes::Warp) return 32;
    else return blockDim.x;
  }
  __device__ int64_t first_row() const {
    if constexpr (L == Lanes::Thread) return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    else if constexpr (L == Lanes::Warp) return static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    else return blockIdx.x;
  }
  __device__ int64_t row_step() const {
    if constexpr (L == Lanes::Thread) return static_cast<int64_t>(gridDim.x) * blockDim.x;
    else if constexpr (L == Lanes::Warp) return static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
    else return gridDim.x;
  }
  // Combines v over the group's lanes; every lane gets the (bitwise identical) result.
  // `shared` holds 32 doubles (used by Block only).
  template <class Op>
  __device__ double all_reduce(double v, Op op, double* shared) const {
    if constexpr (L != Lanes::Thread) {
      for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    }
    if constexpr (L == Lanes::Block) {
      __syncthreads();  // shared may still be read after the previous call
      if ((threadIdx.x & 31) == 0) shared[threadIdx.x / 32] = v;
      __syncthreads();
      v = shared[0];
      for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) v = op(v, shared[w]);
    }
    return v;
  }
};

Lanes lanes_for(const RowLayout& l) {
  if (l.inner > 1 || l.dim <= 16) return Lanes::Thread;
  return l.dim <= 1024 ? Lanes::Warp : Lanes::Block;
}

unsigned grid_for(Lanes lanes, int64_t rows) {
  switch (lanes) {
    case Lanes::Thread: return blocks_for(rows);
    case Lanes::Warp: return blocks_for(rows, kThreads / 32);
    case Lanes::Block: break;
  }
  return blocks_for(rows, 1);
}

// Calls f(std::integral_constant<Lanes, lanes>{}).
template <class F>
void visit_lanes(Lanes lanes, F&& f) {
  switch (lanes) {
    case Lanes::Thread: f(std::integral_constant<Lanes, Lanes::Thread>{}); return;
    case Lanes::Warp: f(std::integral_constant<Lanes, Lanes::Warp>{}); return;
    case Lanes::Block: f(std::integral_constant<Lanes, Lanes::Block>{}); return;
  }
}

// Max and log(sum(exp(x - max))) of the row of n elements at x, `stride` apart, in double.
template <Lanes L, class T>
__device__ void row_logsumexp(const RowGroup<L>& g, const T* x, int64_t n, int64_t stride, double* shared,
                              double& max_out, double& log_sum_out) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t k = g.lane(); k < n; k += g.size()) m = fmax(m, static_cast<double>(x[k * stride]));
  m = g.all_reduce(m, MaxOp{}, shared);
  double s = 0;
  for (int64_t k = g.lane(); k < n; k += g.size()) s += exp(static_cast<double>(x[k * stride]) - m);
  s = g.all_reduce(s, SumOp{}, shared);
  max_out = m;
  log_sum_out = log(s);
}

template <class T, Lanes L>
__global__ void __launch_bounds__(kThreads) softmax_fwd_kernel(const T* x, T* y, RowLayout l, bool log_softmax) {
  __shared__ double shared[32];
  const RowGroup<L> g;
  const int64_t st = l.inner;
  for (int64_t r = g.first_row(); r < l.rows(); r += g.row_step()) {
    const int64_t b = l.base(r);
    double m, ls;
    row_logsumexp(g, x + b, l.dim, st, shared, m, ls);
    for (int64_t k = g.lane(); k < l.dim; k += g.size()) {
      const double z = static_cast<double>(x[b + k * st]) - m - ls;
      y[b + k * st] = static_cast<T>(log_softmax ? z : exp(z));
    }
  }
}

// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
template <class T, Lanes L>
__global__ void __launch_bounds__(kThreads)
    softmax_bwd_kernel(const T* gy, const T* y, T* gx, RowLayout l, bool log_softmax) {
  __shared__ double shared[32];
  const RowGroup<L> g;
  const int64_t st = l.inner;
  for (int64_t r = g.first_row(); r < l.rows(); r += g.row_step()) {
    const int64_t b = l.base(r);
    double s = 0;
    for (int64_t k = g.lane(); k < l.dim; k += g.size()) {
      const int64_t i = b + k * st;
      s += log_softmax ? static_cast<double>(gy[i]) : mul_rn(gy[i], y[i]);
    }
    s = g.all_reduce(s, SumOp{}, shared);
    for (int64_t k = g.lane(); k < l.dim; k += g.size()) {
      const int64_t i = b + k * st;
      const double gi = gy[i], v = y[i];
      gx[i] = static_cast<T>(log_softmax ? gi - mul_rn(exp(v), s) : v * (gi - s));
    }
  }
}

// Per row i of logits [n, c]: log_probs, and the row's loss -(on * lp[target] + off * sum(lp)) into
// row_loss[i]. A target outside [0, c) (the function layer rejects those) contributes no term rather
// than reading out of bounds.
template <class T, Lanes L>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_fwd_kernel(const T* logits, const int64_t* targets, int64_t n, int64_t c, double on, double off,
                             bool smoothing, T* log_probs, double* row_loss) {
  __shared__ double shared[32];
  const RowGroup<L> g;
  for (int64_t r = g.first_row(); r < n; r += g.row_step()) {
    const T* x = logits + r * c;
    T* lp = log_probs + r * c;
    double m, ls;
    row_logsumexp(g, x, c, 1, shared, m, ls);
    double sum_lp = 0;
    for (int64_t k = g.lane(); k < c; k += g.size()) {
      const double v = static_cast<double>(x[k]) - m - ls;
      lp[k] = static_cast<T>(v);
      sum_lp += v;
    }
    sum_lp = g.all_reduce(sum_lp, SumOp{}, shared);
    if (g.lane() == 0) {
      const int64_t t = targets[r];
      const double target_lp = (t >= 0 && t < c) ? static_cast<double>(x[t]) - m - ls : 0.0;
      // The smoothing term is skipped when s == 0, so a -inf log-probability elsewhere gives no 0 * inf.
      row_loss[r] = -(mul_rn(on, target_lp) + (smoothing ? mul_rn(off, sum_lp) : 0.0));
    }
  }
}

// loss = sum(row_loss) / n, by one block in a fixed order.
template <class T>
__global__ void __launch_bounds__(kThreads) mean_loss_kernel(const double* row_loss, int64_t n, T* loss) {
  __shared__ double shared[32];
  const RowGroup<Lanes::Block> g;
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += row_loss[i];
  s = g.all_reduce(s, SumOp{}, shared);
  if (threadIdx.x == 0) loss[0] = static_cast<T>(s / static_cast<double>(n));
}

// gx = grad / n * (exp(log_probs) - q), q = off + (k == target ? on : 0), grad the 0-D upstream gradient.
template <class T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_bwd_kernel(const T* grad, const T* log_probs, const int64_t* targets, int64_t n, int64_t c,
                             double on, double off, T* gx) {
  const double scale = static_cast<double>(grad[0]) / static_cast<double>(n);
  RETORT_GRID_STRIDE(idx, n * c) {
    const int64_t i = idx / c, k = idx - i * c;
    const double q = off + (k == targets[i] ? on : 0.0);
    gx[idx] = static_cast<T>(scale * (exp(static_cast<double>(log_probs[idx])) - q));
  }
}

}  // namespace

void CudaBackend::softmax_forward(const Tensor& x, int dim, bool log, Tensor& y) {
  const RowLayout l = row_layout(x.shape(), dim);
  if (x.numel() == 0) return;
  const Lanes lanes = lanes_for(l);
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "softmax_forward", [&](auto tag) {
    using T = decltype(tag);
    visit_lanes(lanes, [&](auto lanes_tag) {
      softmax_fwd_kernel<T, decltype(lanes_tag)::value>
          <<<grid_for(lanes, l.rows()), kThreads, 0, st>>>(ptr<T>(x), ptr<T>(y), l, log);
    });
  });
  RETORT_CUDA_LAUNCH_CHECK(log ? "log_softmax" : "softmax", " forward of ", x.meta_str(), " along dim ", dim);
}

void CudaBackend::softmax_backward(const Tensor& gy, const Tensor& y, int dim, bool log, Tensor& gx) {
  const RowLayout l = row_layout(y.shape(), dim);
  if (y.numel() == 0) return;
  const Lanes lanes = lanes_for(l);
  cudaStream_t st = ctx().stream();
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    visit_lanes(lanes, [&](auto lanes_tag) {
      softmax_bwd_kernel<T, decltype(lanes_tag)::value>
          <<<grid_for(lanes, l.rows()), kThreads, 0, st>>>(ptr<T>(gy), ptr<T>(y), ptr<T>(gx), l, log);
    });
  });
  RETORT_CUDA_LAUNCH_CHECK(log ? "log_softmax" : "softmax", " backward of ", y.meta_str(), " along dim ", dim);
}

void CudaBackend::cross_entropy_forward(const Tensor& logits, const Tensor& targets, double label_smoothing,
                                        Tensor& loss, Tensor& log_probs) {
  const int64_t n = logits.shape()[0], c = logits.shape()[1];
  const double on = 1.0 - label_smoothing, off = label_smoothing / static_cast<double>(c);
  // Rows as in softmax over the last dim of [n, c]; short rows take one thread each.
  RowLayout l;
  l.outer = n;
  l.dim = c;
  const Lanes lanes = lanes_for(l);
  Context& cx = ctx();
  cudaStream_t st = cx.stream();
  double* row_loss = static_cast<double*>(cx.workspace(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(double)));
  dispatch_float(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    if (n > 0) {
      visit_lanes(lanes, [&](auto lanes_tag) {
        cross_entropy_fwd_kernel<T, decltype(lanes_tag)::value><<<grid_for(lanes, n), kThreads, 0, st>>>(
            ptr<T>(logits), ptr<int64_t>(targets), n, c, on, off, label_smoothing != 0, ptr<T>(log_probs),
            row_loss);
      });
      RETORT_CUDA_LAUNCH_CHECK("cross_entropy forward rows of ", logits.meta_str());
    }
    // n == 0 gives 0 / 0 = NaN, as on the CPU.
    mean_loss_kernel<T><<<1, kThreads, 0, st>>>(row_loss, n, ptr<T>(loss));
    RETORT_CUDA_LAUNCH_CHECK("cross_entropy forward mean of ", n, " row losses");
  });
}

void CudaBackend::cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets,
                                         double label_smoothing, Tensor& gx) {
  const int64_t n = log_probs.shape()[0], c = log_probs.shape()[1];
  if (n * c == 0) return;
  const double on = 1.0 - label_smoothing, off = label_smoothing / static_cast<double>(c);
  cudaStream_t st = ctx().stream();
  dispatch_float(log_probs.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    cross_entropy_bwd_kernel<T><<<blocks_for(n * c), kThreads, 0, st>>>(
        ptr<T>(grad), ptr<T>(log_probs), ptr<int64_t>(targets), n, c, on, off, ptr<T>(gx));
  });
  RETORT_CUDA_LAUNCH_CHECK("cross_entropy backward of ", log_probs.meta_str());
}

}  // namespace retort::cuda
