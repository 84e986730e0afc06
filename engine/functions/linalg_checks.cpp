// Gradchecks for matmul and linear.
#include "engine/functions/linalg.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;
void mm_case(std::vector<GradcheckCase>& out, const std::string& name, Shape sa, Shape sb) {
  out.push_back({name, "matmul", [sa, sb](Generator& g) { return Inputs{gc_randn(sa, g), gc_randn(sb, g)}; },
                 [](const Inputs& in) { return matmul(in[0], in[1]); }});
}
}  // namespace

void add_linalg_checks(std::vector<GradcheckCase>& out) {
  mm_case(out, "matmul.2d", {3, 4}, {4, 5});
  mm_case(out, "matmul.batched", {2, 3, 4}, {2, 4, 2});
  mm_case(out, "matmul.broadcast_2d_rhs", {2, 3, 4}, {4, 2});
  mm_case(out, "matmul.broadcast_batch", {2, 1, 3, 4}, {3, 4, 2});
  mm_case(out, "matmul.vector", {4}, {4, 3});
  out.push_back({"linear.bias", "linear",
                 [](Generator& g) { return Inputs{gc_randn({5, 4}, g), gc_randn({3, 4}, g), gc_randn({3}, g)}; },
                 [](const Inputs& in) { return linear(in[0], in[1], in[2]); }});
  out.push_back({"linear.no_bias_3d", "linear",
                 [](Generator& g) { return Inputs{gc_randn({2, 3, 4}, g), gc_randn({2, 4}, g)}; },
                 [](const Inputs& in) { return linear(in[0], in[1]); }});
}

}  // namespace retort
