// Gradchecks for the reductions.
#include "engine/functions/elementwise.h"
#include "engine/functions/reduce.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;
void reduce_case(std::vector<GradcheckCase>& out, const std::string& name, const std::string& fname,
                 std::function<Tensor(const Tensor&)> f, bool separated = false) {
  out.push_back({name, fname,
                 [separated](Generator& g) {
                   return Inputs{separated ? gc_separated({2, 3, 4}, g, 0.07) : gc_randn({2, 3, 4}, g)};
                 },
                 [f](const Inputs& in) { return f(in[0]); }});
}
}  // namespace

void add_reduce_checks(std::vector<GradcheckCase>& out) {
  reduce_case(out, "sum.all", "sum", [](const Tensor& x) { return sum(x); });
  reduce_case(out, "sum.dims_keepdim", "sum", [](const Tensor& x) { return sum(x, {0, 2}, true); });
  reduce_case(out, "sum.last_dim", "sum", [](const Tensor& x) { return sum(x, {-1}); });
  reduce_case(out, "mean.all", "mean", [](const Tensor& x) { return mean(x); });
  reduce_case(out, "mean.dim1", "mean", [](const Tensor& x) { return mean(x, {1}); });
  reduce_case(out, "max.dim", "max", [](const Tensor& x) { return max(x, {1}); }, true);
  reduce_case(out, "max.all", "max", [](const Tensor& x) { return max(x); }, true);
  reduce_case(out, "min.dims_keepdim", "min", [](const Tensor& x) { return min(x, {0, 2}, true); }, true);
  reduce_case(out, "var.unbiased", "var", [](const Tensor& x) { return var(x, {2}); });
  reduce_case(out, "var.biased_keepdim", "var", [](const Tensor& x) { return var(x, {0, 2}, false, true); });
  reduce_case(out, "stddev.unbiased", "stddev", [](const Tensor& x) { return stddev(x, {1}); });
  reduce_case(out, "stddev.biased_all", "stddev", [](const Tensor& x) { return stddev(x, {}, false); });
}

}  // namespace retort
