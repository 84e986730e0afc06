// Elementwise differentiable functions (see elementwise.h). Forward: one backend kernel. Backward:
// composed from the same functions (grad mode is off inside backward, so nothing is recorded).
#include "engine/functions/elementwise.h"

#include <cmath>

#include "engine/functions/common.h"
#include "engine/functions/reduce.h"

namespace retort {

using fn::check_compatible;
using fn::check_float;

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    RETORT_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                 " cannot be broadcast together (dimension ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  check_compatible(name, a, b);
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape(), name), a.dtype(), a.device());
  backend_for(a).binary(op, a, b, out);
  return out;
}

Tensor unary_forward(UnaryOp op, const Tensor& x, double alpha = 0, double beta = 0) {
  check_float(unary_op_name(op), x);
  Tensor out = Tensor::empty_like(x);
  backend_for(x).unary(op, x, out, alpha, beta);
  return out;
}

}  // namespace

// ---- binary ----------------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Add, a, b);
  const Shape sa = a.shape(), sb = b.shape();
  return record(out, "AddBackward", {a, b}, [sa, sb](const Tensor& g, const Node& n) {
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(g, sa) : Tensor(), n.needs_grad(1) ? sum_to(g, sb) : Tensor()};
  });
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::AddRelu, a, b);
  const Shape sa = a.shape(), sb = b.shape();
  return record(out, "AddReluBackward", {a, b}, [sa, sb, y = saved(out)](const Tensor& g, const Node& n) {
    const Tensor gm = binary_forward(BinaryOp::MaskPositive, g, y);  // g where y > 0
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(gm, sa) : Tensor(), n.needs_grad(1) ? sum_to(gm, sb) : Tensor()};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Sub, a, b);
  const Shape sa = a.shape(), sb = b.shape();
  return record(out, "SubBackward", {a, b}, [sa, sb](const Tensor& g, const Node& n) {
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(g, sa) : Tensor(),
                               n.needs_grad(1) ? sum_to(neg(g), sb) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Mul, a, b);
  return record(out, "MulBackward", {a, b}, [a = saved(a), b = saved(b)](const Tensor& g, const Node& n) {
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(mul(g, b), a.shape()) : Tensor(),
                               n.needs_grad(1) ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Div, a, b);
  return record(out, "DivBackward", {a, b},
                [a = saved(a), b = saved(b), y = saved(out)](const Tensor& g, const Node& n) {
                  // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -y/b
                  Tensor gb = n.needs_grad(1) ? sum_to(neg(div(mul(g, y), b)), b.shape()) : Tensor();
                  return std::vector<Tensor>{n.needs_grad(0) ? sum_to(div(g, b), a.shape()) : Tensor(), gb};
                });
}

namespace {
// maximum/minimum route the gradient to the operand that was selected (a on ties).
Tensor select_binary(BinaryOp op, BinaryOp pick_a, const char* name, const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(op, a, b);
  return record(out, name, {a, b}, [a = saved(a), b = saved(b), pick_a](const Tensor& g, const Node& n) {
    Tensor mask = binary_forward(pick_a, a, b);  // 1 where a was chosen
    Tensor ga = n.needs_grad(0) ? sum_to(mul(g, mask), a.shape()) : Tensor();
    Tensor gb = n.needs_grad(1) ? sum_to(mul(g, affine(mask, -1.0, 1.0)), b.shape()) : Tensor();
    return std::vector<Tensor>{ga, gb};
  });
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return select_binary(BinaryOp::Max, BinaryOp::Ge, "MaximumBackward", a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return select_binary(BinaryOp::Min, BinaryOp::Le, "MinimumBackward", a, b); }

Tensor xlogy(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::XLogY, a, b);
  return record(out, "XLogYBackward", {a, b}, [a = saved(a), b = saved(b)](const Tensor& g, const Node& n) {
    // d/da = log(b) (0 where a == 0, as torch), d/db = a / b
    Tensor ga, gb;
    if (n.needs_grad(0)) {
      Tensor nonzero = binary_forward(BinaryOp::Gt, abs(a), Tensor::zeros({}, a.dtype(), a.device()));
      ga = sum_to(mul(mul(g, log(b)), nonzero), a.shape());
    }
    if (n.needs_grad(1)) gb = sum_to(mul(g, div(a, b)), b.shape());
    return std::vector<Tensor>{ga, gb};
  });
}

Tensor gt(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Ge, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Le, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Eq, a, b); }

// ---- unary -----------------------------------------------------------------------------------------

Tensor affine(const Tensor& x, double alpha, double beta) {
  Tensor out = unary_forward(UnaryOp::Affine, x, alpha, beta);
  return record(out, "AffineBackward", {x}, [alpha](const Tensor& g, const Node&) {
    return std::vector<Tensor>{affine(g, alpha, 0.0)};
  });
}

Tensor neg(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Neg, x);
  return record(out, "NegBackward", {x}, [](const Tensor& g, const Node&) { return std::vector<Tensor>{neg(g)}; });
}

