// RELAX for SoKD's policy (distill/nodes/relax.h): every hand-written derivative against float64 finite
// differences — the score, ∇α of the control variate through both relaxations, ∇φ of the variance
// proxy — and the estimator itself: its mean over many draws equals the exact gradient of E[f]
// (enumerated over every sub-policy and flag) whatever the control variate, and training the control
// variate on its own gradient lowers the estimator's variance.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "distill/nodes/relax.h"
#include "engine/error.h"

using namespace retort;

namespace {

constexpr double kTau = 0.5;

RelaxControlVariate random_control(int64_t inputs, int64_t hidden, Generator& g, double scale = 0.5) {
  RelaxControlVariate c;
  c.inputs = inputs;
  c.hidden = hidden;
  for (int64_t i = 0; i < inputs * hidden; ++i) c.w1.push_back(g.uniform(-scale, scale));
  for (int64_t i = 0; i < hidden; ++i) c.b1.push_back(g.uniform(-scale, scale));
  for (int64_t i = 0; i < hidden; ++i) c.w2.push_back(g.uniform(-scale, scale));
  c.b2 = g.uniform(-scale, scale);
  return c;
}

// A draw the way SoKD makes one: Gumbel-max over log softmax(w), logistic noise for sub-policy b's flags.
RelaxLatents sample(const std::vector<double>& w, Generator& g) {
  std::vector<double> gumbel(w.size());
  int64_t b = 0;
  for (size_t k = 0; k < w.size(); ++k) {
    gumbel[k] = -std::log(-std::log(std::clamp(g.uniform(), 1e-300, 1.0 - 1e-16)));
    if (w[k] + gumbel[k] > w[static_cast<size_t>(b)] + gumbel[static_cast<size_t>(b)]) b = static_cast<int64_t>(k);
  }
  std::array<double, 2> noise;
  for (double& n : noise) {
    const double u = std::clamp(g.uniform(), 1e-12, 1.0 - 1e-12);
    n = std::log(u) - std::log1p(-u);
  }
  return relax_latents(b, gumbel, noise, g);
}

struct Policy {
  std::vector<double> p, w;
};

Policy random_policy(size_t s, Generator& g) {
  Policy out;
  for (size_t j = 0; j < 2 * s; ++j) out.p.push_back(g.uniform(0.2, 0.8));
  for (size_t k = 0; k < s; ++k) out.w.push_back(g.uniform(-1.0, 1.0));
  return out;
}

// Central differences of f with respect to every entry of v (changed in place and restored).
std::vector<double> numeric_gradient(std::vector<double>& v, const std::function<double()>& f, double eps = 1e-6) {
  std::vector<double> out;
  for (double& x : v) {
    const double keep = x;
    x = keep + eps;
    const double hi = f();
    x = keep - eps;
    const double lo = f();
    x = keep;
    out.push_back((hi - lo) / (2 * eps));
  }
  return out;
}

void expect_near_all(const std::vector<double>& a, const std::vector<double>& b, double tol, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], tol * (1.0 + std::abs(b[i]))) << what << " [" << i << "]";
}

}  // namespace

TEST(RelaxEstimator, ScoreIsTheGradientOfTheLogProbability) {
  Generator g(1);
  for (int trial = 0; trial < 4; ++trial) {
    Policy s = random_policy(5, g);
    const RelaxLatents lat = sample(s.w, g);
    RelaxControlVariate c = random_control(15, 4, g);
    std::fill(c.w2.begin(), c.w2.end(), 0.0);  // c ≡ b2: the estimate is (f − b2) · score
    const double f = 1.7;
    const RelaxEstimate e = relax_estimate(s.p, s.w, lat, kTau, c, f);
    std::vector<double> sp, sw;
    for (double x : e.grad_p) sp.push_back(x / (f - c.b2));
    for (double x : e.grad_w) sw.push_back(x / (f - c.b2));
    const auto log_prob = [&] { return relax_log_prob(s.p, s.w, lat); };
    expect_near_all(sp, numeric_gradient(s.p, log_prob), 1e-6, "score P");
    expect_near_all(sw, numeric_gradient(s.w, log_prob), 1e-6, "score w");
    // Every flag counts: rows of sub-policies not drawn get their Bernoulli score too.
    for (size_t j = 0; j < sp.size(); ++j) EXPECT_NE(sp[j], 0.0) << j;
  }
}

