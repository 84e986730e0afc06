// Logit distillation nodes (distill/nodes/logit.h): the identities of methods.md §6 (KD gradient,
// shift invariance, KL = TCKD + (1 − p_g^t)·NCKD, z-score moments and affine invariance), DKD on
// extreme logits against exact references, PyTorch golden values (tools/gen_golden_distill_logit.py)
// in f32 and f64, graph names and input errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "distill/nodes/logit.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/golden.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;
using retort::testing::close_to;
using retort::testing::GoldenFile;

namespace {

Tensor leaf(const Tensor& t) { return t.clone().detach().set_requires_grad(); }

Tensor randn(const Shape& s, Generator& g, double std = 1.0, DType dt = DType::F64) {
  return Tensor::randn(s, g, dt, 0.0, std);
}

Tensor targets_of(std::vector<int64_t> t) {
  const int64_t n = static_cast<int64_t>(t.size());
  return Tensor::from_int64(t, {n});
}

// Row b of a [B, K] tensor as a [1, K] tensor (a batch of one).
Tensor row(const Tensor& z, int64_t b) { return slice(z, 0, b, b + 1).detach(); }

// z with column targets[b] removed from every row b: [B, K-1].
Tensor drop_targets(const Tensor& z, const Tensor& targets) {
  const int64_t nb = z.shape()[0], k = z.shape()[1];
  std::vector<double> v = z.to_vector(), out;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < k; ++j)
      if (j != targets.data<int64_t>()[b]) out.push_back(v[static_cast<size_t>(b * k + j)]);
  return Tensor::from_vector(out, {nb, k - 1}, z.dtype());
}

// [B, 2] rows [T·d_b, 0] where d_b = z_g/T − LSE_{k≠g}(z/T): the binary target/rest logits, so that
// kd_loss on them at temperature T is T² · mean_b of the binary KL, i.e. TCKD.
Tensor binary_logits(const Tensor& z, const Tensor& targets, double t) {
  const int64_t nb = z.shape()[0], k = z.shape()[1];
  const std::vector<double> v = z.to_vector();
  std::vector<double> out;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t g = targets.data<int64_t>()[b];
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t j = 0; j < k; ++j)
      if (j != g) m = std::max(m, v[static_cast<size_t>(b * k + j)] / t);
    for (int64_t j = 0; j < k; ++j)
      if (j != g) s += std::exp(v[static_cast<size_t>(b * k + j)] / t - m);
    out.push_back(t * (v[static_cast<size_t>(b * k + g)] / t - (m + std::log(s))));
    out.push_back(0.0);
  }
  return Tensor::from_vector(out, {nb, 2}, DType::F64);
}

