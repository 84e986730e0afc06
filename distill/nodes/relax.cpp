// RELAX for SoKD's sub-policy choice and op flags; see relax.h for the estimator and its notation.
#include "distill/nodes/relax.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace retort {

namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double logit(double p) { return std::log(p) - std::log1p(-p); }

// Validates the inputs; returns the number of sub-policies S.
size_t check(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat) {
  const size_t s = w.size();
  RETORT_CHECK(s >= 1 && p.size() == 2 * s && lat.gumbel.size() == s && lat.v_w.size() == s &&
                   lat.flag_noise.size() == 2 * s && lat.v_p.size() == 2 * s && lat.b >= 0 &&
                   static_cast<size_t>(lat.b) < s,
               "relax: inconsistent sizes (", s, " sub-policies, P ", p.size(), ", gumbel ", lat.gumbel.size(),
               ", flag noise ", lat.flag_noise.size(), ", b ", lat.b, ")");
  for (size_t j = 0; j < p.size(); ++j)
    RETORT_CHECK(p[j] > 0 && p[j] < 1, "relax: op probability ", j, " is ", p[j], ", expected inside (0, 1)");
  for (size_t k = 0; k < s; ++k) RETORT_CHECK(std::isfinite(w[k]), "relax: sub-policy logit ", k, " is ", w[k]);
  return s;
}

std::vector<double> softmax(const std::vector<double>& z, double scale) {
  double m = -INFINITY;
  for (double v : z) m = std::max(m, v * scale);
  std::vector<double> out(z.size());
  double sum = 0;
  for (size_t i = 0; i < z.size(); ++i) sum += out[i] = std::exp(z[i] * scale - m);
  for (double& v : out) v /= sum;
  return out;
}

// Everything the relaxations give, with the derivatives of each z with respect to its parameter.
struct Relaxed {
  std::vector<double> theta;  // softmax(w)
  std::vector<double> x;      // 3S inputs
  // P side: dz/dP per flag. w side (plain): z = log θ + gumbel, so dz_s/dw_k = δ_sk − θ_k (no storage);
  // (tilde): dz̃_s/dθ_s, 0 at b.
  std::vector<double> dz_dp;
  std::vector<double> dz_dtheta;
};

Relaxed relax(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat, double tau,
              bool tilde) {
  const size_t s = check(p, w, lat);
  Relaxed r;
  r.theta = softmax(w, 1.0);
  r.x.assign(3 * s, 0.0);
  r.dz_dp.assign(2 * s, 0.0);
  r.dz_dtheta.assign(s, 0.0);
  const std::vector<bool> o = relax_flags(p, lat);
  for (size_t j = 0; j < 2 * s; ++j) {
    const double pj = p[j], lj = logit(pj), inv = 1.0 / (pj * (1.0 - pj));
    double z = lj + lat.flag_noise[j], dz = inv;
    if (tilde) {
      const double v = lat.v_p[j];
      const double vp = o[j] ? v * pj + 1.0 - pj : v * (1.0 - pj);
      z = lj + logit(vp);
      dz = inv + (1.0 / vp + 1.0 / (1.0 - vp)) * (o[j] ? v - 1.0 : -v);
    }
    r.x[3 * (j / 2) + j % 2] = sigmoid(z / tau);
    r.dz_dp[j] = dz;
  }
  std::vector<double> z(s);
  const size_t b = static_cast<size_t>(lat.b);
  for (size_t k = 0; k < s; ++k) {
    if (!tilde) {
      z[k] = std::log(r.theta[k]) + lat.gumbel[k];
    } else if (k == b) {
      z[k] = -std::log(-std::log(lat.v_w[b]));
    } else {
      const double a = -std::log(lat.v_w[k]) / r.theta[k] - std::log(lat.v_w[b]);
      z[k] = -std::log(a);
      r.dz_dtheta[k] = -std::log(lat.v_w[k]) / (a * r.theta[k] * r.theta[k]);
    }
  }
  const std::vector<double> xw = softmax(z, 1.0 / tau);
  for (size_t k = 0; k < s; ++k) r.x[3 * k + 2] = xw[k];
  return r;
}

