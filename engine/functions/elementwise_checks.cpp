// Gradchecks for the elementwise functions, broadcasting included.
#include "engine/functions/elementwise.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

void binary_case(std::vector<GradcheckCase>& out, const std::string& fname, const std::string& variant,
                 Shape sa, Shape sb, Tensor (*f)(const Tensor&, const Tensor&), double lo = -1.0,
                 double hi = 1.0) {
  out.push_back({fname + "." + variant, fname,
                 [=](Generator& g) { return Inputs{gc_uniform(sa, g, lo, hi), gc_uniform(sb, g, lo, hi)}; },
                 [f](const Inputs& in) { return f(in[0], in[1]); }});
}

void unary_case(std::vector<GradcheckCase>& out, const std::string& fname, Tensor (*make)(const Shape&, Generator&),
                std::function<Tensor(const Tensor&)> f) {
  out.push_back({fname + ".basic", fname, [make](Generator& g) { return Inputs{make({3, 4}, g)}; },
                 [f](const Inputs& in) { return f(in[0]); }});
}

Tensor any_values(const Shape& s, Generator& g) { return gc_uniform(s, g, -2.0, 2.0); }
Tensor positive(const Shape& s, Generator& g) { return gc_uniform(s, g, 0.5, 2.0); }
Tensor separated(const Shape& s, Generator& g) { return gc_separated(s, g, 0.1); }
}  // namespace

void add_elementwise_checks(std::vector<GradcheckCase>& out) {
  binary_case(out, "add", "same_shape", {3, 4}, {3, 4}, add);
  binary_case(out, "add", "broadcast", {2, 3, 4}, {3, 1}, add);
  binary_case(out, "sub", "broadcast", {4, 1}, {2, 1, 5}, sub);
  binary_case(out, "mul", "broadcast", {2, 3, 4}, {1, 3, 1}, mul);
  binary_case(out, "mul", "scalar_operand", {3, 4}, {}, mul);
  binary_case(out, "div", "broadcast", {2, 3}, {3}, div, 0.5, 2.0);
  out.push_back({"maximum.broadcast", "maximum",
                 [](Generator& g) { return Inputs{gc_separated({3, 4}, g, 0.1), gc_uniform({4}, g, 0.01, 0.04)}; },
                 [](const Inputs& in) { return maximum(in[0], in[1]); }});
  out.push_back({"minimum.broadcast", "minimum",
                 [](Generator& g) { return Inputs{gc_separated({3, 4}, g, 0.1), gc_uniform({4}, g, 0.01, 0.04)}; },
                 [](const Inputs& in) { return minimum(in[0], in[1]); }});
  // a + b stays at least 0.06 away from ReLU's kink at 0: a separated from 0 by 0.1, |b| <= 0.04.
  out.push_back({"add_relu.same_shape", "add_relu",
                 [](Generator& g) { return Inputs{gc_separated({3, 4}, g, 0.1), gc_uniform({3, 4}, g, -0.04, 0.04)}; },
                 [](const Inputs& in) { return add_relu(in[0], in[1]); }});
  out.push_back({"add_relu.broadcast", "add_relu",
                 [](Generator& g) { return Inputs{gc_separated({2, 3, 4}, g, 0.1), gc_uniform({3, 1}, g, -0.04, 0.04)}; },
                 [](const Inputs& in) { return add_relu(in[0], in[1]); }});
  binary_case(out, "xlogy", "positive", {3, 4}, {3, 4}, xlogy, 0.2, 2.0);

  unary_case(out, "affine", any_values, [](const Tensor& x) { return affine(x, -1.5, 0.25); });
  unary_case(out, "neg", any_values, [](const Tensor& x) { return neg(x); });
  unary_case(out, "exp", any_values, [](const Tensor& x) { return exp(x); });
  unary_case(out, "log", positive, [](const Tensor& x) { return log(x); });
  unary_case(out, "sqrt", positive, [](const Tensor& x) { return sqrt(x); });
  unary_case(out, "pow", positive, [](const Tensor& x) { return pow(x, 2.5); });
  out.push_back({"pow.square", "pow", [](Generator& g) { return Inputs{any_values({5}, g)}; },
                 [](const Inputs& in) { return pow(in[0], 2.0); }});
  unary_case(out, "abs", separated, [](const Tensor& x) { return abs(x); });
  unary_case(out, "clamp", separated, [](const Tensor& x) { return clamp(x, -0.33, 0.27); });
  unary_case(out, "relu", separated, [](const Tensor& x) { return relu(x); });
  unary_case(out, "leaky_relu", separated, [](const Tensor& x) { return leaky_relu(x, 0.1); });
  unary_case(out, "sigmoid", any_values, [](const Tensor& x) { return sigmoid(x); });
  unary_case(out, "tanh", any_values, [](const Tensor& x) { return tanh(x); });
  // dtype round trip and clone are differentiable identities.
  // The f32 round trip rounds, so this one uses a larger step and tolerance.
  out.push_back({"to_dtype.f32_round_trip", "to_dtype", [](Generator& g) { return Inputs{any_values({3, 4}, g)}; },
                 [](const Inputs& in) { return mul(in[0].to(DType::F32).to(DType::F64), in[0]); },
                 GradcheckOptions{.eps = 1e-3, .atol = 1e-3, .rtol = 1e-3}});
  unary_case(out, "clone", any_values, [](const Tensor& x) { return mul(x.clone(), x); });
}

}  // namespace retort
