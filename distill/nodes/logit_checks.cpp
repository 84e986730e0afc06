// Gradchecks for the logit distillation nodes (logit.h), registered through
// register_distill_gradchecks(). Teacher logits are checked too wherever a teacher could be trained
// by distillation; one case per node leaves the teacher frozen to exercise the skipped branch.
#include <cmath>

#include "distill/nodes/logit.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

Tensor targets_for(int64_t b, int64_t k) {
  std::vector<int64_t> t(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) t[static_cast<size_t>(i)] = (3 * i + 1) % k;
  return Tensor::from_int64(t, {b});
}

// Logits with the target class `gap` above every other one: at gap >= 40 and T = 1, 1 − p_g is below
// half an ulp of 1, so a naive log(1 − p_g) is log(0) in float64.
Tensor extreme_logits(Generator& g, const Tensor& targets, int64_t k, double gap) {
  const int64_t b = targets.shape()[0];
  Tensor z = Tensor::randn({b, k}, g, DType::F64);
  double* p = z.data<double>();
  for (int64_t i = 0; i < b; ++i) p[i * k + targets.data<int64_t>()[i]] += gap;
  return z.set_requires_grad();
}

// The forward must stay finite on the extreme inputs; gradcheck only compares derivatives.
Tensor finite_or_throw(const Tensor& loss, const char* what) {
  RETORT_CHECK(std::isfinite(loss.item()), what, ": loss is not finite: ", loss.item());
  return loss;
}
}  // namespace

void add_logit_node_checks(std::vector<GradcheckCase>& out) {
  // ---- KD
  out.push_back({"kd_loss.t4_both", "kd_loss",
                 [](Generator& g) { return Inputs{gc_randn({4, 10}, g, 2.0), gc_randn({4, 10}, g, 2.0)}; },
                 [](const Inputs& in) { return kd_loss(in[0], in[1], 4.0); }});
  out.push_back({"kd_loss.t1_frozen_teacher", "kd_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({3, 7}, g), Tensor::randn({3, 7}, g, DType::F64)};
                 },
                 [](const Inputs& in) { return kd_loss(in[0], in[1], 1.0); }});
  // KD+LS: both networks' logits pass through the z-score, so a wrong ZScoreBackward shows here too.
  out.push_back({"kd_loss.ls_zscore_both", "kd_loss",
                 [](Generator& g) { return Inputs{gc_randn({4, 10}, g, 3.0), gc_randn({4, 10}, g, 3.0)}; },
                 [](const Inputs& in) { return kd_loss(zscore(in[0]), zscore(in[1]), 2.0); }});

  // ---- DKD
  out.push_back({"dkd_loss.a1_b8_t4_both", "dkd_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({4, 10}, g, 2.0), gc_randn({4, 10}, g, 2.0), targets_for(4, 10)};
                 },
                 [](const Inputs& in) { return dkd_loss(in[0], in[1], in[2], 1.0, 8.0, 4.0); }});
  out.push_back({"dkd_loss.t1_frozen_teacher", "dkd_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({3, 5}, g), Tensor::randn({3, 5}, g, DType::F64), targets_for(3, 5)};
                 },
                 [](const Inputs& in) { return dkd_loss(in[0], in[1], in[2], 2.0, 0.5, 1.0); }});
  // p_g ≈ 1 (target 60 above the rest) for the teacher and two of three student rows; the third student
  // row is moderate (gap 2) so that TCKD and its gradient are far from zero.
  out.push_back({"dkd_loss.extreme_target_t1", "dkd_loss",
                 [](Generator& g) {
                   const Tensor y = targets_for(3, 8);
                   Tensor zs = extreme_logits(g, y, 8, 60.0);
                   zs.data<double>()[2 * 8 + y.data<int64_t>()[2]] -= 58.0;
                   return Inputs{zs, extreme_logits(g, y, 8, 60.0), y};
                 },
                 [](const Inputs& in) {
                   return finite_or_throw(dkd_loss(in[0], in[1], in[2], 1.0, 8.0, 1.0), "dkd_loss.extreme_target_t1");
                 }});
  out.push_back({"dkd_loss.ls_zscore_both", "dkd_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({4, 10}, g, 3.0), gc_randn({4, 10}, g, 3.0), targets_for(4, 10)};
                 },
                 [](const Inputs& in) { return dkd_loss(zscore(in[0]), zscore(in[1]), in[2], 1.0, 8.0, 2.0); }});
  out.push_back({"dkd_loss_per_sample_beta.all_inputs", "dkd_loss_per_sample_beta",
                 [](Generator& g) {
                   return Inputs{gc_randn({4, 6}, g, 2.0), gc_randn({4, 6}, g, 2.0), targets_for(4, 6),
                                 gc_uniform({4}, g, 0.0, 2.0)};
                 },
                 [](const Inputs& in) { return dkd_loss_per_sample_beta(in[0], in[1], in[2], 1.5, in[3], 3.0); }});

  // ---- Generous Teacher: z-score on both sides, NCKD kept; the standard teacher's logits get a gradient
  // too (nothing stops a user from training both). Rows 0 and 2 of the standard teacher are made right
  // (target 6 above the rest), rows 1 and 3 wrong (another class 6 above), so the teacher-correct mask
  // is 1, 0, 1, 0 and stays so under the finite-difference steps.
  out.push_back({"generous_teacher_loss.k2_all", "generous_teacher_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({4, 10}, g, 3.0), gc_randn({4, 10}, g, 3.0), targets_for(4, 10)};
                 },
                 [](const Inputs& in) { return generous_teacher_loss(in[0], in[1], in[2], 2.0, 0.0, false); }});
  out.push_back({"generous_teacher_loss.teacher_correct_tckd", "generous_teacher_loss",
                 [](Generator& g) {
                   const Tensor y = targets_for(4, 8);
                   Tensor zt = Tensor::randn({4, 8}, g, DType::F64);
                   for (int64_t b = 0; b < 4; ++b) {
                     const int64_t yb = y.data<int64_t>()[b];
                     zt.data<double>()[b * 8 + (b % 2 == 0 ? yb : (yb + 1) % 8)] += 6.0;
                   }
                   return Inputs{gc_randn({4, 8}, g, 2.0), zt.set_requires_grad(), y};
                 },
                 [](const Inputs& in) { return generous_teacher_loss(in[0], in[1], in[2], 3.0, 0.5, true); }});
  out.push_back({"generous_teacher_loss.standard_std", "generous_teacher_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({4, 10}, g, 3.0), gc_randn({4, 10}, g, 2.0), targets_for(4, 10)};
                 },
                 [](const Inputs& in) { return generous_teacher_loss(in[0], in[1], in[2], 2.0, 0.25, false, true); }});

  // ---- z-score
  out.push_back({"zscore.rows4x10", "zscore", [](Generator& g) { return Inputs{gc_randn({4, 10}, g, 3.0)}; },
                 [](const Inputs& in) { return zscore(in[0]); }});
  // With the default eps, s = σ + eps and σ are indistinguishable to finite differences; a large eps
  // checks that eps sits where the backward assumes (on σ, not on the variance).
  out.push_back({"zscore.large_eps", "zscore", [](Generator& g) { return Inputs{gc_randn({3, 5}, g)}; },
                 [](const Inputs& in) { return zscore(in[0], 0.5); }});
}

std::vector<std::string> logit_node_functions() {
  return {"kd_loss", "dkd_loss", "dkd_loss_per_sample_beta", "zscore", "generous_teacher_loss"};
}

}  // namespace retort