// The tangent of x for the parameter tangent (dp [2S], dw [S]) (forward mode: J λ).
std::vector<double> x_tangent(const Relaxed& r, double tau, bool tilde,
                              const std::vector<double>& dp, const std::vector<double>& dw) {
  const size_t s = dw.size();
  std::vector<double> dx(3 * s, 0.0);
  for (size_t j = 0; j < 2 * s; ++j) {
    const double x = r.x[3 * (j / 2) + j % 2];
    dx[3 * (j / 2) + j % 2] = x * (1.0 - x) / tau * r.dz_dp[j] * dp[j];
  }
  double theta_dw = 0;
  for (size_t k = 0; k < s; ++k) theta_dw += r.theta[k] * dw[k];
  std::vector<double> dz(s);
  for (size_t k = 0; k < s; ++k)
    dz[k] = tilde ? r.dz_dtheta[k] * r.theta[k] * (dw[k] - theta_dw) : dw[k] - theta_dw;
  double xdz = 0;
  for (size_t k = 0; k < s; ++k) xdz += r.x[3 * k + 2] * dz[k];
  for (size_t k = 0; k < s; ++k) dx[3 * k + 2] = r.x[3 * k + 2] / tau * (dz[k] - xdz);
  return dx;
}

// The same map transposed (Jᵀ gx): the gradient with respect to (P, w) of a scalar whose gradient in x is gx.
std::pair<std::vector<double>, std::vector<double>> x_transpose(const Relaxed& r, double tau, bool tilde,
                                                                const std::vector<double>& gx) {
  const size_t s = r.theta.size();
  std::vector<double> gp(2 * s), gw(s);
  for (size_t j = 0; j < 2 * s; ++j) {
    const size_t i = 3 * (j / 2) + j % 2;
    gp[j] = gx[i] * r.x[i] * (1.0 - r.x[i]) / tau * r.dz_dp[j];
  }
  // dc/dz_k for x_w = softmax(z / τ).
  double xg = 0;
  for (size_t k = 0; k < s; ++k) xg += r.x[3 * k + 2] * gx[3 * k + 2];
  std::vector<double> u(s);
  for (size_t k = 0; k < s; ++k) u[k] = r.x[3 * k + 2] / tau * (gx[3 * k + 2] - xg);
  // Through z (dz_s/dw_k = δ_sk − θ_k) or z̃ (dz̃_s/dw_k = dz̃_s/dθ_s · θ_s (δ_sk − θ_k)).
  std::vector<double> t(s);
  for (size_t k = 0; k < s; ++k) t[k] = tilde ? u[k] * r.dz_dtheta[k] * r.theta[k] : u[k];
  double sum_t = 0;
  for (double v : t) sum_t += v;
  for (size_t k = 0; k < s; ++k) gw[k] = t[k] - r.theta[k] * sum_t;
  return {gp, gw};
}

// The control variate's hidden activations tanh(W1 (2x − 1) + b1) at x.
std::vector<double> hidden_of(const RelaxControlVariate& c, const std::vector<double>& x) {
  RETORT_CHECK(static_cast<int64_t>(x.size()) == c.inputs, "relax: the control variate takes ", c.inputs,
               " inputs, got ", x.size());
  std::vector<double> out(static_cast<size_t>(c.hidden));
  for (int64_t j = 0; j < c.hidden; ++j) {
    double a = c.b1[static_cast<size_t>(j)];
    const double* row = c.w1.data() + j * c.inputs;
    for (int64_t k = 0; k < c.inputs; ++k) a += row[k] * (2.0 * x[static_cast<size_t>(k)] - 1.0);
    out[static_cast<size_t>(j)] = std::tanh(a);
  }
  return out;
}

// ∇x c(x).
std::vector<double> grad_x(const RelaxControlVariate& c, const std::vector<double>& hd) {
  std::vector<double> g(static_cast<size_t>(c.inputs), 0.0);
  for (int64_t j = 0; j < c.hidden; ++j) {
    const double hj = hd[static_cast<size_t>(j)];
    const double coef = 2.0 * c.w2[static_cast<size_t>(j)] * (1.0 - hj * hj);
    const double* row = c.w1.data() + j * c.inputs;
    for (int64_t k = 0; k < c.inputs; ++k) g[static_cast<size_t>(k)] += coef * row[k];
  }
  return g;
}

