// CUDA batch-norm kernels over x viewed as [N, C, S] (S = product of the dims after C, 1 for [N, C]),
// with the CPU reference's arithmetic (engine/cpu/norm.cpp). cuDNN's batch norm is not used: it has no
// form of the fused-ReLU backward contract (gy masked by relu_out > 0) and little F64 support.
//
// One block per channel: a channel's statistics are block reductions, and the same block then writes
// the channel's outputs with the statistics in registers, so each kernel is a single launch with no
// inter-block communication and results do not depend on the grid. Sums accumulate in double, as the
// CPU's do (its per-row partial sums in T are not reproduced: the double sums are at least as
// accurate); the variance is the two-pass sum((x - mean)^2), biased, and invstd = 1/sqrt(var + eps).
// Per element the normalisation is one multiply-add in the element type, y = x * scale + shift, with
// scale and shift formed in double exactly as on the CPU. Undefined weight/bias mean 1/0.
#include "engine/cuda/kernels.cuh"
#include "engine/kernel_plan.h"

namespace retort::cuda {

namespace {

// Wide blocks: a channel often holds tens of thousands of values, and there may be few channels.
constexpr int kBnThreads = 512;

using Layout = ChannelLayout;
Layout layout_of(const Tensor& x) { return channel_layout(x.shape()); }

template <class T> const T* ptr_or_null(const Tensor& t) { return t.defined() ? ptr<T>(t) : nullptr; }
template <class T> T* ptr_or_null(Tensor& t) { return t.defined() ? ptr<T>(t) : nullptr; }

// Calls f(i) for the flat index i of every element of channel c, the block's threads sharing them.
// Rows of S >= blockDim contiguous values are swept row by row (no division per element, coalesced);
// short rows (S = 1 for [N, C], small planes) are flattened over the channel's N*S values so that
// every thread has work.
template <class F>
__device__ inline void for_channel(const Layout& l, int64_t c, F&& f) {
  if (l.s >= blockDim.x) {
    for (int64_t n = 0; n < l.n; ++n) {
      const int64_t base = (n * l.c + c) * l.s;
      for (int64_t s = threadIdx.x; s < l.s; s += blockDim.x) f(base + s);
    }
  } else {
    const int64_t m = l.n * l.s;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      const int64_t n = j / l.s;
      f((n * l.c + c) * l.s + (j - n * l.s));
    }
  }
}

// Forward, training (batch statistics, written to mean/invstd) or evaluation (running statistics).
// Block c: [sum -> mean] -> [sum of squared deviations -> invstd] -> y = max?(0, x * scale + shift).
template <class T>
__global__ void bn_forward_kernel(const T* x, const T* weight, const T* bias,
                                  const T* running_mean, const T* running_var,
                                  T* y, T* mean_out, T* invstd_out, Layout l,
                                  double eps, bool relu, bool training) {
  __shared__ double red[32];
  __shared__ double stats[2];  // mean, invstd: thread 0's results for the whole block
  const int64_t c = blockIdx.x;
  double m, is;
  if (training) {
    const double count = static_cast<double>(l.n * l.s);
    double s = 0;
    for_channel(l, c, [&](int64_t i) { s += static_cast<double>(x[i]); });
    s = block_sum(s, red);
    if (threadIdx.x == 0) stats[0] = s / count;
    __syncthreads();
    m = stats[0];
    const T mt = static_cast<T>(m);  // the CPU subtracts the mean rounded to T
    double sq = 0;
    for_channel(l, c, [&](int64_t i) {
      const T d = x[i] - mt;
      sq += static_cast<double>(d * d);
    });
    sq = block_sum(sq, red);
    if (threadIdx.x == 0) {
      const double inv = 1.0 / sqrt(sq / count + eps);
      stats[1] = inv;
      mean_out[c] = static_cast<T>(m);
      invstd_out[c] = static_cast<T>(inv);
    }
    __syncthreads();
    is = stats[1];
  } else {
    m = static_cast<double>(running_mean[c]);
    is = 1.0 / sqrt(static_cast<double>(running_var[c]) + eps);
  }
  const double w = weight ? static_cast<double>(weight[c]) : 1.0;
  const double b = bias ? static_cast<double>(bias[c]) : 0.0;
  const T scale = static_cast<T>(is * w), shift = static_cast<T>(b - m * is * w);
  if (relu) {
    for_channel(l, c, [&](int64_t i) {
      const T v = x[i] * scale + shift;
      y[i] = relu_keep_nan(v);
    });
  } else {
    for_channel(l, c, [&](int64_t i) { y[i] = x[i] * scale + shift; });
  }
}

// Backward, block c. With g = gy (masked to relu_out > 0 when relu_out is given), M = N*S:
//   gbias = sum(g), gweight = sum(g * (x - mean)) * invstd,
//   gx = a * g + b * x + k, the CPU's folding of
//        eval:     g * w * invstd
//        training: w * invstd * (g - sum(g)/M - (x - mean) * invstd^2 * sum(g * (x - mean))/M).
template <class T>
__global__ void bn_backward_kernel(const T* gy, const T* x, const T* weight,
                                   const T* mean, const T* invstd,
                                   const T* relu_out, T* gx, T* gweight,
                                   T* gbias, Layout l, bool training) {
  __shared__ double red[32];
  __shared__ double sums[2];  // sum(g), sum(g * (x - mean)): thread 0's results for the whole block
  const int64_t c = blockIdx.x;
  const double m = static_cast<double>(mean[c]), is = static_cast<double>(invstd[c]);
  const double w = weight ? static_cast<double>(weight[c]) : 1.0;
  const T mt = static_cast<T>(m);
  const auto grad = [&](int64_t i) { return relu_out ? (relu_out[i] > T(0) ? gy[i] : T(0)) : gy[i]; };
  double sg = 0, sgx = 0;
  for_channel(l, c, [&](int64_t i) {
    const T g = grad(i);
    sg += static_cast<double>(g);
    sgx += static_cast<double>(g * (x[i] - mt));
  });
  sg = block_sum(sg, red);
  sgx = block_sum(sgx, red);
  if (threadIdx.x == 0) {
    sums[0] = sg;
    sums[1] = sgx;
    if (gbias) gbias[c] = static_cast<T>(sg);
    if (gweight) gweight[c] = static_cast<T>(sgx * is);
  }
  if (!gx) return;
  __syncthreads();
  sg = sums[0];
  sgx = sums[1];
  const double count = static_cast<double>(l.n * l.s);
  const double scale = w * is;
  const double mean_g = training ? sg / count : 0.0;
  const double proj = training ? is * is * sgx / count : 0.0;
  const T a = static_cast<T>(scale), b = static_cast<T>(-scale * proj), k = static_cast<T>(scale * (m * proj - mean_g));
  for_channel(l, c, [&](int64_t i) { gx[i] = a * grad(i) + b * x[i] + k; });
}

std::string bn_what(const char* op, const Tensor& x) { return detail::cat(op, " on ", x.meta_str()); }

}  // namespace