Tensor exp(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Exp, x);
  return record(out, "ExpBackward", {x}, [y = saved(out)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{mul(g, y)};
  });
}

Tensor log(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Log, x);
  return record(out, "LogBackward", {x}, [x = saved(x)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{div(g, x)};
  });
}

Tensor sqrt(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Sqrt, x);
  return record(out, "SqrtBackward", {x}, [y = saved(out)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{div(g, affine(y, 2.0, 0.0))};
  });
}

Tensor pow(const Tensor& x, double p) {
  Tensor out = unary_forward(UnaryOp::Pow, x, p);
  return record(out, "PowBackward", {x}, [x = saved(x), p](const Tensor& g, const Node&) {
    return std::vector<Tensor>{mul(g, affine(pow(x, p - 1.0), p, 0.0))};
  });
}

Tensor abs(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Abs, x);
  return record(out, "AbsBackward", {x}, [x = saved(x)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{mul(g, sign(x))};
  });
}

Tensor sign(const Tensor& x) { return unary_forward(UnaryOp::Sign, x); }

Tensor clamp(const Tensor& x, double lo, double hi) {
  RETORT_CHECK(lo <= hi, "clamp: lower bound ", lo, " exceeds upper bound ", hi);
  Tensor out = unary_forward(UnaryOp::Clamp, x, lo, hi);
  return record(out, "ClampBackward", {x}, [x = saved(x), lo, hi](const Tensor& g, const Node&) {
    const Tensor l = Tensor::scalar(lo, x.dtype(), x.device()), h = Tensor::scalar(hi, x.dtype(), x.device());
    return std::vector<Tensor>{mul(g, mul(ge(x, l), le(x, h)))};
  });
}

Tensor relu(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Relu, x);
  return record(out, "ReluBackward", {x}, [y = saved(out)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{binary_forward(BinaryOp::MaskPositive, g, y)};  // g where y > 0, one pass
  });
}

Tensor leaky_relu(const Tensor& x, double negative_slope) {
  RETORT_CHECK(std::isfinite(negative_slope), "leaky_relu: negative_slope must be finite, got ", negative_slope);
  Tensor out = unary_forward(UnaryOp::LeakyRelu, x, negative_slope);
  return record(out, "LeakyReluBackward", {x}, [x = saved(x), negative_slope](const Tensor& g, const Node&) {
    const Tensor positive = gt(x, Tensor::scalar(0.0, x.dtype(), x.device()));  // 1 where x > 0
    return std::vector<Tensor>{mul(g, affine(positive, 1.0 - negative_slope, negative_slope))};
  });
}

Tensor sigmoid(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Sigmoid, x);
  return record(out, "SigmoidBackward", {x}, [y = saved(out)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{mul(g, mul(y, affine(y, -1.0, 1.0)))};  // y (1 - y)
  });
}

Tensor tanh(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Tanh, x);
  return record(out, "TanhBackward", {x}, [y = saved(out)](const Tensor& g, const Node&) {
    return std::vector<Tensor>{mul(g, affine(mul(y, y), -1.0, 1.0))};  // 1 - y^2
  });
}

// ---- operators -------------------------------------------------------------------------------------

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double b) { return affine(a, 1.0, b); }
Tensor operator-(const Tensor& a, double b) { return affine(a, 1.0, -b); }
Tensor operator*(const Tensor& a, double b) { return affine(a, b, 0.0); }
Tensor operator/(const Tensor& a, double b) { return affine(a, 1.0 / b, 0.0); }
Tensor operator*(double a, const Tensor& b) { return affine(b, a, 0.0); }
Tensor operator-(const Tensor& a) { return neg(a); }

}  // namespace retort