// out += scale · ∇φ c(x).
void add_grad_phi_value(const RelaxControlVariate& c, const std::vector<double>& x, const std::vector<double>& hd, double scale,
                        std::vector<double>& out) {
  const size_t n1 = c.w1.size(), h = static_cast<size_t>(c.hidden);
  for (size_t j = 0; j < h; ++j) {
    const double hj = hd[j], da = scale * c.w2[j] * (1.0 - hj * hj);
    for (int64_t k = 0; k < c.inputs; ++k) out[j * c.inputs + k] += da * (2.0 * x[static_cast<size_t>(k)] - 1.0);
    out[n1 + j] += da;
    out[n1 + h + j] += scale * hj;
  }
  out[n1 + 2 * h] += scale;
}

// out += scale · ∇φ (∇x c(x) · d).
void add_grad_phi_directional(const RelaxControlVariate& c, const std::vector<double>& x, const std::vector<double>& hd,
                              const std::vector<double>& d, double scale, std::vector<double>& out) {
  const size_t n1 = c.w1.size(), h = static_cast<size_t>(c.hidden);
  for (size_t j = 0; j < h; ++j) {
    const double* row = c.w1.data() + j * c.inputs;
    double e = 0;
    for (int64_t k = 0; k < c.inputs; ++k) e += row[k] * d[static_cast<size_t>(k)];
    const double hj = hd[j], sech2 = 1.0 - hj * hj;
    const double da = scale * (-4.0 * c.w2[j] * e * hj * sech2);
    const double dd = scale * 2.0 * c.w2[j] * sech2;
    for (int64_t k = 0; k < c.inputs; ++k)
      out[j * c.inputs + k] += da * (2.0 * x[static_cast<size_t>(k)] - 1.0) + dd * d[static_cast<size_t>(k)];
    out[n1 + j] += da;
    out[n1 + h + j] += scale * 2.0 * sech2 * e;
  }
}

}  // namespace

double RelaxControlVariate::value(const std::vector<double>& x) const {
  const std::vector<double> hd = hidden_of(*this, x);
  double out = b2;
  for (int64_t j = 0; j < hidden; ++j) out += w2[static_cast<size_t>(j)] * hd[static_cast<size_t>(j)];
  return out;
}

std::vector<bool> relax_flags(const std::vector<double>& p, const RelaxLatents& lat) {
  std::vector<bool> o(p.size());
  for (size_t j = 0; j < p.size(); ++j) o[j] = logit(p[j]) + lat.flag_noise[j] > 0;
  return o;
}

std::vector<double> relax_inputs(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat,
                                 double tau, bool tilde) {
  return relax(p, w, lat, tau, tilde).x;
}

double relax_log_prob(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat) {
  check(p, w, lat);
  const std::vector<double> theta = softmax(w, 1.0);
  const std::vector<bool> o = relax_flags(p, lat);
  double lp = std::log(theta[static_cast<size_t>(lat.b)]);
  for (size_t j = 0; j < p.size(); ++j) lp += o[j] ? std::log(p[j]) : std::log1p(-p[j]);
  return lp;
}

std::pair<std::vector<double>, std::vector<double>> relax_control_gradient(const std::vector<double>& p,
                                                                           const std::vector<double>& w,
                                                                           const RelaxLatents& lat, double tau,
                                                                           const RelaxControlVariate& c, bool tilde) {
  const Relaxed r = relax(p, w, lat, tau, tilde);
  return x_transpose(r, tau, tilde, grad_x(c, hidden_of(c, r.x)));
}

