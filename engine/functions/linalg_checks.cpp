// Gradchecks for matmul, linear and eigh.
#include "engine/functions/linalg.h"
#include "engine/functions/shape.h"
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
  // eigh: random matrices (not symmetric: eigh symmetrises, so every entry has a gradient); their
  // eigenvalues are distinct with probability 1 and the seeded draws keep the gaps far above the
  // finite-difference step.
  out.push_back({"eigh.values", "eigh", [](Generator& g) { return Inputs{gc_randn({2, 4, 4}, g)}; },
                 [](const Inputs& in) { return eigh(in[0]).values; }});
  out.push_back({"eigh.vectors", "eigh", [](Generator& g) { return Inputs{gc_randn({2, 4, 4}, g)}; },
                 [](const Inputs& in) { return eigh(in[0]).vectors; }});
  out.push_back({"eigh.both_2d", "eigh", [](Generator& g) { return Inputs{gc_randn({3, 3}, g)}; },
                 [](const Inputs& in) {
                   const EighResult e = eigh(in[0]);
                   return cat({unsqueeze(e.values, 0), e.vectors}, 0);
                 }});
  // Only the top eigenvector used (as KDSVD does): the pairs of unused vectors contribute 0.
  out.push_back({"eigh.top_vector", "eigh", [](Generator& g) { return Inputs{gc_randn({2, 5, 5}, g)}; },
                 [](const Inputs& in) { return slice(eigh(in[0]).vectors, 2, 4, 5); }});
}

}  // namespace retort
