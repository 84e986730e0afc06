// RELAX (Grathwohl et al., ICLR 2018) for SoKD's discrete policy choices: an unbiased estimate of the
// gradient of E[f(b)] with respect to the sub-policy logits w [S] (b ~ Categorical(softmax(w))) and the
// op probabilities P [S, 2] (o ~ Bernoulli(P), every flag of every sub-policy), with a learned control
// variate c_φ — the reference's QFunc (methods.md §3.1.4, DADA's estimator):
//
//   ĝ = (f(b) − c(x̃)) ∇α log p(b, o) + ∇α c(x) − ∇α c(x̃)
//
//   z_w = log softmax(w) + gumbel,  b = argmax z_w          x_w = softmax(z_w / τ)        [S]
//   z_P = logit(P) + logistic noise, o = [z_P > 0]           x_P = sigmoid(z_P / τ)        [S, 2]
//   z̃ = the same noise conditioned on (b, o) (fresh uniforms v): z̃_P = logit(P) + logit(v'),
//       v' = o ? 1 − P + vP : v(1 − P);  z̃_w[b] = −log(−log v_b),
//       z̃_w[s] = −log(−log v_s / θ_s − log v_b) for s ≠ b, θ = softmax(w)
//   c(x) = W2 · tanh(W1 (2x − 1) + b1) + b2,  x = [x_P[s,0], x_P[s,1], x_w[s]] for s = 0..S−1 (3S inputs)
//
// and the control variate's own gradient, ∇φ of the estimator's variance proxy mean(ĝ²) over the 3S
// entries (RELAX's objective). Everything here runs on the host in float64, by hand: the gradients of
// c with respect to α through both relaxations, and the mixed second derivatives ∇φ(∇α c · λ) that the
// variance's gradient needs (tests/distill/test_sokd_relax.cpp checks each by finite differences and
// the estimator's unbiasedness by enumeration).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "engine/generator.h"

namespace retort {

// One draw as RELAX sees it. Flags and uniforms of every sub-policy, indexed j = 2s + i as P's layout.
struct RelaxLatents {
  int64_t b = 0;                    // the sub-policy, argmax(log softmax(w) + gumbel)
  std::vector<double> gumbel;       // [S]
  std::vector<double> v_w;          // [S] uniforms in (0, 1) for z̃_w
  std::vector<double> flag_noise;   // [2S] logistic noise; flag_j = logit(P_j) + flag_noise_j > 0
  std::vector<double> v_p;          // [2S] uniforms in (0, 1) for z̃_P
};

// The control variate c_φ: Linear(inputs → hidden), tanh, Linear(hidden → 1), row-major as PyTorch's
// Linear (w1 [hidden, inputs], b1 [hidden], w2 [hidden] (the [1, hidden] weight), b2).
struct RelaxControlVariate {
  int64_t inputs = 0, hidden = 0;
  std::vector<double> w1, b1, w2;
  double b2 = 0;
  double value(const std::vector<double>& x) const;
};

struct RelaxEstimate {
  std::vector<double> grad_p;    // [2S]
  std::vector<double> grad_w;    // [S]
  // ∇φ mean(ĝ²), in the order w1, b1, w2, b2 (inputs·hidden + hidden + hidden + 1 values).
  std::vector<double> grad_phi;
  double c_x = 0, c_x_tilde = 0;  // c(x), c(x̃)
  double variance = 0;            // mean(ĝ²)
};

// The flags o_j of every sub-policy's ops for this draw.
std::vector<bool> relax_flags(const std::vector<double>& p, const RelaxLatents& lat);
// x (relaxed = false) or x̃ (true), the control variate's 3S inputs.
std::vector<double> relax_inputs(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat,
                                 double tau, bool tilde);
// log p(b, o) = log softmax(w)_b + Σ_j log Bernoulli(o_j; P_j).
double relax_log_prob(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat);
// ∇α c(x(α)) (tilde = false) or ∇α c(x̃(α)) (true), as (grad P [2S], grad w [S]).
std::pair<std::vector<double>, std::vector<double>> relax_control_gradient(const std::vector<double>& p,
                                                                           const std::vector<double>& w,
                                                                           const RelaxLatents& lat, double tau,
                                                                           const RelaxControlVariate& c, bool tilde);
// The estimate for the loss value f of this draw.
RelaxEstimate relax_estimate(const std::vector<double>& p, const std::vector<double>& w, const RelaxLatents& lat,
                             double tau, const RelaxControlVariate& c, double f);

// The latents of one draw: b and the flags of sub-policy b given (from the draw that picked them:
// gumbel [S], the two flags' logistic noise), the other sub-policies' flag noise and all the
// conditional uniforms from gen.
RelaxLatents relax_latents(int64_t b, const std::vector<double>& gumbel, const std::array<double, 2>& b_noise,
                           Generator& gen);

}  // namespace retort