TEST(RelaxEstimator, ControlVariateGradientThroughBothRelaxations) {
  Generator g(2);
  for (bool tilde : {false, true}) {
    for (int trial = 0; trial < 3; ++trial) {
      Policy s = random_policy(4, g);
      const RelaxLatents lat = sample(s.w, g);
      const RelaxControlVariate c = random_control(12, 6, g, 1.0);
      const auto [gp, gw] = relax_control_gradient(s.p, s.w, lat, kTau, c, tilde);
      const auto value = [&] { return c.value(relax_inputs(s.p, s.w, lat, kTau, tilde)); };
      expect_near_all(gp, numeric_gradient(s.p, value), 1e-5, tilde ? "dc(x~)/dP" : "dc(x)/dP");
      expect_near_all(gw, numeric_gradient(s.w, value), 1e-5, tilde ? "dc(x~)/dw" : "dc(x)/dw");
    }
  }
}

TEST(RelaxEstimator, TheConditionalRelaxationAgreesWithTheDraw) {
  // z̃ is the noise conditioned on the draw: its argmax is b and its flags are the drawn ones.
  Generator g(3);
  for (int trial = 0; trial < 50; ++trial) {
    Policy s = random_policy(6, g);
    const RelaxLatents lat = sample(s.w, g);
    const std::vector<double> xt = relax_inputs(s.p, s.w, lat, kTau, true);
    const std::vector<bool> o = relax_flags(s.p, lat);
    size_t best = 0;
    for (size_t k = 0; k < 6; ++k)
      if (xt[3 * k + 2] > xt[3 * best + 2]) best = k;
    EXPECT_EQ(static_cast<int64_t>(best), lat.b);
    for (size_t j = 0; j < 12; ++j) EXPECT_EQ(xt[3 * (j / 2) + j % 2] > 0.5, static_cast<bool>(o[j])) << j;
  }
}

TEST(RelaxEstimator, VarianceGradientMatchesFiniteDifferences) {
  Generator g(4);
  for (int trial = 0; trial < 3; ++trial) {
    Policy s = random_policy(3, g);
    const RelaxLatents lat = sample(s.w, g);
    RelaxControlVariate c = random_control(9, 5, g, 1.0);
    const double f = g.uniform(-2.0, 2.0);
    const RelaxEstimate e = relax_estimate(s.p, s.w, lat, kTau, c, f);
    std::vector<double> phi = c.w1;
    phi.insert(phi.end(), c.b1.begin(), c.b1.end());
    phi.insert(phi.end(), c.w2.begin(), c.w2.end());
    phi.push_back(c.b2);
    const auto variance = [&] {
      RelaxControlVariate cc = c;
      size_t k = 0;
      for (double& x : cc.w1) x = phi[k++];
      for (double& x : cc.b1) x = phi[k++];
      for (double& x : cc.w2) x = phi[k++];
      cc.b2 = phi[k];
      return relax_estimate(s.p, s.w, lat, kTau, cc, f).variance;
    };
    expect_near_all(e.grad_phi, numeric_gradient(phi, variance), 1e-5, "d mean(g^2) / d phi");
  }
}

namespace {

// A loss that depends on the drawn sub-policy and its two flags, and its exact expectation.
struct Toy {
  std::vector<double> table;  // [S][2][2]
  double f(const RelaxLatents& lat, const std::vector<double>& p) const {
    const std::vector<bool> o = relax_flags(p, lat);
    const size_t b = static_cast<size_t>(lat.b);
    return table[4 * b + 2 * o[2 * b] + o[2 * b + 1]];
  }
  double expectation(const std::vector<double>& p, const std::vector<double>& w) const {
    double m = -INFINITY, z = 0, e = 0;
    for (double x : w) m = std::max(m, x);
    for (double x : w) z += std::exp(x - m);
    for (size_t b = 0; b < w.size(); ++b)
      for (int o0 = 0; o0 < 2; ++o0)
        for (int o1 = 0; o1 < 2; ++o1)
          e += std::exp(w[b] - m) / z * (o0 ? p[2 * b] : 1 - p[2 * b]) * (o1 ? p[2 * b + 1] : 1 - p[2 * b + 1]) *
               table[4 * b + 2 * o0 + o1];
    return e;
  }
};

}  // namespace