void CudaBackend::batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                          bool relu, Tensor& y, Tensor& mean, Tensor& invstd) {
  const Layout l = layout_of(x);
  if (l.c == 0) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "batchnorm_forward_train", [&](auto tag) {
    using T = decltype(tag);
    bn_forward_kernel<T><<<static_cast<unsigned>(l.c), kBnThreads, 0, st>>>(
        ptr<T>(x), ptr_or_null<T>(weight), ptr_or_null<T>(bias), nullptr, nullptr, ptr<T>(y), ptr<T>(mean),
        ptr<T>(invstd), l, eps, relu, true);
    RETORT_CUDA_LAUNCH_CHECK(bn_what("batchnorm_forward_train", x));
  });
}

void CudaBackend::batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                         const Tensor& running_mean, const Tensor& running_var, double eps, bool relu,
                                         Tensor& y) {
  const Layout l = layout_of(x);
  if (l.c == 0 || x.numel() == 0) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "batchnorm_forward_eval", [&](auto tag) {
    using T = decltype(tag);
    bn_forward_kernel<T><<<static_cast<unsigned>(l.c), kBnThreads, 0, st>>>(
        ptr<T>(x), ptr_or_null<T>(weight), ptr_or_null<T>(bias), ptr<T>(running_mean), ptr<T>(running_var),
        ptr<T>(y), nullptr, nullptr, l, eps, relu, false);
    RETORT_CUDA_LAUNCH_CHECK(bn_what("batchnorm_forward_eval", x));
  });
}

void CudaBackend::batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                     const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx,
                                     Tensor& gweight, Tensor& gbias) {
  const Layout l = layout_of(x);
  if (l.c == 0 || (!gx.defined() && !gweight.defined() && !gbias.defined())) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), "batchnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    bn_backward_kernel<T><<<static_cast<unsigned>(l.c), kBnThreads, 0, st>>>(
        ptr<T>(gy), ptr<T>(x), ptr_or_null<T>(weight), ptr<T>(mean), ptr<T>(invstd), ptr_or_null<T>(relu_out),
        ptr_or_null<T>(gx), ptr_or_null<T>(gweight), ptr_or_null<T>(gbias), l, training);
    RETORT_CUDA_LAUNCH_CHECK(bn_what("batchnorm_backward", x));
  });
}

}  // namespace retort::cuda
