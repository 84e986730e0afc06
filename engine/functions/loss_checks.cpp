// Gradchecks for the softmax family and the losses. Class targets are I64 inputs without
// requires_grad, so gradcheck passes them through unchecked.
#include "engine/functions/loss.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

void softmax_case(std::vector<GradcheckCase>& out, const std::string& name, bool log, Shape shape, int64_t dim) {
  out.push_back({name, log ? "log_softmax" : "softmax", [shape](Generator& g) { return Inputs{gc_randn(shape, g)}; },
                 [log, dim](const Inputs& in) { return log ? log_softmax(in[0], dim) : softmax(in[0], dim); }});
}

void cross_entropy_case(std::vector<GradcheckCase>& out, const std::string& name, double smoothing) {
  out.push_back({name, "cross_entropy",
                 [](Generator& g) { return Inputs{gc_randn({4, 5}, g), Tensor::from_int64({1, 0, 4, 2}, {4})}; },
                 [smoothing](const Inputs& in) { return cross_entropy(in[0], in[1], smoothing); }});
}
}  // namespace

void add_loss_checks(std::vector<GradcheckCase>& out) {
  softmax_case(out, "softmax.dim1_2d", false, {3, 5}, 1);
  softmax_case(out, "softmax.dim1_4d", false, {2, 3, 2, 2}, 1);  // middle dim: strided rows
  softmax_case(out, "softmax.last_dim_3d", false, {2, 2, 4}, -1);
  softmax_case(out, "log_softmax.dim1_2d", true, {3, 5}, 1);
  softmax_case(out, "log_softmax.dim1_4d", true, {2, 3, 2, 2}, 1);
  softmax_case(out, "log_softmax.dim0_2d", true, {4, 3}, 0);

  cross_entropy_case(out, "cross_entropy.plain", 0.0);
  cross_entropy_case(out, "cross_entropy.label_smoothing", 0.1);

  // KD's use: log-probabilities of the student against probabilities of the teacher, both checked.
  out.push_back({"kl_div.log_softmax_vs_softmax", "kl_div",
                 [](Generator& g) { return Inputs{gc_randn({3, 4}, g), gc_randn({3, 4}, g)}; },
                 [](const Inputs& in) { return kl_div(log_softmax(in[0], 1), softmax(in[1], 1)); }});
  // Zero target entries contribute nothing; only the input is checked (t log t has no two-sided
  // finite difference at t = 0).
  out.push_back({"kl_div.zero_targets", "kl_div",
                 [](Generator& g) {
                   return Inputs{gc_randn({2, 3}, g),
                                 Tensor::from_vector({0.5, 0.0, 0.5, 0.0, 1.0, 0.0}, {2, 3}, DType::F64)};
                 },
                 [](const Inputs& in) { return kl_div(in[0], in[1]); }});

  out.push_back({"mse_loss.both", "mse_loss",
                 [](Generator& g) { return Inputs{gc_randn({3, 4}, g), gc_randn({3, 4}, g)}; },
                 [](const Inputs& in) { return mse_loss(in[0], in[1]); }});

  // Scaled so that both branches (|d| < beta and beyond) are hit, at two betas.
  for (double beta : {1.0, 0.3}) {
    out.push_back({beta == 1.0 ? "smooth_l1_loss.beta1" : "smooth_l1_loss.beta0_3", "smooth_l1_loss",
                   [](Generator& g) { return Inputs{gc_randn({3, 5}, g), gc_randn({3, 5}, g)}; },
                   [beta](const Inputs& in) { return smooth_l1_loss(in[0], in[1], beta); }});
  }

  // A generator seeded inside fn, so every finite-difference evaluation draws the same mask.
  out.push_back({"dropout.p0_3", "dropout", [](Generator& g) { return Inputs{gc_randn({4, 5}, g)}; },
                 [](const Inputs& in) {
                   Generator gen(7);
                   return dropout(in[0], 0.3, true, gen);
                 }});
}

}  // namespace retort