TEST(RelaxEstimator, UnbiasedWhateverTheControlVariate) {
  Generator g(5);
  Policy s = random_policy(3, g);
  Toy toy;
  for (int i = 0; i < 12; ++i) toy.table.push_back(3.0 + g.uniform(-1.0, 1.0));
  const auto exact_p = numeric_gradient(s.p, [&] { return toy.expectation(s.p, s.w); });
  const auto exact_w = numeric_gradient(s.w, [&] { return toy.expectation(s.p, s.w); });
  for (double scale : {0.0, 1.0}) {  // c ≡ 0 (REINFORCE) and a random control variate
    const RelaxControlVariate c = random_control(9, 8, g, scale);
    const int n = 200000;
    std::vector<double> sum(9, 0.0), sum2(9, 0.0);
    for (int i = 0; i < n; ++i) {
      const RelaxLatents lat = sample(s.w, g);
      const RelaxEstimate e = relax_estimate(s.p, s.w, lat, kTau, c, toy.f(lat, s.p));
      for (size_t j = 0; j < 6; ++j) sum[j] += e.grad_p[j], sum2[j] += e.grad_p[j] * e.grad_p[j];
      for (size_t k = 0; k < 3; ++k) sum[6 + k] += e.grad_w[k], sum2[6 + k] += e.grad_w[k] * e.grad_w[k];
    }
    for (size_t j = 0; j < 9; ++j) {
      const double mean = sum[j] / n, se = std::sqrt((sum2[j] / n - mean * mean) / n);
      const double exact = j < 6 ? exact_p[j] : exact_w[j - 6];
      EXPECT_NEAR(mean, exact, 4.5 * se) << "entry " << j << " control scale " << scale << " (se " << se << ")";
    }
  }
}

TEST(RelaxEstimator, TrainingTheControlVariateLowersTheVariance) {
  Generator g(6);
  Policy s = random_policy(3, g);
  Toy toy;
  for (int i = 0; i < 12; ++i) toy.table.push_back(5.0 + g.uniform(-1.0, 1.0));  // a large common offset
  RelaxControlVariate c = random_control(9, 16, g, 0.1);
  auto mean_variance = [&](uint64_t seed) {
    Generator gg(seed);
    double v = 0;
    for (int i = 0; i < 4000; ++i) {
      const RelaxLatents lat = sample(s.w, gg);
      v += relax_estimate(s.p, s.w, lat, kTau, c, toy.f(lat, s.p)).variance;
    }
    return v / 4000;
  };
  const double before = mean_variance(100);
  // Adam on ∇φ mean(ĝ²), one fresh draw per step.
  std::vector<double*> phi;
  for (double& x : c.w1) phi.push_back(&x);
  for (double& x : c.b1) phi.push_back(&x);
  for (double& x : c.w2) phi.push_back(&x);
  phi.push_back(&c.b2);
  std::vector<double> m(phi.size(), 0.0), v(phi.size(), 0.0);
  for (int step = 1; step <= 3000; ++step) {
    const RelaxLatents lat = sample(s.w, g);
    const RelaxEstimate e = relax_estimate(s.p, s.w, lat, kTau, c, toy.f(lat, s.p));
    for (size_t i = 0; i < phi.size(); ++i) {
      m[i] = 0.9 * m[i] + 0.1 * e.grad_phi[i];
      v[i] = 0.999 * v[i] + 0.001 * e.grad_phi[i] * e.grad_phi[i];
      *phi[i] -= 1e-2 * (m[i] / (1 - std::pow(0.9, step))) / (std::sqrt(v[i] / (1 - std::pow(0.999, step))) + 1e-8);
    }
  }
  const double after = mean_variance(100);
  EXPECT_LT(after, 0.5 * before) << "before " << before << " after " << after;
}

TEST(RelaxEstimator, RefusesInconsistentSizes) {
  Generator g(7);
  Policy s = random_policy(3, g);
  const RelaxLatents lat = sample(s.w, g);
  const RelaxControlVariate c = random_control(6, 4, g);  // 6 inputs for 3 sub-policies (needs 9)
  EXPECT_THROW(relax_estimate(s.p, s.w, lat, kTau, c, 1.0), Error);
  Policy q = s;
  q.p[0] = 1.0;  // a probability on the boundary has no logit
  EXPECT_THROW(relax_log_prob(q.p, q.w, lat), Error);
  s.p.pop_back();
  EXPECT_THROW(relax_log_prob(s.p, s.w, lat), Error);
}