bool all_finite(const Tensor& t) {
  for (double x : t.to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

// ---- KD ------------------------------------------------------------------------------------------------

TEST(KDLoss, StudentGradientIsScaledProbabilityDifference) {
  Generator gen(1);
  for (double t : {1.0, 4.0}) {
    const Tensor zs = leaf(randn({5, 12}, gen, 3.0)), zt = leaf(randn({5, 12}, gen, 3.0));
    kd_loss(zs, zt, t).backward();
    const Tensor ps = softmax(affine(zs.detach(), 1 / t, 0), 1), pt = softmax(affine(zt.detach(), 1 / t, 0), 1);
    const Tensor expected = affine(sub(ps, pt), t / 5.0, 0.0);
    EXPECT_TRUE(close_to("dKD/dz_s T=" + std::to_string(t), zs.grad(), expected, 1e-14, 1e-12));
  }
}

// The same loss composed from engine functions (log_softmax, softmax, kl_div): value and BOTH gradients.
TEST(KDLoss, MatchesComposedEngineFunctions) {
  Generator gen(2);
  for (DType dt : {DType::F64, DType::F32}) {
    const double t = 4.0;
    const Tensor s0 = randn({6, 9}, gen, 2.0, dt), t0 = randn({6, 9}, gen, 2.0, dt);
    const Tensor zs = leaf(s0), zt = leaf(t0), zs2 = leaf(s0), zt2 = leaf(t0);
    const Tensor fused = kd_loss(zs, zt, t);
    const Tensor composed =
        affine(kl_div(log_softmax(affine(zs2, 1 / t, 0), 1), softmax(affine(zt2, 1 / t, 0), 1)), t * t, 0.0);
    const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
    EXPECT_TRUE(close_to("kd value", fused, composed, tol, tol));
    fused.backward();
    composed.backward();
    EXPECT_TRUE(close_to("kd grad student", zs.grad(), zs2.grad(), tol, tol));
    EXPECT_TRUE(close_to("kd grad teacher", zt.grad(), zt2.grad(), tol, tol));
  }
}

TEST(KDLoss, NonNegativeAndZeroUnderShift) {
  Generator gen(3);
  for (int trial = 0; trial < 5; ++trial) {
    const Tensor zs = randn({4, 10}, gen, 4.0), zt = randn({4, 10}, gen, 4.0);
    EXPECT_GT(kd_loss(zs, zt, 1.0 + trial).item(), 0.0);
    // A different constant per row: softmax is invariant to each one.
    const Tensor shift = randn({4, 1}, gen, 50.0);
    EXPECT_NEAR(kd_loss(add(zt, shift), zt, 1.0 + trial).item(), 0.0, 1e-12);
  }
  // 0·log 0 = 0: a teacher whose probabilities underflow to exactly 0 leaves the loss finite.
  const Tensor zt = Tensor::from_vector({0, -2000, 5, 3000, 0, 0}, {2, 3}, DType::F64);
  const Tensor zs = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64);
  const double v = kd_loss(zs, zt, 1.0).item();
  EXPECT_TRUE(std::isfinite(v));
  EXPECT_GE(v, 0.0);
}

TEST(KDLoss, FrozenTeacherGetsNoGradientAndGraphIsOneNode) {
  Generator gen(4);
  const Tensor zs = leaf(randn({3, 5}, gen)), zt = randn({3, 5}, gen);
  const Tensor loss = kd_loss(zs, zt, 2.0);
  const auto names = graph_node_names(loss);
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "KDLossBackward");
  loss.backward();
  EXPECT_TRUE(zs.grad().defined());
  EXPECT_FALSE(zt.grad().defined());
  {
    NoGradGuard ng;
    EXPECT_EQ(kd_loss(zs, zt, 2.0).grad_fn(), nullptr);
  }
}

// ---- DKD -----------------------------------------------------------------------------------------------

// methods.md §6.2: per sample KL(p_t||p_s) = TCKD + (1 − p_g^t)·NCKD; hence DKD with α = 1 and
// β_b = 1 − p_g^t is KD (value and student gradient).
TEST(DKDLoss, DecompositionIdentityAndReductionToKD) {
  Generator gen(5);
  const int64_t nb = 6, k = 15;
  const Tensor y = targets_of({0, 3, 14, 7, 7, 2});
  for (double t : {1.0, 4.0}) {
    const Tensor s0 = randn({nb, k}, gen, 3.0), t0 = randn({nb, k}, gen, 3.0);
    const DKDTerms terms = dkd_terms(s0, t0, y, t);
    std::vector<double> beta;
    for (int64_t b = 0; b < nb; ++b) {
      const double kl = kd_loss(row(s0, b), row(t0, b), t).item() / (t * t);  // a batch of one: T²·KL
      const double pg = terms.teacher_target_prob.at(b);
      EXPECT_NEAR(kl, terms.tckd.at(b) + (1 - pg) * terms.nckd.at(b), 1e-13) << "row " << b << " T=" << t;
      beta.push_back(1 - pg);
    }
    const Tensor zs_a = leaf(s0), zs_b = leaf(s0);
    const Tensor kd = kd_loss(zs_a, t0, t);
    const Tensor dkd = dkd_loss_per_sample_beta(zs_b, t0, y, 1.0, Tensor::from_vector(beta, {nb}, DType::F64), t);
    EXPECT_NEAR(dkd.item(), kd.item(), 1e-10);
    EXPECT_GT(kd.item(), 0.01);  // the comparison is not trivially 0 == 0
    kd.backward();
    dkd.backward();
    EXPECT_TRUE(close_to("student grad DKD(beta=1-p_g) vs KD", zs_b.grad(), zs_a.grad(), 1e-12, 1e-10));
  }
}

