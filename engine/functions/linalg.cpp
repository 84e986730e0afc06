// Matrix products (see linalg.h). Transposes are never materialised: the GEMM's transpose flags
// read the stored operand directly, in forward and backward.
#include "engine/functions/linalg.h"

#include <cmath>

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

EighResult eigh(const Tensor& a, double gap_eps) {
  fn::check_float("eigh", a);
  RETORT_CHECK(std::isfinite(gap_eps) && gap_eps >= 0, "eigh: gap_eps must be finite and >= 0, got ", gap_eps);
  RETORT_CHECK(a.dim() >= 2 && a.shape()[a.dim() - 1] == a.shape()[a.dim() - 2],
               "eigh: expected square matrices [.., n, n], got ", a.meta_str());
  const int64_t n = a.shape()[a.dim() - 1];
  const Shape batch_shape(a.shape().begin(), a.shape().end() - 2);
  const int64_t nb = shape_numel(batch_shape);
  // Symmetrise (differentiably), then decompose the contiguous [nb, n, n] stack.
  const Tensor s = reshape(affine(add(a, transpose(a, -2, -1)), 0.5, 0.0), {nb, n, n});
  Tensor values = Tensor::empty({nb, n}, a.dtype(), a.device());
  Tensor vectors = Tensor::empty({nb, n, n}, a.dtype(), a.device());
  backend_for(a).symeig(s, values, vectors);
  const Tensor v = saved(vectors), l = saved(values);
  // The two outputs record separate nodes into the same input; their gradients add up at s, which is
  // the joint backward since it is linear in (grad_values, grad_vectors).
  values = record(values, "EighValuesBackward", {s}, [v](const Tensor& g, const Node&) {
    // V diag(g) V^T = (V scaled column-wise by g) @ V^T
    return std::vector<Tensor>{matmul(mul(v, unsqueeze(g, 1)), transpose(v, 1, 2))};
  });
  vectors = record(vectors, "EighVectorsBackward", {s}, [v, l, gap_eps](const Tensor& g, const Node&) {
    const Tensor m = matmul(transpose(v, 1, 2), g);
    const Tensor k = affine(sub(m, transpose(m, 1, 2)), 0.5, 0.0);
    const Tensor den = sub(unsqueeze(l, 1), unsqueeze(l, 2));  // [i, j] = l_j - l_i
    Tensor r;
    if (gap_eps > 0) {  // k d / (d² + ε²), ε per matrix
      const Tensor eps = affine(max(abs(l), {1}, true), gap_eps, 0.0);  // [nb, 1]
      const Tensor eps2 = unsqueeze(mul(eps, eps), 2);                    // [nb, 1, 1]
      const Tensor q = add(mul(den, den), eps2);
      // A tie in an all-zero matrix (ε = 0) has q = 0 and k d = 0: + 1 there gives 0, not 0/0.
      r = div(mul(k, den), add(q, eq(q, Tensor::zeros({}, q.dtype(), q.device()))));
    } else {
      // Where k is exactly 0 the denominator gets + 1, so an unused degenerate pair gives 0, not 0/0.
      r = div(k, add(den, eq(k, Tensor::zeros({}, k.dtype(), k.device()))));
    }
    return std::vector<Tensor>{matmul(matmul(v, r), transpose(v, 1, 2))};
  });
  Shape vs = batch_shape, ws = batch_shape;
  vs.push_back(n);
  vs.push_back(n);
  ws.push_back(n);
  return {reshape(values, ws), reshape(vectors, vs)};
}

}  // namespace retort
