// CPU elementwise kernels: unary ops and broadcasting binary ops.
//
// Binary broadcasting: both operands get strides over the output shape (0 on broadcast dimensions),
// adjacent dimensions that are contiguous for both operands are merged, and the innermost dimension
// runs as a tight strided loop; rows are split across OpenMP threads. The op is chosen by a switch
// outside the loops, so the inner loop is a template instantiation with no calls.
#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_plan.h"

namespace retort::cpu {

namespace {

// Contiguous runs go through these (compiled per vector ISA, see RETORT_SIMD_CLONES); the parallel
// loops hand each thread chunks of kChunk elements.
constexpr int64_t kChunk = 16384;

template <class T, class F>
RETORT_SIMD_CLONES void unary_run(const T* x, T* y, int64_t n, F f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class T, class F>
RETORT_SIMD_CLONES void binary_run(const T* a, const T* b, T* y, int64_t n, F f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
}

template <class T, class F>
void map_unary(const T* x, T* y, int64_t n, F f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk;
    unary_run(x + lo, y + lo, std::min(kChunk, n - lo), f);
  }
}

template <class T>
void unary_typed(UnaryOp op, const T* x, T* y, int64_t n, T a, T b) {
  switch (op) {
    case UnaryOp::Neg: map_unary(x, y, n, [](T v) { return -v; }); break;
    case UnaryOp::Exp: map_unary(x, y, n, [](T v) { return std::exp(v); }); break;
    case UnaryOp::Log: map_unary(x, y, n, [](T v) { return std::log(v); }); break;
    case UnaryOp::Sqrt: map_unary(x, y, n, [](T v) { return std::sqrt(v); }); break;
    case UnaryOp::Abs: map_unary(x, y, n, [](T v) { return std::abs(v); }); break;
    case UnaryOp::Sign: map_unary(x, y, n, [](T v) { return sign_keep_nan(v); }); break;
    case UnaryOp::Relu: map_unary(x, y, n, [](T v) { return relu_keep_nan(v); }); break;
    case UnaryOp::Sigmoid: map_unary(x, y, n, [](T v) { return T(1) / (T(1) + std::exp(-v)); }); break;
    case UnaryOp::Tanh: map_unary(x, y, n, [](T v) { return std::tanh(v); }); break;
    case UnaryOp::Pow:
      if (a == T(2)) map_unary(x, y, n, [](T v) { return v * v; });
      else map_unary(x, y, n, [a](T v) { return std::pow(v, a); });
      break;
    case UnaryOp::Clamp: map_unary(x, y, n, [a, b](T v) { return v < a ? a : (v > b ? b : v); }); break;
    case UnaryOp::Affine: map_unary(x, y, n, [a, b](T v) { return a * v + b; }); break;
    case UnaryOp::LeakyRelu:  // the product outside the ?: (GCC won't speculate it, and the loop stays scalar)
      map_unary(x, y, n, [a](T v) {
        const T av = a * v;
        return v > 0 ? v : av;
      });
      break;
  }
}

template <class T, class F>
void map_binary(const T* a, const T* b, T* y, const BroadcastPlan& p, F f) {
  const int nd = static_cast<int>(p.size.size());
  const int64_t inner = p.size[nd - 1], ia = p.sa[nd - 1], ib = p.sb[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= p.size[d];
  if (rows == 1) {  // one run: contiguous fast paths
    if (ia == 1 && ib == 1) {
      const int64_t chunks = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for if (inner > kParallelGrain)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t lo = c * kChunk;
        binary_run(a + lo, b + lo, y + lo, std::min(kChunk, inner - lo), f);
      }
    } else {
#pragma omp parallel for if (inner > kParallelGrain)
      for (int64_t i = 0; i < inner; ++i) y[i] = f(a[i * ia], b[i * ib]);
    }
    return;
  }
#pragma omp parallel for if (rows * inner > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t oa = 0, ob = 0, rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % p.size[d];
      rem /= p.size[d];
      oa += i * p.sa[d];
      ob += i * p.sb[d];
    }
    const T* pa = a + oa;
    const T* pb = b + ob;
    T* py = y + r * inner;
    if (ia == 1 && ib == 1) binary_run(pa, pb, py, inner, f);
    else for (int64_t i = 0; i < inner; ++i) py[i] = f(pa[i * ia], pb[i * ib]);
  }
}