TEST(DKDLoss, ScalarBetaEqualsConstantPerSampleBetaAndGraphIsOneNode) {
  Generator gen(6);
  const Tensor y = targets_of({1, 0, 4});
  const Tensor zs = leaf(randn({3, 5}, gen, 2.0)), zt = leaf(randn({3, 5}, gen, 2.0));
  const Tensor a = dkd_loss(zs, zt, y, 1.0, 8.0, 4.0);
  const Tensor b = dkd_loss_per_sample_beta(zs, zt, y, 1.0, Tensor::full({3}, 8.0, DType::F64), 4.0);
  EXPECT_NEAR(a.item(), b.item(), 1e-13);
  EXPECT_EQ(graph_node_names(a).front(), "DKDLossBackward");
  EXPECT_EQ(graph_node_names(b).front(), "DKDLossBackward");
  // dkd_terms reproduces the loss: (T²/B) Σ (α TCKD + β NCKD).
  const DKDTerms terms = dkd_terms(zs.detach(), zt.detach(), y, 4.0);
  double total = 0;
  for (int64_t i = 0; i < 3; ++i) total += terms.tckd.at(i) + 8.0 * terms.nckd.at(i);
  EXPECT_NEAR(a.item(), 16.0 / 3.0 * total, 1e-12);
}

// NCKD is exactly KD over the non-target classes, and TCKD is exactly KD over the binary
// [target, rest] logits; both hold for any logits, and the extreme ones (target 1e4 above the rest,
// where 1 − p_g = 0 in any float type and a ±1000 mask would not mask) must still agree.
TEST(DKDLoss, PartsMatchExactReferencesIncludingExtremeLogits) {
  Generator gen(7);
  const int64_t nb = 4, k = 10;
  const Tensor y = targets_of({2, 9, 0, 5});
  for (double gap : {0.0, 60.0, 1e4}) {
    Tensor zs = randn({nb, k}, gen, 3.0), zt = randn({nb, k}, gen, 3.0);
    for (int64_t b = 0; b < nb; ++b) {
      zt.data<double>()[b * k + y.data<int64_t>()[b]] += gap;
      zs.data<double>()[b * k + y.data<int64_t>()[b]] += gap * 0.5 * static_cast<double>(b % 2);
    }
    for (double t : {1.0, 4.0}) {
      const std::string what = "gap " + std::to_string(gap) + " T " + std::to_string(t);
      const double nckd = dkd_loss(zs, zt, y, 0.0, 1.0, t).item();
      const double nckd_ref = kd_loss(drop_targets(zs, y), drop_targets(zt, y), t).item();
      EXPECT_NEAR(nckd, nckd_ref, 1e-12 * std::max(1.0, std::abs(nckd_ref))) << what;
      const double tckd = dkd_loss(zs, zt, y, 1.0, 0.0, t).item();
      const double tckd_ref = kd_loss(binary_logits(zs, y, t), binary_logits(zt, y, t), t).item();
      EXPECT_NEAR(tckd, tckd_ref, 1e-10 * std::max(1.0, std::abs(tckd_ref))) << what;
      EXPECT_TRUE(std::isfinite(nckd) && std::isfinite(tckd)) << what;
    }
  }
}

