// Reductions (see reduce.h). The backend reduces into a keepdim-shaped output; the public result is
// a view of it without the reduced dimensions unless keepdim. Backward broadcasts the gradient back
// with expand().
#include "engine/functions/reduce.h"

#include <algorithm>

#include "engine/functions/common.h"
#include "engine/functions/elementwise.h"
#include "engine/functions/shape.h"

namespace retort {

namespace {

// Sorted, unique, non-negative dims; empty means all.
std::vector<int> normalize_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
  std::vector<int> out;
  if (dims.empty()) {
    for (int d = 0; d < ndim; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(normalize_dim(d, ndim, op));
  std::sort(out.begin(), out.end());
  RETORT_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dimension listed twice");
  return out;
}

Shape keepdim_shape(const Shape& s, const std::vector<int>& dims) {
  Shape k = s;
  for (int d : dims) k[d] = 1;
  return k;
}

Shape dropped_shape(const Shape& s, const std::vector<int>& dims) {
  Shape k;
  for (int i = 0; i < static_cast<int>(s.size()); ++i)
    if (!std::binary_search(dims.begin(), dims.end(), i)) k.push_back(s[i]);
  return k;
}

int64_t reduced_count(const Shape& s, const std::vector<int>& dims) {
  int64_t n = 1;
  for (int d : dims) n *= s[d];
  return n;
}

// Forward kernel call: x reduced over dims, shaped keepdim or not.
Tensor reduce_raw(ReduceOp op, const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  Tensor out = Tensor::empty(keepdim_shape(x.shape(), dims), x.dtype(), x.device());
  backend_for(x).reduce(op, x, dims, out);
  return keepdim ? out : out.view_as_shape(dropped_shape(x.shape(), dims));
}

// Gradient of a reduced tensor, broadcast back to x's shape.
Tensor expand_back(const Tensor& g, const Shape& x_shape, const std::vector<int>& dims) {
  return expand(g.view_as_shape(keepdim_shape(x_shape, dims)), x_shape);
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int64_t> dims_in, bool keepdim) {
  fn::check_float("sum", x);
  const auto dims = normalize_dims(dims_in, x.dim(), "sum");
  Tensor out = reduce_raw(ReduceOp::Sum, x, dims, keepdim);
  const Shape xs = x.shape();
  return record(out, "SumBackward", {x}, [xs, dims](const Tensor& g, const Node&) {
    return std::vector<Tensor>{expand_back(g, xs, dims)};
  });
}

Tensor mean(const Tensor& x, std::vector<int64_t> dims_in, bool keepdim) {
  fn::check_float("mean", x);
  const auto dims = normalize_dims(dims_in, x.dim(), "mean");
  const int64_t n = reduced_count(x.shape(), dims);
  RETORT_CHECK(n > 0, "mean: reducing ", x.meta_str(), " over an empty dimension");
  Tensor out;
  {
    NoGradGuard ng;
    out = affine(reduce_raw(ReduceOp::Sum, x, dims, keepdim), 1.0 / static_cast<double>(n), 0.0);
  }
  const Shape xs = x.shape();
  return record(out, "MeanBackward", {x}, [xs, dims, n](const Tensor& g, const Node&) {
    return std::vector<Tensor>{expand_back(affine(g, 1.0 / static_cast<double>(n), 0.0), xs, dims)};
  });
}

namespace {
Tensor extreme(ReduceOp op, const char* name, const char* node, const Tensor& x, std::vector<int64_t> dims_in,
               bool keepdim) {
  fn::check_float(name, x);
  RETORT_CHECK(x.numel() > 0, name, ": reducing an empty tensor ", x.meta_str());
  const auto dims = normalize_dims(dims_in, x.dim(), name);
  Tensor out = reduce_raw(op, x, dims, keepdim);
  return record(out, node, {x}, [x = saved(x), y = saved(out), dims](const Tensor& g, const Node&) {
    // Share the gradient equally among the tied extrema (torch.amax semantics).
    Tensor mask = eq(x, expand_back(y, x.shape(), dims));
    Tensor count = reduce_raw(ReduceOp::Sum, mask, dims, true);
    return std::vector<Tensor>{mul(mask, expand_back(div(g.view_as_shape(count.shape()), count), x.shape(), dims))};
  });
}
}  // namespace

Tensor max(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return extreme(ReduceOp::Max, "max", "MaxBackward", x, std::move(dims), keepdim);
}
Tensor min(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return extreme(ReduceOp::Min, "min", "MinBackward", x, std::move(dims), keepdim);
}

Tensor var(const Tensor& x, std::vector<int64_t> dims_in, bool unbiased, bool keepdim) {
  fn::check_float("var", x);
  const auto dims = normalize_dims(dims_in, x.dim(), "var");
  const int64_t n = reduced_count(x.shape(), dims);
  const double denom = static_cast<double>(n - (unbiased ? 1 : 0));
  RETORT_CHECK(denom > 0, "var: ", unbiased ? "unbiased " : "", "variance of ", n, " element(s) over dims of ",
               x.meta_str(), " is undefined");
  Tensor out, centered;
  {
    NoGradGuard ng;
    Tensor m = affine(reduce_raw(ReduceOp::Sum, x, dims, true), 1.0 / static_cast<double>(n), 0.0);
    centered = sub(x, m);
    out = affine(reduce_raw(ReduceOp::Sum, mul(centered, centered), dims, keepdim), 1.0 / denom, 0.0);
  }
  return record(out, "VarBackward", {x}, [c = saved(centered), dims, denom](const Tensor& g, const Node&) {
    // d var / dx_i = 2 (x_i - mean) / denom (the mean's own dependence cancels)
    return std::vector<Tensor>{mul(c, expand_back(affine(g, 2.0 / denom, 0.0), c.shape(), dims))};
  });
}

Tensor stddev(const Tensor& x, std::vector<int64_t> dims, bool unbiased, bool keepdim) {
  return sqrt(var(x, std::move(dims), unbiased, keepdim));
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  RETORT_CHECK(lead >= 0, "sum_to: cannot reduce ", g.meta_str(), " to the larger shape ", shape_str(shape));
  std::vector<int> dims;
  for (int64_t i = 0; i < g.dim(); ++i) {
    if (i < lead) dims.push_back(static_cast<int>(i));
    else if (shape[i - lead] == 1 && g.shape()[i] != 1) dims.push_back(static_cast<int>(i));
    else RETORT_CHECK(shape[i - lead] == g.shape()[i], "sum_to: ", g.meta_str(), " does not broadcast from ",
                      shape_str(shape));
  }
  if (dims.empty()) return reshape(g, shape);
  return reshape(sum(g, std::vector<int64_t>(dims.begin(), dims.end()), true), shape);
}

}  // namespace retort
