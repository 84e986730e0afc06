// CPU reductions over a set of dimensions.
//
// The input is viewed as [outer, reduced, inner] after merging: when the reduced dimensions form one
// contiguous block (sum over the last dims, over dim 0, over H,W of NCHW) the loops are direct; any
// other set (e.g. dims {0, 2, 3} of NCHW) is handled by reducing one block at a time. Sums
// accumulate in double, so F32 results do not depend on the reduction order's rounding.
#include <algorithm>
#include <limits>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

// Reduces x viewed as [outer, red, inner] over the middle dimension into y [outer, inner].
template <class T>
void reduce_block(ReduceOp op, const T* x, T* y, int64_t outer, int64_t red, int64_t inner) {
  const int64_t total = outer * inner;
  if (inner == 1) {
#pragma omp parallel for if (total * red > kParallelGrain)
    for (int64_t o = 0; o < outer; ++o) {
      const T* px = x + o * red;
      if (op == ReduceOp::Sum) {
        double acc = 0;
        for (int64_t r = 0; r < red; ++r) acc += px[r];
        y[o] = static_cast<T>(acc);
      } else {
        T acc = px[0];
        if (op == ReduceOp::Max) for (int64_t r = 1; r < red; ++r) acc = max_keep_nan(acc, px[r]);
        else for (int64_t r = 1; r < red; ++r) acc = min_keep_nan(acc, px[r]);
        y[o] = acc;
      }
    }
    return;
  }
#pragma omp parallel for if (total * red > kParallelGrain)
  for (int64_t o = 0; o < outer; ++o) {
    T* py = y + o * inner;
    const T* px = x + o * red * inner;
    if (op == ReduceOp::Sum) {
      std::vector<double> acc(inner, 0.0);
      for (int64_t r = 0; r < red; ++r)
        for (int64_t i = 0; i < inner; ++i) acc[i] += px[r * inner + i];
      for (int64_t i = 0; i < inner; ++i) py[i] = static_cast<T>(acc[i]);
    } else {
      for (int64_t i = 0; i < inner; ++i) py[i] = px[i];
      for (int64_t r = 1; r < red; ++r)
        for (int64_t i = 0; i < inner; ++i)
          py[i] = op == ReduceOp::Max ? max_keep_nan(py[i], px[r * inner + i]) : min_keep_nan(py[i], px[r * inner + i]);
    }
  }
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, Tensor& out) {
  RETORT_CHECK(x.numel() > 0 || op == ReduceOp::Sum, "reduce: max/min of an empty tensor ", x.meta_str());
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    // Reduce one maximal contiguous run of dims at a time, from the last run to the first.
    Shape shape = x.shape();
    Tensor cur = x;
    std::vector<int> todo = dims;
    while (!todo.empty()) {
      int hi = todo.back(), lo = hi;
      todo.pop_back();
      while (!todo.empty() && todo.back() == lo - 1) { lo = todo.back(); todo.pop_back(); }
      int64_t outer = 1, red = 1, inner = 1;
      for (int d = 0; d < lo; ++d) outer *= shape[d];
      for (int d = lo; d <= hi; ++d) red *= shape[d];
      for (int d = hi + 1; d < static_cast<int>(shape.size()); ++d) inner *= shape[d];
      for (int d = lo; d <= hi; ++d) shape[d] = 1;
      Tensor next = todo.empty() ? out : Tensor::empty(shape, x.dtype());
      if (red == 0) {
        fill(next, 0.0);
      } else {
        reduce_block<T>(op, cur.data<T>(), next.data<T>(), outer, red, inner);
      }
      cur = next;
    }
    if (dims.empty()) copy(x.raw_data(), out.raw_data(), x.nbytes());
  });
}

}  // namespace retort::cpu