TEST(DKDLoss, FiniteForExtremeLogitsInF32AndF64) {
  for (DType dt : {DType::F32, DType::F64}) {
    Generator gen(8);
    const Tensor y = targets_of({0, 1, 2, 3, 4, 5, 6, 7});
    // Uniform in ±1e4, plus rows where one network's target dominates by 1e4 and the other's is lowest.
    Tensor zs = Tensor::rand({8, 20}, gen, dt, -1e4, 1e4), zt = Tensor::rand({8, 20}, gen, dt, -1e4, 1e4);
    auto set = [&](Tensor& z, int64_t b, int64_t j, double v) {
      if (dt == DType::F32) z.data<float>()[b * 20 + j] = static_cast<float>(v);
      else z.data<double>()[b * 20 + j] = v;
    };
    set(zt, 0, 0, 3e4);
    set(zs, 0, 0, -3e4);
    set(zs, 1, 1, 3e4);
    set(zt, 1, 1, -3e4);
    set(zs, 2, 2, 3e4);
    set(zt, 2, 2, 3e4);
    for (double t : {1.0, 4.0}) {
      const Tensor a = leaf(zs), b = leaf(zt);
      const Tensor loss = dkd_loss(a, b, y, 1.0, 8.0, t);
      EXPECT_TRUE(std::isfinite(loss.item())) << dtype_name(dt) << " T=" << t << ": " << loss.item();
      EXPECT_GT(loss.item(), 0.0);
      loss.backward();
      EXPECT_TRUE(all_finite(a.grad())) << dtype_name(dt);
      EXPECT_TRUE(all_finite(b.grad())) << dtype_name(dt);
      const Tensor kd = kd_loss(zs, zt, t);
      EXPECT_TRUE(std::isfinite(kd.item())) << dtype_name(dt);
    }
  }
}

// ---- z-score (LS) --------------------------------------------------------------------------------------

TEST(ZScore, RowsHaveZeroMeanAndUnitUnbiasedStd) {
  Generator gen(9);
  const int64_t k = 100;
  // Rows with different scales and offsets (the LS point: a per-sample temperature).
  Tensor z = add(mul(randn({6, k}, gen), Tensor::from_vector({0.1, 1, 3, 10, 50, 200}, {6, 1}, DType::F64)),
                 Tensor::from_vector({0, 5, -3, 100, -7, 1}, {6, 1}, DType::F64));
  const Tensor out = zscore(z);
  const Tensor m = mean(out, {1}), su = stddev(out, {1}, true), sb = stddev(out, {1}, false);
  for (int64_t b = 0; b < 6; ++b) {
    EXPECT_NEAR(m.at(b), 0.0, 1e-13);
    EXPECT_NEAR(su.at(b), 1.0, 2e-6);  // 1/(1 + eps/σ) with eps = 1e-7, σ >= ~0.1
    EXPECT_NEAR(sb.at(b), std::sqrt(double(k - 1) / double(k)), 2e-6);
  }
  // With eps = 0 the std is exactly 1.
  const Tensor su0 = stddev(zscore(z, 0.0), {1}, true);
  for (int64_t b = 0; b < 6; ++b) EXPECT_NEAR(su0.at(b), 1.0, 1e-13);
  // A constant row maps to zeros, with a finite gradient.
  const Tensor c = leaf(Tensor::full({1, 4}, 3.0, DType::F64));
  const Tensor zc = zscore(c, 0.0);
  for (double v : zc.to_vector()) EXPECT_EQ(v, 0.0);
  sum(mul(zc, Tensor::from_vector({1, 2, 3, 4}, {1, 4}, DType::F64))).backward();
  EXPECT_TRUE(all_finite(c.grad()));
  EXPECT_EQ(graph_node_names(zscore(leaf(z))).front(), "ZScoreBackward");
}

// KD on z-scored logits is invariant to a·z + b (a > 0, here a different a and b per row) of either
// network's logits: exactly with eps = 0, and to the eps/σ effect with the default eps.
TEST(ZScore, KDOnStandardizedLogitsIsAffineInvariant) {
  Generator gen(10);
  const Tensor zs = randn({5, 30}, gen, 2.0), zt = randn({5, 30}, gen, 4.0);
  const Tensor a = Tensor::from_vector({0.5, 2, 7, 0.01, 30}, {5, 1}, DType::F64);
  const Tensor b = Tensor::from_vector({3, -10, 0, 100, -1}, {5, 1}, DType::F64);
  const Tensor zs2 = add(mul(zs, a), b), zt2 = add(mul(zt, a), b);
  for (double eps : {0.0, 1e-7}) {
    const double tol = eps == 0.0 ? 1e-12 : 1e-5;
    const double base = kd_loss(zscore(zs, eps), zscore(zt, eps), 2.0).item();
    EXPECT_GT(base, 0.01);
    EXPECT_NEAR(kd_loss(zscore(zs2, eps), zscore(zt, eps), 2.0).item(), base, tol * base) << "student, eps " << eps;
    EXPECT_NEAR(kd_loss(zscore(zs, eps), zscore(zt2, eps), 2.0).item(), base, tol * base) << "teacher, eps " << eps;
    // Without the z-score, rescaling changes the loss: the test above is not vacuous.
    EXPECT_GT(std::abs(kd_loss(zs2, zt, 2.0).item() - kd_loss(zs, zt, 2.0).item()), 0.01);
  }
}

