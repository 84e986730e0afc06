// Gradchecks for the shape functions.
#include "engine/functions/elementwise.h"
#include "engine/functions/shape.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;
void shape_case(std::vector<GradcheckCase>& out, const std::string& name, const std::string& fname, Shape s,
                std::function<Tensor(const Tensor&)> f) {
  out.push_back({name, fname, [s](Generator& g) { return Inputs{gc_randn(s, g)}; },
                 [f](const Inputs& in) { return f(in[0]); }});
}
}  // namespace

void add_shape_checks(std::vector<GradcheckCase>& out) {
  // Multiplying by the input after the shape op makes the output depend on values, not only layout.
  shape_case(out, "reshape.infer", "reshape", {2, 3, 4}, [](const Tensor& x) { return mul(reshape(x, {4, -1}), reshape(x, {4, 6})); });
  shape_case(out, "flatten.middle", "flatten", {2, 3, 4, 2}, [](const Tensor& x) { return flatten(x, 1, 2); });
  shape_case(out, "unsqueeze.mid", "unsqueeze", {3, 4}, [](const Tensor& x) { return unsqueeze(x, 1); });
  shape_case(out, "squeeze.mid", "squeeze", {3, 1, 4}, [](const Tensor& x) { return squeeze(x, 1); });
  shape_case(out, "permute.4d", "permute", {2, 3, 4, 5}, [](const Tensor& x) { return permute(x, {0, 2, 3, 1}); });
  shape_case(out, "transpose.last", "transpose", {2, 3, 4}, [](const Tensor& x) { return transpose(x, -1, -2); });
  shape_case(out, "slice.step", "slice", {3, 7}, [](const Tensor& x) { return slice(x, 1, 1, 6, 2); });
  shape_case(out, "slice.negative", "slice", {5, 3}, [](const Tensor& x) { return slice(x, 0, -3, 100); });
  out.push_back({"cat.dim1", "cat",
                 [](Generator& g) { return Inputs{gc_randn({2, 3, 2}, g), gc_randn({2, 1, 2}, g), gc_randn({2, 2, 2}, g)}; },
                 [](const Inputs& in) { return cat({in[0], in[1], in[2]}, 1); }});
  out.push_back({"cat.reuse", "cat", [](Generator& g) { return Inputs{gc_randn({2, 3}, g)}; },
                 [](const Inputs& in) { return cat({in[0], mul(in[0], in[0])}, 0); }});
  shape_case(out, "pad.2d", "pad", {2, 2, 3, 3}, [](const Tensor& x) { return pad(x, {1, 2, 0, 1}, 0.5); });
  shape_case(out, "pad.crop", "pad", {2, 5, 4}, [](const Tensor& x) { return pad(x, {-1, 1, 2, -2}); });
  shape_case(out, "expand.broadcast", "expand", {3, 1}, [](const Tensor& x) { return expand(x, {2, 3, 4}); });
}

}  // namespace retort
