// CUDA elementwise kernels: unary ops and broadcasting binary ops (engine/cpu/elementwise.cpp is the
// reference; every formula below is the CPU's, operation by operation).
//
// Each op is a template parameter, so every (op, dtype) pair is its own kernel with a branch-free body;
// the host turns the runtime enum into that parameter with one switch. Kernels are grid-stride loops
// over the output. Binary ops pick an indexing scheme on the host: both operands dense (the common
// case, flat index everywhere), one operand a single element, or general broadcasting, where the
// output shape is first merged into as few dimensions as possible (as the CPU does) and each operand
// carries per-dimension strides (0 on broadcast dimensions), passed by value to the kernel.
#include <cmath>
#include <type_traits>

#include "engine/cuda/kernels.cuh"
#include "engine/kernel_plan.h"

namespace retort::cuda {

namespace {

// a * x + b without contracting into an FMA: the CPU build rounds the product and the sum separately,
// and so do these intrinsics (plain a * x + b may be fused by nvcc).
__device__ __forceinline__ float mul_add_rn(float a, float x, float b) { return __fadd_rn(__fmul_rn(a, x), b); }
__device__ __forceinline__ double mul_add_rn(double a, double x, double b) { return __dadd_rn(__dmul_rn(a, x), b); }

// ---- unary ---------------------------------------------------------------------------------------

template <UnaryOp Op, class T>
__device__ __forceinline__ T unary_apply(T v, T a, T b) {
  if constexpr (Op == UnaryOp::Neg) return -v;
  else if constexpr (Op == UnaryOp::Exp) return exp(v);
  else if constexpr (Op == UnaryOp::Log) return log(v);
  else if constexpr (Op == UnaryOp::Sqrt) return sqrt(v);
  else if constexpr (Op == UnaryOp::Abs) return fabs(v);
  else if constexpr (Op == UnaryOp::Sign) return sign_keep_nan(v);
  else if constexpr (Op == UnaryOp::Relu) return relu_keep_nan(v);
  else if constexpr (Op == UnaryOp::Sigmoid) return T(1) / (T(1) + exp(-v));
  else if constexpr (Op == UnaryOp::Tanh) return tanh(v);
  else if constexpr (Op == UnaryOp::Pow) return a == T(2) ? v * v : pow(v, a);  // the branch is uniform
  else if constexpr (Op == UnaryOp::Clamp) return v < a ? a : (v > b ? b : v);
  else if constexpr (Op == UnaryOp::LeakyRelu) return v > 0 ? v : a * v;
  else {
    // Every op is named: one added to UnaryOp (and to visit_unary below) fails here until it has a body.
    static_assert(Op == UnaryOp::Affine, "unary_apply (CUDA): this UnaryOp has no implementation");
    return mul_add_rn(a, v, b);
  }
}

template <UnaryOp Op, class T>
__global__ void __launch_bounds__(kThreads) unary_kernel(const T* x, T* y, int64_t n, T a, T b) {
  RETORT_GRID_STRIDE(i, n) y[i] = unary_apply<Op>(x[i], a, b);
}

// Calls f(std::integral_constant<UnaryOp, op>{}): turns the runtime op into a template argument.
template <class F>
void visit_unary(UnaryOp op, F&& f) {
  using U = UnaryOp;
  switch (op) {
    case U::Neg: f(std::integral_constant<U, U::Neg>{}); return;
    case U::Exp: f(std::integral_constant<U, U::Exp>{}); return;
    case U::Log: f(std::integral_constant<U, U::Log>{}); return;
    case U::Sqrt: f(std::integral_constant<U, U::Sqrt>{}); return;
    case U::Abs: f(std::integral_constant<U, U::Abs>{}); return;
    case U::Sign: f(std::integral_constant<U, U::Sign>{}); return;
    case U::Relu: f(std::integral_constant<U, U::Relu>{}); return;
    case U::Sigmoid: f(std::integral_constant<U, U::Sigmoid>{}); return;
    case U::Tanh: f(std::integral_constant<U, U::Tanh>{}); return;
    case U::Pow: f(std::integral_constant<U, U::Pow>{}); return;
    case U::Clamp: f(std::integral_constant<U, U::Clamp>{}); return;
    case U::Affine: f(std::integral_constant<U, U::Affine>{}); return;
    case U::LeakyRelu: f(std::integral_constant<U, U::LeakyRelu>{}); return;
  }
  RETORT_FAIL("unary (cuda): unknown op ", static_cast<int>(op));
}

// ---- binary --------------------------------------------------------------------------------------

template <BinaryOp Op, class T>
__device__ __forceinline__ T binary_apply(T u, T v) {
  if constexpr (Op == BinaryOp::Add) return u + v;
  else if constexpr (Op == BinaryOp::Sub) return u - v;
  else if constexpr (Op == BinaryOp::Mul) return u * v;
  else if constexpr (Op == BinaryOp::Div) return u / v;
  else if constexpr (Op == BinaryOp::Max) return max_keep_nan(u, v);
  else if constexpr (Op == BinaryOp::Min) return min_keep_nan(u, v);
  else if constexpr (Op == BinaryOp::Gt) return T(u > v);
  else if constexpr (Op == BinaryOp::Ge) return T(u >= v);
  else if constexpr (Op == BinaryOp::Lt) return T(u < v);
  else if constexpr (Op == BinaryOp::Le) return T(u <= v);
  else if constexpr (Op == BinaryOp::Eq) return T(u == v);
  else if constexpr (Op == BinaryOp::XLogY) return u == T(0) ? T(0) : u * log(v);
  else if constexpr (Op == BinaryOp::AddRelu) return relu_keep_nan(u + v);
  else {
    static_assert(Op == BinaryOp::MaskPositive, "binary_apply (CUDA): this BinaryOp has no implementation");
    return v > T(0) ? u : T(0);
  }
}

// Indexers: map the flat output index i to the element of a and of b that it reads.
struct DenseIndex {  // a and b have out's numel: the same flat index
  __device__ void operator()(int64_t i, int64_t& ia, int64_t& ib) const { ia = ib = i; }
};
struct ScalarAIndex {  // a is one element
  __device__ void operator()(int64_t i, int64_t& ia, int64_t& ib) const { ia = 0; ib = i; }
};
struct ScalarBIndex {  // b is one element
  __device__ void operator()(int64_t i, int64_t& ia, int64_t& ib) const { ia = i; ib = 0; }
};

constexpr int kMaxDims = 8;

// General broadcasting over the merged output shape; sa/sb are 0 on a dimension an operand broadcasts.
struct BroadcastIndex {
  int nd = 0;
  int64_t size[kMaxDims] = {}, sa[kMaxDims] = {}, sb[kMaxDims] = {};
  __device__ void operator()(int64_t i, int64_t& ia, int64_t& ib) const {
    ia = ib = 0;
    for (int d = nd - 1; d > 0; --d) {  // innermost first; the outermost index is what remains
      const int64_t c = i % size[d];
      i /= size[d];
      ia += c * sa[d];
      ib += c * sb[d];
    }
    ia += i * sa[0];
    ib += i * sb[0];
  }
};

// The CPU's plan (kernel_plan.h), in a fixed-size struct a kernel can take by value.
BroadcastIndex device_broadcast(const Shape& out, const Shape& a, const Shape& b, const char* op) {
  const BroadcastPlan plan = plan_broadcast(out, a, b);
  RETORT_CHECK(plan.size.size() <= static_cast<size_t>(kMaxDims), "binary ", op,
               " (cuda): broadcasting supports at most ", kMaxDims,
               " dimensions after merging contiguous ones; got ", plan.size.size(), " (a ", shape_str(a), ", b ",
               shape_str(b), ", out ", shape_str(out), ")");
  BroadcastIndex p;
  p.nd = static_cast<int>(plan.size.size());
  for (int d = 0; d < p.nd; ++d) {
    p.size[d] = plan.size[d];
    p.sa[d] = plan.sa[d];
    p.sb[d] = plan.sb[d];
  }
  return p;
}

template <BinaryOp Op, class T, class Index>
__global__ void __launch_bounds__(kThreads) binary_kernel(const T* a, const T* b, T* y, int64_t n, Index index) {
  RETORT_GRID_STRIDE(i, n) {
    int64_t ia, ib;
    index(i, ia, ib);
    y[i] = binary_apply<Op>(a[ia], b[ib]);
  }
}

template <class F>
void visit_binary(BinaryOp op, F&& f) {
  using B = BinaryOp;
  switch (op) {
    case B::Add: f(std::integral_constant<B, B::Add>{}); return;
    case B::Sub: f(std::integral_constant<B, B::Sub>{}); return;
    case B::Mul: f(std::integral_constant<B, B::Mul>{}); return;
    case B::Div: f(std::integral_constant<B, B::Div>{}); return;
    case B::Max: f(std::integral_constant<B, B::Max>{}); return;
    case B::Min: f(std::integral_constant<B, B::Min>{}); return;
    case B::Gt: f(std::integral_constant<B, B::Gt>{}); return;
    case B::Ge: f(std::integral_constant<B, B::Ge>{}); return;
    case B::Lt: f(std::integral_constant<B, B::Lt>{}); return;
    case B::Le: f(std::integral_constant<B, B::Le>{}); return;
    case B::Eq: f(std::integral_constant<B, B::Eq>{}); return;
    case B::XLogY: f(std::integral_constant<B, B::XLogY>{}); return;
    case B::AddRelu: f(std::integral_constant<B, B::AddRelu>{}); return;
    case B::MaskPositive: f(std::integral_constant<B, B::MaskPositive>{}); return;
  }
  RETORT_FAIL("binary (cuda): unknown op ", static_cast<int>(op));
}

}  // namespace

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha, double beta) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t st = ctx().stream();
  dispatch_float(x.dtype(), unary_op_name(op), [&](auto tag) {
    using T = decltype(tag);
    visit_unary(op, [&](auto op_tag) {
      unary_kernel<decltype(op_tag)::value, T><<<blocks_for(n), kThreads, 0, st>>>(
          ptr<T>(x), ptr<T>(out), n, static_cast<T>(alpha), static_cast<T>(beta));
    });
  });
  RETORT_CUDA_LAUNCH_CHECK("unary ", unary_op_name(op), " of ", x.meta_str());
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const char* name = binary_op_name(op);
  cudaStream_t st = ctx().stream();
  const int64_t na = a.numel(), nb = b.numel();
  // The general plan is only built (and its rank checked) when neither fast path applies.
  const bool dense = na == n && nb == n, scalar_a = na == 1 && nb == n, scalar_b = nb == 1 && na == n;
  BroadcastIndex bcast;
  if (!dense && !scalar_a && !scalar_b) bcast = device_broadcast(out.shape(), a.shape(), b.shape(), name);
  dispatch_float(out.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = ptr<T>(a);
    const T* pb = ptr<T>(b);
    T* py = ptr<T>(out);
    visit_binary(op, [&](auto op_tag) {
      constexpr BinaryOp Op = decltype(op_tag)::value;
      const unsigned grid = blocks_for(n);
      if (dense) binary_kernel<Op, T><<<grid, kThreads, 0, st>>>(pa, pb, py, n, DenseIndex{});
      else if (scalar_a) binary_kernel<Op, T><<<grid, kThreads, 0, st>>>(pa, pb, py, n, ScalarAIndex{});
      else if (scalar_b) binary_kernel<Op, T><<<grid, kThreads, 0, st>>>(pa, pb, py, n, ScalarBIndex{});
      else binary_kernel<Op, T><<<grid, kThreads, 0, st>>>(pa, pb, py, n, bcast);
    });
  });
  RETORT_CUDA_LAUNCH_CHECK("binary ", name, " of ", a.meta_str(), " and ", b.meta_str(), " into ",
                           out.meta_str());
}

}  // namespace retort::cuda