// ---- PyTorch golden values -----------------------------------------------------------------------------

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_distill_logit.safetensors");
  return g;
}

using LossFn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;

// Rebuilds case `name` in dtype dt, runs fn(student, teacher, targets), backpropagates the stored
// upstream and compares the value and both logits' gradients with PyTorch's (float64) numbers.
void check_golden(const std::string& name, DType dt, const LossFn& fn) {
  const GoldenFile& g = golden();
  SCOPED_TRACE(name + " " + dtype_name(dt));
  const double atol = dt == DType::F64 ? 1e-11 : 2e-5, rtol = dt == DType::F64 ? 1e-9 : 1e-4;
  const Tensor zs = leaf(g[name + "/in0"].to(dt));
  const bool has_teacher = g.has(name + "/in1");
  const Tensor zt = has_teacher ? leaf(g[name + "/in1"].to(dt)) : Tensor();
  const Tensor y = g.has(name + "/in2") ? g[name + "/in2"] : Tensor();
  const Tensor out = fn(zs, zt, y);
  EXPECT_TRUE(close_to(name + "/out", out, g[name + "/out"], atol, rtol));
  out.backward(g[name + "/upstream"].to(dt));
  EXPECT_TRUE(close_to(name + "/grad_in0", zs.grad(), g[name + "/grad_in0"], atol, rtol));
  if (has_teacher) {
    EXPECT_TRUE(close_to(name + "/grad_in1", zt.grad(), g[name + "/grad_in1"], atol, rtol));
  }
}

}  // namespace

TEST(GoldenDistillLogit, KD) {
  for (DType dt : {DType::F64, DType::F32}) {
    check_golden("kd_t4", dt, [](const Tensor& s, const Tensor& t, const Tensor&) { return kd_loss(s, t, 4.0); });
    check_golden("kd_t1_k100", dt, [](const Tensor& s, const Tensor& t, const Tensor&) { return kd_loss(s, t, 1.0); });
  }
}

TEST(GoldenDistillLogit, DKD) {
  for (DType dt : {DType::F64, DType::F32}) {
    check_golden("dkd_a1_b8_t4", dt,
                 [](const Tensor& s, const Tensor& t, const Tensor& y) { return dkd_loss(s, t, y, 1.0, 8.0, 4.0); });
    check_golden("dkd_a2_b05_t1_k50", dt,
                 [](const Tensor& s, const Tensor& t, const Tensor& y) { return dkd_loss(s, t, y, 2.0, 0.5, 1.0); });
  }
}

TEST(GoldenDistillLogit, ZScoreAndLSCompositions) {
  for (DType dt : {DType::F64, DType::F32}) {
    check_golden("zscore", dt, [](const Tensor& z, const Tensor&, const Tensor&) { return zscore(z); });
    check_golden("kd_ls_t2", dt,
                 [](const Tensor& s, const Tensor& t, const Tensor&) { return kd_loss(zscore(s), zscore(t), 2.0); });
    check_golden("dkd_ls_a9_b72_t2", dt, [](const Tensor& s, const Tensor& t, const Tensor& y) {
      return dkd_loss(zscore(s), zscore(t), y, 9.0, 72.0, 2.0);
    });
  }
}