template <class T>
void binary_typed(BinaryOp op, const T* a, const T* b, T* y, const BroadcastPlan& p) {
  switch (op) {
    case BinaryOp::Add: map_binary(a, b, y, p, [](T u, T v) { return u + v; }); break;
    case BinaryOp::Sub: map_binary(a, b, y, p, [](T u, T v) { return u - v; }); break;
    case BinaryOp::Mul: map_binary(a, b, y, p, [](T u, T v) { return u * v; }); break;
    case BinaryOp::Div: map_binary(a, b, y, p, [](T u, T v) { return u / v; }); break;
    case BinaryOp::Max: map_binary(a, b, y, p, [](T u, T v) { return max_keep_nan(u, v); }); break;
    case BinaryOp::Min: map_binary(a, b, y, p, [](T u, T v) { return min_keep_nan(u, v); }); break;
    case BinaryOp::Gt: map_binary(a, b, y, p, [](T u, T v) { return T(u > v); }); break;
    case BinaryOp::Ge: map_binary(a, b, y, p, [](T u, T v) { return T(u >= v); }); break;
    case BinaryOp::Lt: map_binary(a, b, y, p, [](T u, T v) { return T(u < v); }); break;
    case BinaryOp::Le: map_binary(a, b, y, p, [](T u, T v) { return T(u <= v); }); break;
    case BinaryOp::Eq: map_binary(a, b, y, p, [](T u, T v) { return T(u == v); }); break;
    case BinaryOp::XLogY: map_binary(a, b, y, p, [](T u, T v) { return u == T(0) ? T(0) : u * std::log(v); }); break;
    case BinaryOp::AddRelu:
      map_binary(a, b, y, p, [](T u, T v) {
        const T s = u + v;
        return relu_keep_nan(s);
      });
      break;
    case BinaryOp::MaskPositive: map_binary(a, b, y, p, [](T u, T v) { return v > T(0) ? u : T(0); }); break;
  }
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha, double beta) {
  if (const int b = common_block({&x})) {  // elementwise: any layout, kept (blocked.cpp)
    unary_typed<float>(op, static_cast<const float*>(x.raw_data_any_layout()),
                       static_cast<float*>(out.raw_data_any_layout()), x.numel(), static_cast<float>(alpha),
                       static_cast<float>(beta));
    out.set_layout_block(b);
    return;
  }
  dispatch_float(x.dtype(), unary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    unary_typed<T>(op, x.data<T>(), out.data<T>(), x.numel(), static_cast<T>(alpha), static_cast<T>(beta));
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (out.numel() == 0) return;
  const BroadcastPlan plan = plan_broadcast(out.shape(), a.shape(), b.shape());
  // Same shapes, one of them in a blocked layout: both in that layout, and so is the result (blocked.cpp).
  if (a.shape() == out.shape() && b.shape() == out.shape() && out.dtype() == DType::F32) {
    if (const int blk = common_block({&a, &b})) {
      const Tensor a2 = in_block_layout(a, blk), b2 = in_block_layout(b, blk);
      binary_typed<float>(op, static_cast<const float*>(a2.raw_data_any_layout()),
                          static_cast<const float*>(b2.raw_data_any_layout()),
                          static_cast<float*>(out.raw_data_any_layout()), plan);
      out.set_layout_block(blk);
      return;
    }
  }
  dispatch_float(out.dtype(), binary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    binary_typed<T>(op, a.data<T>(), b.data<T>(), out.data<T>(), plan);
  });
}

}  // namespace retort::cpu