RelaxEstimate relax_estimate(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat,
                             double tau, const RelaxControlVariate& c, double f) {
  const size_t s = check(p, w, lat);
  RETORT_CHECK(c.inputs == static_cast<int64_t>(3 * s), "relax: the control variate takes ", c.inputs,
               " inputs, the policy has ", s, " sub-policies (", 3 * s, " inputs)");
  RETORT_CHECK(std::isfinite(f), "relax: the loss value is ", f);
  const Relaxed rx = relax(p, w, lat, tau, false), rt = relax(p, w, lat, tau, true);
  const std::vector<double> hx = hidden_of(c, rx.x), ht = hidden_of(c, rt.x);
  RelaxEstimate e;
  e.c_x = c.value(rx.x);
  e.c_x_tilde = c.value(rt.x);
  const auto [gpx, gwx] = x_transpose(rx, tau, false, grad_x(c, hx));
  const auto [gpt, gwt] = x_transpose(rt, tau, true, grad_x(c, ht));
  // The score ∇α log p(b, o).
  const std::vector<bool> o = relax_flags(p, lat);
  std::vector<double> sp(2 * s), sw(s);
  for (size_t j = 0; j < 2 * s; ++j) sp[j] = o[j] ? 1.0 / p[j] : -1.0 / (1.0 - p[j]);
  for (size_t k = 0; k < s; ++k) sw[k] = (static_cast<int64_t>(k) == lat.b ? 1.0 : 0.0) - rx.theta[k];
  const double diff = f - e.c_x_tilde;
  e.grad_p.resize(2 * s);
  e.grad_w.resize(s);
  double sq = 0;
  for (size_t j = 0; j < 2 * s; ++j) sq += std::pow(e.grad_p[j] = diff * sp[j] + gpx[j] - gpt[j], 2);
  for (size_t k = 0; k < s; ++k) sq += std::pow(e.grad_w[k] = diff * sw[k] + gwx[k] - gwt[k], 2);
  const double n = static_cast<double>(3 * s);
  e.variance = sq / n;
  // ∇φ mean(ĝ²) = ∇φ Σ λ·ĝ with λ = 2ĝ/n held fixed:
  //   λ·ĝ = (f − c(x̃)) (λ·s) + ∇x c(x)·(J_x λ) − ∇x c(x̃)·(J_x̃ λ).
  std::vector<double> lp(2 * s), lw(s);
  double ls = 0;
  for (size_t j = 0; j < 2 * s; ++j) ls += sp[j] * (lp[j] = 2.0 * e.grad_p[j] / n);
  for (size_t k = 0; k < s; ++k) ls += sw[k] * (lw[k] = 2.0 * e.grad_w[k] / n);
  e.grad_phi.assign(c.w1.size() + 2 * static_cast<size_t>(c.hidden) + 1, 0.0);
  add_grad_phi_value(c, rt.x, ht, -ls, e.grad_phi);
  add_grad_phi_directional(c, rx.x, hx, x_tangent(rx, tau, false, lp, lw), 1.0, e.grad_phi);
  add_grad_phi_directional(c, rt.x, ht, x_tangent(rt, tau, true, lp, lw), -1.0, e.grad_phi);
  return e;
}

RelaxLatents relax_latents(int64_t b, const std::vector<double>& gumbel, const std::array<double, 2>& b_noise,
                           Generator& gen) {
  const size_t s = gumbel.size();
  RETORT_CHECK(b >= 0 && static_cast<size_t>(b) < s, "relax: sub-policy ", b, " of ", s);
  RelaxLatents lat;
  lat.b = b;
  lat.gumbel = gumbel;
  auto open_uniform = [&] { return std::clamp(gen.uniform(), 1e-12, 1.0 - 1e-12); };
  lat.flag_noise.resize(2 * s);
  for (size_t j = 0; j < 2 * s; ++j) {
    if (j / 2 == static_cast<size_t>(b)) {
      lat.flag_noise[j] = b_noise[j % 2];
    } else {
      const double u = open_uniform();
      lat.flag_noise[j] = std::log(u) - std::log1p(-u);
    }
  }
  lat.v_w.resize(s);
  for (double& v : lat.v_w) v = open_uniform();
  lat.v_p.resize(2 * s);
  for (double& v : lat.v_p) v = open_uniform();
  return lat;
}

}  // namespace retort