TEST(GoldenDistillLogit, GenerousTeacher) {
  for (DType dt : {DType::F64, DType::F32}) {
    check_golden("generous_k2_all", dt, [](const Tensor& g, const Tensor& s, const Tensor& y) {
      return generous_teacher_loss(g, s, y, 2.0, 0.0, false);
    });
    check_golden("generous_k3_tckd05_teacher_correct", dt, [](const Tensor& g, const Tensor& s, const Tensor& y) {
      return generous_teacher_loss(g, s, y, 3.0, 0.5, true);
    });
    check_golden("generous_k2_standard_std_tckd025", dt, [](const Tensor& g, const Tensor& s, const Tensor& y) {
      return generous_teacher_loss(g, s, y, 2.0, 0.25, false, /*standard_std=*/true);
    });
  }
}

// The Generous Teacher loss is DKD+LS's NCKD with TCKD weighted by tckd_weight; with the teacher-correct
// selection, a row the standard teacher gets wrong contributes nothing (but still counts in the mean),
// and the loss keeps LS's invariance to an affine rescaling of either network's logits.
TEST(GenerousTeacherLoss, IsMaskedNonTargetDKDOnZScoredLogitsAndAffineInvariant) {
  Generator gen(11);
  const int64_t nb = 6, k = 12;
  const Tensor zg = randn({nb, k}, gen, 2.0);
  Tensor zs = randn({nb, k}, gen, 2.0);
  const Tensor y = targets_of({1, 4, 7, 0, 11, 5});
  for (int64_t b : {0, 3, 4}) zs.data<double>()[b * k + y.data<int64_t>()[b]] += 10.0;  // right on 0, 3, 4
  for (int64_t b : {1, 2, 5}) zs.data<double>()[b * k + (y.data<int64_t>()[b] + 1) % k] += 10.0;  // wrong

  const Tensor mask = correct_prediction_mask(zs, y);
  EXPECT_TRUE(close_to("mask", mask, Tensor::from_vector({1.0, 0, 0, 1, 1, 0}, {nb}, DType::F64), 0, 0));

  const double all = generous_teacher_loss(zg, zs, y, 2.0, 0.0, false).item();
  EXPECT_NEAR(all, dkd_loss(zscore(zg), zscore(zs), y, 0.0, 1.0, 2.0).item(), 1e-12 * all);
  const DKDTerms parts = dkd_terms(zscore(zg), zscore(zs), y, 2.0);
  double want_masked = 0, want_tckd = 0;
  for (int64_t b = 0; b < nb; ++b) {
    want_masked += mask.data<double>()[b] * parts.nckd.data<double>()[b];
    want_tckd += parts.tckd.data<double>()[b];
  }
  const double scale = 4.0 / static_cast<double>(nb);  // k² / B
  const double masked = generous_teacher_loss(zg, zs, y, 2.0, 0.0, true).item();
  EXPECT_NEAR(masked, scale * want_masked, 1e-12);
  EXPECT_LT(masked, all);
  EXPECT_NEAR(generous_teacher_loss(zg, zs, y, 2.0, 0.5, true).item(), scale * (want_masked + 0.5 * want_tckd), 1e-12);

  const Tensor zg2 = add(mul(zg, Tensor::scalar(3.5, DType::F64)), Tensor::scalar(-2.0, DType::F64));
  const Tensor zs2 = add(mul(zs, Tensor::scalar(0.25, DType::F64)), Tensor::scalar(7.0, DType::F64));
  EXPECT_NEAR(generous_teacher_loss(zg2, zs2, y, 2.0, 0.5, true).item(),
              generous_teacher_loss(zg, zs, y, 2.0, 0.5, true).item(), 1e-6);  // eps 1e-7 on σ: not exact

  // The network being trained gets the gradient; a frozen standard teacher gets none, and rows it gets
  // wrong give the generous teacher's NCKD no gradient (TCKD off).
  const Tensor g = leaf(zg);
  generous_teacher_loss(g, zs, y, 2.0, 0.0, true).backward();
  for (int64_t b : {1, 2, 5})
    for (int64_t j = 0; j < k; ++j) EXPECT_EQ(g.grad().data<double>()[b * k + j], 0.0) << "row " << b;
  double row0 = 0;
  for (int64_t j = 0; j < k; ++j) row0 += std::abs(g.grad().data<double>()[j]);
  EXPECT_GT(row0, 1e-6);
}

