// CPU softmax family and cross entropy.
//
// Softmax along any dimension views the tensor as [outer, D, inner]: each of the outer * inner rows
// holds D elements `inner` apart, and rows are independent, so OpenMP splits them. Every row
// subtracts its maximum before exponentiating (exp never overflows) and accumulates in double.
// Backward uses the forward's output only, so neither x nor the normaliser has to be saved.
// Cross entropy's targets are validated by the function (engine/functions/loss.cpp), not here.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

struct RowLayout {
  int64_t outer = 1, dim = 1, inner = 1;
  int64_t rows() const { return outer * inner; }
  // First element of row r; the row's elements are `inner` apart.
  int64_t base(int64_t r) const { return (r / inner) * dim * inner + r % inner; }
};

RowLayout row_layout(const Shape& s, int d) {
  RowLayout l;
  for (int i = 0; i < d; ++i) l.outer *= s[i];
  l.dim = s[d];
  for (int i = d + 1; i < static_cast<int>(s.size()); ++i) l.inner *= s[i];
  return l;
}

// max and log(sum(exp(x - max))) of one strided row, in double.
template <class T>
void row_logsumexp(const T* x, int64_t n, int64_t stride, double& max_out, double& log_sum_out) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < n; ++k) m = std::max(m, static_cast<double>(x[k * stride]));
  double s = 0;
  for (int64_t k = 0; k < n; ++k) s += std::exp(static_cast<double>(x[k * stride]) - m);
  max_out = m;
  log_sum_out = std::log(s);
}

template <class T>
void softmax_fwd(const T* x, T* y, const RowLayout& l, bool log) {
#pragma omp parallel for if (l.rows() * l.dim > kParallelGrain)
  for (int64_t r = 0; r < l.rows(); ++r) {
    const int64_t b = l.base(r), st = l.inner;
    double m, ls;
    row_logsumexp(x + b, l.dim, st, m, ls);
    for (int64_t k = 0; k < l.dim; ++k) {
      const double z = static_cast<double>(x[b + k * st]) - m - ls;
      y[b + k * st] = static_cast<T>(log ? z : std::exp(z));
    }
  }
}

template <class T>
void softmax_bwd(const T* gy, const T* y, T* gx, const RowLayout& l, bool log) {
#pragma omp parallel for if (l.rows() * l.dim > kParallelGrain)
  for (int64_t r = 0; r < l.rows(); ++r) {
    const int64_t b = l.base(r), st = l.inner;
    double s = 0;  // softmax: sum(gy * y); log_softmax: sum(gy)
    for (int64_t k = 0; k < l.dim; ++k) {
      const int64_t i = b + k * st;
      s += log ? static_cast<double>(gy[i]) : static_cast<double>(gy[i]) * static_cast<double>(y[i]);
    }
    for (int64_t k = 0; k < l.dim; ++k) {
      const int64_t i = b + k * st;
      const double g = gy[i], v = y[i];
      gx[i] = static_cast<T>(log ? g - std::exp(v) * s : v * (g - s));
    }
  }
}

template <class T>
void cross_entropy_fwd(const T* logits, const int64_t* targets, double smoothing, int64_t n, int64_t c,
                       T* loss, T* log_probs) {
  // Per-row losses summed serially afterwards, so the result does not depend on the thread count.
  std::vector<double> row_loss(static_cast<size_t>(n));
  const double on = 1.0 - smoothing, off = smoothing / static_cast<double>(c);
#pragma omp parallel for if (n * c > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T* x = logits + i * c;
    T* lp = log_probs + i * c;
    double m, ls;
    row_logsumexp(x, c, 1, m, ls);
    double sum_lp = 0;
    for (int64_t k = 0; k < c; ++k) {
      const double v = static_cast<double>(x[k]) - m - ls;
      lp[k] = static_cast<T>(v);
      sum_lp += v;
    }
    const double target_lp = static_cast<double>(x[targets[i]]) - m - ls;
    // Skip the smoothing term when s == 0 so a -inf log-probability elsewhere does not give 0 * inf.
    row_loss[i] = -(on * target_lp + (smoothing != 0 ? off * sum_lp : 0.0));
  }
  double total = 0;
  for (double v : row_loss) total += v;
  loss[0] = static_cast<T>(total / static_cast<double>(n));
}

template <class T>
void cross_entropy_bwd(double grad, const T* log_probs, const int64_t* targets, double smoothing, int64_t n,
                       int64_t c, T* gx) {
  const double scale = grad / static_cast<double>(n);
  const double on = 1.0 - smoothing, off = smoothing / static_cast<double>(c);
#pragma omp parallel for if (n * c > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T* lp = log_probs + i * c;
    T* g = gx + i * c;
    for (int64_t k = 0; k < c; ++k) {
      const double q = off + (k == targets[i] ? on : 0.0);
      g[k] = static_cast<T>(scale * (std::exp(static_cast<double>(lp[k])) - q));
    }
  }
}

}  // namespace

void CpuBackend::softmax_forward(const Tensor& x, int dim, bool log, Tensor& y) {
  dispatch_float(x.dtype(), "softmax_forward", [&](auto tag) {
    using T = decltype(tag);
    softmax_fwd<T>(x.data<T>(), y.data<T>(), row_layout(x.shape(), dim), log);
  });
}

void CpuBackend::softmax_backward(const Tensor& gy, const Tensor& y, int dim, bool log, Tensor& gx) {
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    softmax_bwd<T>(gy.data<T>(), y.data<T>(), gx.data<T>(), row_layout(y.shape(), dim), log);
  });
}

void CpuBackend::cross_entropy_forward(const Tensor& logits, const Tensor& targets, double label_smoothing,
                                       Tensor& loss, Tensor& log_probs) {
  dispatch_float(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    cross_entropy_fwd<T>(logits.data<T>(), targets.data<int64_t>(), label_smoothing, logits.shape()[0],
                         logits.shape()[1], loss.data<T>(), log_probs.data<T>());
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets,
                                        double label_smoothing, Tensor& gx) {
  dispatch_float(log_probs.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    cross_entropy_bwd<T>(static_cast<double>(grad.data<T>()[0]), log_probs.data<T>(), targets.data<int64_t>(),
                         label_smoothing, log_probs.shape()[0], log_probs.shape()[1], gx.data<T>());
  });
}

}  // namespace retort::cpu
