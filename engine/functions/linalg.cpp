// Matrix products (see linalg.h). Transposes are never materialised: the GEMM's transpose flags
// read the stored operand directly, in forward and backward.
#include "engine/functions/linalg.h"

#include "engine/functions/common.h"
#include "engine/functions/elementwise.h"
#include "engine/functions/reduce.h"
#include "engine/functions/shape.h"

namespace retort {

namespace {

// op(a[b]) @ op(b[b]) for every batch b of 3-D contiguous operands (batch 1 may be shared: a batch
// size of 1 on one side is broadcast with stride 0). No autograd.
Tensor bmm_raw(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  const int64_t batch = std::max(a.shape()[0], b.shape()[0]);
  const int64_t m = ta ? a.shape()[2] : a.shape()[1], k = ta ? a.shape()[1] : a.shape()[2];
  const int64_t n = tb ? b.shape()[1] : b.shape()[2];
  Tensor c = Tensor::empty({batch, m, n}, a.dtype(), a.device());
  GemmArgs g;
  g.trans_a = ta; g.trans_b = tb;
  g.m = m; g.n = n; g.k = k;
  g.a = a.raw_data(); g.lda = a.shape()[2];
  g.b = b.raw_data(); g.ldb = b.shape()[2];
  g.c = c.raw_data(); g.ldc = n;
  g.dtype = a.dtype();
  g.batch = batch;
  g.stride_a = a.shape()[0] == 1 ? 0 : a.shape()[1] * a.shape()[2];
  g.stride_b = b.shape()[0] == 1 ? 0 : b.shape()[1] * b.shape()[2];
  g.stride_c = m * n;
  if (k == 0) backend_for(a).fill(c, 0.0);
  else backend_for(a).gemm(g);
  return c;
}

Tensor mm_raw(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  Tensor c = bmm_raw(a.view_as_shape({1, a.shape()[0], a.shape()[1]}), ta,
                     b.view_as_shape({1, b.shape()[0], b.shape()[1]}), tb);
  return c.view_as_shape({c.shape()[1], c.shape()[2]});
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  fn::check_compatible("matmul", a_in, b_in, "a", "b");
  RETORT_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: 0-D operands (", a_in.meta_str(), ", ",
               b_in.meta_str(), ")");
  // Promote 1-D operands, remembering to drop the added dimension again.
  Tensor a = a_in.dim() == 1 ? unsqueeze(a_in, 0) : a_in;
  Tensor b = b_in.dim() == 1 ? unsqueeze(b_in, 1) : b_in;
  RETORT_CHECK(a.shape()[a.dim() - 1] == b.shape()[b.dim() - 2], "matmul: shapes ", shape_str(a_in.shape()), " and ",
               shape_str(b_in.shape()), " cannot be multiplied (", a.shape()[a.dim() - 1], " vs ",
               b.shape()[b.dim() - 2], ")");
  const int64_t m = a.shape()[a.dim() - 2], k = a.shape()[a.dim() - 1], n = b.shape()[b.dim() - 1];
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(a_batch, b_batch, "matmul (batch dimensions)");
  const int64_t nb = shape_numel(batch);
  auto to3 = [&](const Tensor& t, const Shape& tb, int64_t r, int64_t c) {
    Shape full = batch;
    full.push_back(r);
    full.push_back(c);
    // A 2-D operand is shared across the batch without copying (stride 0 in the GEMM).
    if (tb.empty()) return reshape(t, {1, r, c});
    return reshape(expand(t, full), {nb, r, c});
  };
  Tensor a3 = to3(a, a_batch, m, k), b3 = to3(b, b_batch, k, n);
  Tensor out;
  {
    NoGradGuard ng;
    out = bmm_raw(a3.detach(), false, b3.detach(), false);
  }
  out = record(out, "MatmulBackward", {a3, b3}, [a3 = saved(a3), b3 = saved(b3)](const Tensor& g, const Node& node) {
    // dA = G @ B^T, dB = A^T @ G; a shared (batch 1) operand sums over the batch.
    Tensor ga, gb;
    if (node.needs_grad(0)) {
      ga = bmm_raw(g, false, b3, true);
      if (a3.shape()[0] == 1 && g.shape()[0] != 1) ga = sum(ga, {0}, true);
    }
    if (node.needs_grad(1)) {
      gb = bmm_raw(a3, true, g, false);
      if (b3.shape()[0] == 1 && g.shape()[0] != 1) gb = sum(gb, {0}, true);
    }
    return std::vector<Tensor>{ga, gb};
  });
  Shape out_shape = batch;
  if (a_in.dim() > 1) out_shape.push_back(m);
  if (b_in.dim() > 1) out_shape.push_back(n);
  return reshape(out, out_shape);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  fn::check_compatible("linear", x, weight, "input", "weight");
  fn::check_dim("linear", weight, 2, "weight", "[out_features, in_features]");
  RETORT_CHECK(x.dim() >= 1 && x.shape().back() == weight.shape()[1], "linear: input ", x.meta_str(),
               " has ", x.dim() ? x.shape().back() : 0, " features but weight ", weight.meta_str(), " expects ",
               weight.shape()[1]);
  const int64_t out_f = weight.shape()[0], in_f = weight.shape()[1];
  if (bias.defined()) {
    fn::check_compatible("linear", x, bias, "input", "bias");
    RETORT_CHECK(bias.dim() == 1 && bias.shape()[0] == out_f, "linear: bias ", bias.meta_str(), " does not match ",
                 out_f, " output features");
  }
  const int64_t rows = x.numel() / std::max<int64_t>(in_f, 1);
  Tensor x2 = x.view_as_shape({rows, in_f});
  Tensor y2 = mm_raw(x2, false, weight, true);
  if (bias.defined()) backend_for(x).binary(BinaryOp::Add, y2, bias, y2);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor out = y2.view_as_shape(out_shape);
  const Shape xs = x.shape();
  return record(out, "LinearBackward", {x, weight, bias},
                [x2 = saved(x2), w = saved(weight), xs, rows, out_f](const Tensor& g, const Node& n) {
                  Tensor g2 = g.view_as_shape({rows, out_f});
                  Tensor gx = n.needs_grad(0) ? mm_raw(g2, false, w, false).view_as_shape(xs) : Tensor();
                  Tensor gw = n.needs_grad(1) ? mm_raw(g2, true, x2, false) : Tensor();
                  Tensor gb = n.needs_grad(2) ? sum(g2, {0}) : Tensor();
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

}  // namespace retort