// ---- errors --------------------------------------------------------------------------------------------

TEST(LogitNodeErrors, NameTheFunctionAndTheShapes) {
  const Tensor a = Tensor::zeros({4, 10}), b = Tensor::zeros({4, 11}), y = targets_of({0, 1, 2, 3});
  expect_error([&] { kd_loss(a, b, 4.0); }, {"kd_loss", "f32[4, 10]", "f32[4, 11]"});
  expect_error([&] { kd_loss(a, Tensor::zeros({4, 10}, DType::F64), 4.0); },
               {"kd_loss", "dtype", "f32[4, 10]", "f64[4, 10]"});
  expect_error([&] { kd_loss(Tensor::zeros({40}), Tensor::zeros({40}), 4.0); }, {"kd_loss", "[B, K]", "f32[40]"});
  expect_error([&] { dkd_loss(a, b, y, 1, 8, 4); }, {"dkd_loss", "f32[4, 10]", "f32[4, 11]"});
  expect_error([&] { dkd_loss(a, a, targets_of({0, 1, 10, 3}), 1, 8, 4); },
               {"dkd_loss", "target 10", "index 2", "[0, 10)", "f32[4, 10]"});
  expect_error([&] { dkd_loss(a, a, targets_of({0, -1, 2, 3}), 1, 8, 4); }, {"dkd_loss", "target -1", "[0, 10)"});
  expect_error([&] { dkd_loss(a, a, targets_of({0, 1, 2}), 1, 8, 4); }, {"dkd_loss", "i64[3]", "f32[4, 10]"});
  expect_error([&] { dkd_loss(a, a, Tensor::zeros({4}), 1, 8, 4); }, {"dkd_loss", "targets", "f32[4]"});
  const Tensor one_class = Tensor::zeros({4, 1});
  expect_error([&] { dkd_loss(one_class, one_class, Tensor::from_int64({0, 0, 0, 0}, {4}), 1, 8, 4); },
               {"dkd_loss", "2 classes", "f32[4, 1]"});
  expect_error([&] { dkd_loss_per_sample_beta(a, a, y, 1, Tensor::zeros({3}), 4); },
               {"dkd_loss_per_sample_beta", "beta", "f32[3]", "f32[4, 10]"});
  expect_error([&] { zscore(Tensor::zeros({4, 1})); }, {"zscore", "K >= 2", "f32[4, 1]"});
  expect_error([&] { zscore(Tensor::zeros({2, 3, 4})); }, {"zscore", "[B, K]", "f32[2, 3, 4]"});
  expect_error([&] { zscore(a, -1.0); }, {"zscore", "eps", "-1"});
  expect_error([&] { generous_teacher_loss(a, b, y, 2, 0, false); }, {"generous_teacher_loss", "f32[4, 10]", "f32[4, 11]"});
  expect_error([&] { generous_teacher_loss(a, a, y, 0, 0, false); }, {"generous_teacher_loss", "k", "got 0"});
  expect_error([&] { generous_teacher_loss(a, a, y, 2, -1, false); }, {"generous_teacher_loss", "tckd_weight", "-1"});
  expect_error([&] { generous_teacher_loss(a, a, targets_of({0, 1, 12, 3}), 2, 0, true); },
               {"correct_prediction_mask", "target 12", "[0, 10)"});
}

TEST(LogitNodeErrors, NonPositiveTemperature) {
  const Tensor a = Tensor::zeros({2, 3}), y = targets_of({0, 2});
  expect_error([&] { kd_loss(a, a, 0.0); }, {"kd_loss", "temperature", "got 0", "f32[2, 3]"});
  expect_error([&] { kd_loss(a, a, -2.0); }, {"kd_loss", "temperature", "got -2"});
  expect_error([&] { dkd_loss(a, a, y, 1, 8, 0.0); }, {"dkd_loss", "temperature", "got 0", "f32[2, 3]"});
  expect_error([&] { dkd_loss(a, a, y, 1, 8, std::nan("")); }, {"dkd_loss", "temperature", "nan"});
}
