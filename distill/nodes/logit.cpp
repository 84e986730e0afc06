// Logit distillation nodes (see logit.h for the equations and conventions): KD, DKD and the LS
// z-score, each a fused CPU forward and a hand-written backward recorded as one autograd node.
//
// On a GPU these nodes run on the host: their inputs are [B, K] logits (B*K*4 bytes, 25 KB for
// B = 64, K = 100), copied down and the result copied up through the differentiable Tensor::to(Device),
// so autograd sees the same graph plus two copy nodes and the gradients are those of the CPU nodes.
// The cost is one small synchronising copy per node and step (the loss's item() synchronises anyway).
//
// The row math lives in small templates over the storage type (float or double) that always work in
// double. Backwards recompute the per-row log-sum-exps from the saved logits instead of saving
// softmaxes: it costs one more pass over a [B, K] tensor and keeps the saved state to the inputs.
#include "distill/nodes/logit.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/functions/common.h"

namespace retort {

namespace {

// ---- validation ------------------------------------------------------------------------------------

bool on_gpu(const Tensor& t) { return t.defined() && !t.device().is_cpu(); }
Tensor to_host(const Tensor& t) { return t.defined() ? t.to(Device::cpu()) : t; }

// For the host route: every given tensor must be on the logits' device.
void check_same_device(const char* op, const Tensor& zs, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (const auto& [name, t] : ts)
    RETORT_CHECK(!t->defined() || t->device() == zs.device(), op, ": device mismatch: student_logits ", zs.meta_str(),
                 ", ", name, " ", t->meta_str());
}

void check_logits_pair(const char* op, const Tensor& zs, const Tensor& zt) {
  fn::check_float(op, zs, "student_logits");
  fn::check_float(op, zt, "teacher_logits");
  RETORT_CHECK(zs.dim() == 2 && zt.dim() == 2 && zs.shape() == zt.shape(), op, ": student_logits ", zs.meta_str(),
               " and teacher_logits ", zt.meta_str(), " must both be [B, K] with the same shape");
  RETORT_CHECK(zs.dtype() == zt.dtype(), op, ": dtype mismatch: student_logits ", zs.meta_str(), ", teacher_logits ",
               zt.meta_str());
  RETORT_CHECK(zs.device().is_cpu() && zt.device().is_cpu(), op, ": student_logits ", zs.meta_str(),
               " and teacher_logits ", zt.meta_str(), " must be on one device");
  RETORT_CHECK(zs.shape()[0] > 0 && zs.shape()[1] > 0, op, ": empty logits, student_logits ", zs.meta_str(),
               ", teacher_logits ", zt.meta_str());
}

void check_temperature(const char* op, double t, const Tensor& zs, const Tensor& zt) {
  RETORT_CHECK(std::isfinite(t) && t > 0.0, op, ": temperature must be finite and > 0, got ", t,
               " (student_logits ", zs.meta_str(), ", teacher_logits ", zt.meta_str(), ")");
}

void check_targets(const char* op, const Tensor& targets, const Tensor& zs, const Tensor& zt) {
  fn::check_defined(op, targets, "targets");
  RETORT_CHECK(targets.dtype() == DType::I64 && targets.dim() == 1 && targets.shape()[0] == zs.shape()[0], op,
               ": targets ", targets.meta_str(), " must be i64 [B] for student_logits ", zs.meta_str(),
               " and teacher_logits ", zt.meta_str());
  RETORT_CHECK(targets.device().is_cpu(), op, ": targets ", targets.meta_str(), " must be on the logits' device (cpu)");
  const int64_t k = zs.shape()[1];
  RETORT_CHECK(k >= 2, op, ": DKD needs at least 2 classes (a target and a non-target), got student_logits ",
               zs.meta_str(), ", teacher_logits ", zt.meta_str());
  const int64_t* t = targets.data<int64_t>();
  for (int64_t b = 0; b < targets.shape()[0]; ++b)
    RETORT_CHECK(t[b] >= 0 && t[b] < k, op, ": target ", t[b], " at index ", b, " is out of range [0, ", k,
                 ") for student_logits ", zs.meta_str(), " and teacher_logits ", zt.meta_str());
}

// Calls f with a value of the storage type (float or double) of a validated float tensor.
template <class F>
decltype(auto) dispatch(DType dt, F&& f) {
  if (dt == DType::F32) return f(float{});
  return f(double{});
}

// ---- row math (double) -----------------------------------------------------------------------------

// LSE over k != skip of z_k * inv_t; -inf when that set is empty.
template <class T>
double row_lse(const T* z, int64_t k, double inv_t, int64_t skip = -1) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < k; ++j)
    if (j != skip) m = std::max(m, static_cast<double>(z[j]) * inv_t);
  if (!std::isfinite(m)) return m;
  double s = 0;
  for (int64_t j = 0; j < k; ++j)
    if (j != skip) s += std::exp(static_cast<double>(z[j]) * inv_t - m);
  return m + std::log(s);
}

// log(1 + e^x) without overflow or loss of the small tail.
double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

// KL(p_t || p_s) for one row at temperature 1/inv_t, given both rows' LSEs.
template <class T>
double kd_row_kl(const T* zs, const T* zt, int64_t k, double inv_t, double lse_s, double lse_t) {
  double kl = 0;
  for (int64_t j = 0; j < k; ++j) {
    const double lpt = static_cast<double>(zt[j]) * inv_t - lse_t;
    const double lps = static_cast<double>(zs[j]) * inv_t - lse_s;
    kl += std::exp(lpt) * (lpt - lps);  // exp underflows to 0 where p_t does: the 0·log 0 = 0 rule
  }
  return kl;
}

// One side of a DKD row: the masked LSE over non-targets and the binary log-probabilities.
struct BinarySplit {
  double lse_ng;  // LSE_{k≠g}(u)
  double log_p;   // log p_g
  double log_q;   // log(1 − p_g)
  double p, q;    // p_g, 1 − p_g (each from its own log, so neither is 1 minus a rounded 1)
};

template <class T>
BinarySplit split_row(const T* z, int64_t k, int64_t g, double inv_t) {
  BinarySplit s{};
  s.lse_ng = row_lse(z, k, inv_t, g);
  const double d = static_cast<double>(z[g]) * inv_t - s.lse_ng;
  s.log_p = -softplus(-d);
  s.log_q = -softplus(d);
  s.p = std::exp(s.log_p);
  s.q = std::exp(s.log_q);
  return s;
}

struct DkdRow {
  BinarySplit s, t;
  double tckd, nckd;
};

template <class T>
DkdRow dkd_row(const T* zs, const T* zt, int64_t k, int64_t g, double inv_t) {
  DkdRow r{split_row(zs, k, g, inv_t), split_row(zt, k, g, inv_t), 0.0, 0.0};
  r.tckd = r.t.p * (r.t.log_p - r.s.log_p) + r.t.q * (r.t.log_q - r.s.log_q);
  for (int64_t j = 0; j < k; ++j) {
    if (j == g) continue;
    const double lt = static_cast<double>(zt[j]) * inv_t - r.t.lse_ng;
    const double ls = static_cast<double>(zs[j]) * inv_t - r.s.lse_ng;
    r.nckd += std::exp(lt) * (lt - ls);
  }
  return r;
}

// ---- DKD, shared by the scalar-beta and per-sample-beta entry points --------------------------------

Tensor dkd_impl(const char* op, const Tensor& zs, const Tensor& zt, const Tensor& targets, double alpha,
                double beta_scalar, const Tensor& beta_vec, double temperature) {
  if (on_gpu(zs) || on_gpu(zt)) {
    check_same_device(op, zs, {{"teacher_logits", &zt}, {"targets", &targets}, {"beta", &beta_vec}});
    return dkd_impl(op, to_host(zs), to_host(zt), to_host(targets), alpha, beta_scalar, to_host(beta_vec), temperature)
        .to(zs.device());
  }
  check_logits_pair(op, zs, zt);
  check_temperature(op, temperature, zs, zt);
  check_targets(op, targets, zs, zt);
  RETORT_CHECK(std::isfinite(alpha) && std::isfinite(beta_scalar), op, ": alpha and beta must be finite, got alpha ",
               alpha, ", beta ", beta_scalar);
  if (beta_vec.defined()) {
    RETORT_CHECK(beta_vec.dtype() == zs.dtype() && beta_vec.dim() == 1 && beta_vec.shape()[0] == zs.shape()[0] &&
                     beta_vec.device().is_cpu(),
                 op, ": beta ", beta_vec.meta_str(), " must be a CPU [B] tensor of the logits' dtype for ",
                 "student_logits ", zs.meta_str(), " and teacher_logits ", zt.meta_str());
  }
  const int64_t nb = zs.shape()[0], k = zs.shape()[1];
  const double inv_t = 1.0 / temperature;
  const double scale = temperature * temperature / static_cast<double>(nb);

  Tensor out = Tensor::empty({}, zs.dtype());
  dispatch(zs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = zs.data<T>();
    const T* t = zt.data<T>();
    const int64_t* y = targets.data<int64_t>();
    const T* bv = beta_vec.defined() ? beta_vec.data<T>() : nullptr;
    double total = 0;
    for (int64_t b = 0; b < nb; ++b) {
      const DkdRow r = dkd_row(s + b * k, t + b * k, k, y[b], inv_t);
      const double beta_b = bv ? static_cast<double>(bv[b]) : beta_scalar;
      total += alpha * r.tckd + beta_b * r.nckd;
    }
    out.data<T>()[0] = static_cast<T>(scale * total);
  });

  return record(
      out, "DKDLossBackward", {zs, zt, beta_vec},
      [zs = saved(zs), zt = saved(zt), targets, bvec = saved(beta_vec), alpha, beta_scalar, temperature](
          const Tensor& grad, const Node& node) {
        const bool want_s = node.needs_grad(0), want_t = node.needs_grad(1), want_b = node.needs_grad(2);
        const int64_t nb = zs.shape()[0], k = zs.shape()[1];
        const double inv_t = 1.0 / temperature;
        const double gup = grad.item();
        // d(T²/B · x)/dz = (T²/B) · (1/T) · dx/du
        const double c = gup * temperature / static_cast<double>(nb);
        Tensor gs = want_s ? Tensor::empty_like(zs) : Tensor();
        Tensor gt = want_t ? Tensor::empty_like(zt) : Tensor();
        Tensor gb = want_b ? Tensor::empty_like(bvec) : Tensor();
        dispatch(zs.dtype(), [&](auto tag) {
          using T = decltype(tag);
          const T* s = zs.data<T>();
          const T* t = zt.data<T>();
          const int64_t* y = targets.data<int64_t>();
          const T* bv = bvec.defined() ? bvec.data<T>() : nullptr;
          for (int64_t b = 0; b < nb; ++b) {
            const T* sr = s + b * k;
            const T* tr = t + b * k;
            const int64_t g = y[b];
            const DkdRow r = dkd_row(sr, tr, k, g, inv_t);
            const double beta_b = bv ? static_cast<double>(bv[b]) : beta_scalar;
            if (want_b) gb.data<T>()[b] = static_cast<T>(c * temperature * r.nckd);  // (T²/B) NCKD_b
            // TCKD is the binary KL of sigmoid(d): dTCKD/dd_s = p_g^s − p_g^t, written as the difference
            // of whichever pair is small so that it does not cancel near p_g ≈ 1.
            const double dd_s = (r.t.q < 0.5 && r.s.q < 0.5) ? r.t.q - r.s.q : r.s.p - r.t.p;
            // dTCKD/dd_t = σ'(d_t) · (log-ratio of the target part − log-ratio of the rest).
            const double dd_t = r.t.p * r.t.q * ((r.t.log_p - r.s.log_p) - (r.t.log_q - r.s.log_q));
            T* gsr = want_s ? gs.data<T>() + b * k : nullptr;
            T* gtr = want_t ? gt.data<T>() + b * k : nullptr;
            // d = u_g − LSE_{k≠g}(u): ∂d/∂u_g = 1, ∂d/∂u_j = −p̂_j for j ≠ g.
            if (gsr) gsr[g] = static_cast<T>(c * alpha * dd_s);
            if (gtr) gtr[g] = static_cast<T>(c * alpha * dd_t);
            for (int64_t j = 0; j < k; ++j) {
              if (j == g) continue;
              const double lt = static_cast<double>(tr[j]) * inv_t - r.t.lse_ng;
              const double ls = static_cast<double>(sr[j]) * inv_t - r.s.lse_ng;
              const double pt = std::exp(lt), ps = std::exp(ls);
              if (gsr) gsr[j] = static_cast<T>(c * (alpha * (-ps * dd_s) + beta_b * (ps - pt)));
              if (gtr) gtr[j] = static_cast<T>(c * (alpha * (-pt * dd_t) + beta_b * pt * (lt - ls - r.nckd)));
            }
          }
        });
        return std::vector<Tensor>{gs, gt, gb};
      });
}

}  // namespace

// ---- KD ----------------------------------------------------------------------------------------------

Tensor kd_loss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature) {
  const char* op = "kd_loss";
  if (on_gpu(student_logits) || on_gpu(teacher_logits)) {
    check_same_device(op, student_logits, {{"teacher_logits", &teacher_logits}});
    return kd_loss(to_host(student_logits), to_host(teacher_logits), temperature).to(student_logits.device());
  }
  check_logits_pair(op, student_logits, teacher_logits);
  check_temperature(op, temperature, student_logits, teacher_logits);
  const int64_t nb = student_logits.shape()[0], k = student_logits.shape()[1];
  const double inv_t = 1.0 / temperature;

  Tensor out = Tensor::empty({}, student_logits.dtype());
  dispatch(student_logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = student_logits.data<T>();
    const T* t = teacher_logits.data<T>();
    double total = 0;
    for (int64_t b = 0; b < nb; ++b) {
      const T* sr = s + b * k;
      const T* tr = t + b * k;
      total += kd_row_kl(sr, tr, k, inv_t, row_lse(sr, k, inv_t), row_lse(tr, k, inv_t));
    }
    out.data<T>()[0] = static_cast<T>(temperature * temperature / static_cast<double>(nb) * total);
  });

  return record(out, "KDLossBackward", {student_logits, teacher_logits},
                [zs = saved(student_logits), zt = saved(teacher_logits), temperature](const Tensor& grad,
                                                                                      const Node& node) {
                  const bool want_s = node.needs_grad(0), want_t = node.needs_grad(1);
                  const int64_t nb = zs.shape()[0], k = zs.shape()[1];
                  const double inv_t = 1.0 / temperature;
                  const double c = grad.item() * temperature / static_cast<double>(nb);
                  Tensor gs = want_s ? Tensor::empty_like(zs) : Tensor();
                  Tensor gt = want_t ? Tensor::empty_like(zt) : Tensor();
                  dispatch(zs.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    for (int64_t b = 0; b < nb; ++b) {
                      const T* sr = zs.data<T>() + b * k;
                      const T* tr = zt.data<T>() + b * k;
                      const double lse_s = row_lse(sr, k, inv_t), lse_t = row_lse(tr, k, inv_t);
                      // The teacher's gradient is centred by KL_b (softmax Jacobian), so only it needs it.
                      const double kl = want_t ? kd_row_kl(sr, tr, k, inv_t, lse_s, lse_t) : 0.0;
                      T* gsr = want_s ? gs.data<T>() + b * k : nullptr;
                      T* gtr = want_t ? gt.data<T>() + b * k : nullptr;
                      for (int64_t j = 0; j < k; ++j) {
                        const double lpt = static_cast<double>(tr[j]) * inv_t - lse_t;
                        const double lps = static_cast<double>(sr[j]) * inv_t - lse_s;
                        const double pt = std::exp(lpt);
                        if (gsr) gsr[j] = static_cast<T>(c * (std::exp(lps) - pt));
                        if (gtr) gtr[j] = static_cast<T>(c * pt * (lpt - lps - kl));
                      }
                    }
                  });
                  return std::vector<Tensor>{gs, gt};
                });
}

// ---- DKD ---------------------------------------------------------------------------------------------

Tensor dkd_loss(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets, double alpha,
                double beta, double temperature) {
  return dkd_impl("dkd_loss", student_logits, teacher_logits, targets, alpha, beta, Tensor(), temperature);
}

Tensor dkd_loss_per_sample_beta(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets,
                                double alpha, const Tensor& beta, double temperature) {
  const char* op = "dkd_loss_per_sample_beta";
  fn::check_defined(op, beta, "beta");
  fn::check_float(op, beta, "beta");
  return dkd_impl(op, student_logits, teacher_logits, targets, alpha, 0.0, beta, temperature);
}

DKDTerms dkd_terms(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets,
                   double temperature) {
  const char* op = "dkd_terms";
  if (on_gpu(student_logits) || on_gpu(teacher_logits)) {
    check_same_device(op, student_logits, {{"teacher_logits", &teacher_logits}, {"targets", &targets}});
    DKDTerms h = dkd_terms(to_host(student_logits), to_host(teacher_logits), to_host(targets), temperature);
    const Device d = student_logits.device();
    return {h.tckd.to(d), h.nckd.to(d), h.teacher_target_prob.to(d)};
  }
  check_logits_pair(op, student_logits, teacher_logits);
  check_temperature(op, temperature, student_logits, teacher_logits);
  check_targets(op, targets, student_logits, teacher_logits);
  const int64_t nb = student_logits.shape()[0], k = student_logits.shape()[1];
  DKDTerms out{Tensor::empty({nb}, student_logits.dtype()), Tensor::empty({nb}, student_logits.dtype()),
               Tensor::empty({nb}, student_logits.dtype())};
  dispatch(student_logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t* y = targets.data<int64_t>();
    for (int64_t b = 0; b < nb; ++b) {
      const DkdRow r =
          dkd_row(student_logits.data<T>() + b * k, teacher_logits.data<T>() + b * k, k, y[b], 1.0 / temperature);
      out.tckd.data<T>()[b] = static_cast<T>(r.tckd);
      out.nckd.data<T>()[b] = static_cast<T>(r.nckd);
      out.teacher_target_prob.data<T>()[b] = static_cast<T>(r.t.p);
    }
  });
  return out;
}

// ---- z-score -----------------------------------------------------------------------------------------

namespace {

// Mean and unbiased std of one row, two-pass in double.
template <class T>
std::pair<double, double> row_moments(const T* z, int64_t k) {
  double mu = 0;
  for (int64_t j = 0; j < k; ++j) mu += static_cast<double>(z[j]);
  mu /= static_cast<double>(k);
  double ss = 0;
  for (int64_t j = 0; j < k; ++j) {
    const double d = static_cast<double>(z[j]) - mu;
    ss += d * d;
  }
  return {mu, std::sqrt(ss / static_cast<double>(k - 1))};
}

}  // namespace

Tensor zscore(const Tensor& logits, double eps) {
  const char* op = "zscore";
  fn::check_float(op, logits, "logits");
  fn::check_dim(op, logits, 2, "logits", "[B, K]");
  if (on_gpu(logits)) return zscore(to_host(logits), eps).to(logits.device());
  RETORT_CHECK(logits.shape()[0] > 0 && logits.shape()[1] >= 2, op,
               ": logits must be [B, K] with B >= 1 and K >= 2 (the std is unbiased), got ", logits.meta_str());
  RETORT_CHECK(std::isfinite(eps) && eps >= 0.0, op, ": eps must be finite and >= 0, got ", eps, " (logits ",
               logits.meta_str(), ")");
  const int64_t nb = logits.shape()[0], k = logits.shape()[1];

  Tensor out = Tensor::empty_like(logits);
  dispatch(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (int64_t b = 0; b < nb; ++b) {
      const T* z = logits.data<T>() + b * k;
      T* y = out.data<T>() + b * k;
      const auto [mu, sigma] = row_moments(z, k);
      const double s = sigma + eps;
      // A constant row with eps = 0 would be 0/0; its centred values are all 0, so is the output.
      for (int64_t j = 0; j < k; ++j) y[j] = static_cast<T>(s > 0 ? (static_cast<double>(z[j]) - mu) / s : 0.0);
    }
  });

  return record(out, "ZScoreBackward", {logits}, [z_saved = saved(logits), eps](const Tensor& grad_in, const Node&) {
    const int64_t nb = z_saved.shape()[0], k = z_saved.shape()[1];
    const Tensor grad = grad_in.dtype() == z_saved.dtype() ? grad_in : grad_in.to(z_saved.dtype());
    Tensor gx = Tensor::empty_like(z_saved);
    dispatch(z_saved.dtype(), [&](auto tag) {
      using T = decltype(tag);
      for (int64_t b = 0; b < nb; ++b) {
        const T* z = z_saved.data<T>() + b * k;
        const T* g = grad.data<T>() + b * k;
        T* out = gx.data<T>() + b * k;
        const auto [mu, sigma] = row_moments(z, k);
        const double s = sigma + eps;
        if (!(s > 0)) {  // constant row, eps = 0: the forward is identically 0 there
          for (int64_t j = 0; j < k; ++j) out[j] = T(0);
          continue;
        }
        double gmean = 0, gd = 0;
        for (int64_t j = 0; j < k; ++j) {
          gmean += static_cast<double>(g[j]);
          gd += static_cast<double>(g[j]) * (static_cast<double>(z[j]) - mu);
        }
        gmean /= static_cast<double>(k);
        // Σ_i g_i ∂Z_i/∂z_j = (g_j − ḡ)/s − d_j (Σ_i g_i d_i) / ((K−1) σ s²); the second term is the
        // std's share and vanishes with σ (all d_j = 0), where 1/σ alone would be inf.
        const double coef = sigma > 0 ? gd / (static_cast<double>(k - 1) * sigma * s * s) : 0.0;
        for (int64_t j = 0; j < k; ++j)
          out[j] = static_cast<T>((static_cast<double>(g[j]) - gmean) / s - (static_cast<double>(z[j]) - mu) * coef);
      }
    });
    return std::vector<Tensor>{gx};
  });
}

// ---- Generous Teacher --------------------------------------------------------------------------------

Tensor correct_prediction_mask(const Tensor& logits, const Tensor& targets) {
  const char* op = "correct_prediction_mask";
  fn::check_float(op, logits, "logits");
  fn::check_dim(op, logits, 2, "logits", "[B, K]");
  check_same_device(op, logits, {{"targets", &targets}});
  const Tensor z = to_host(logits).detach();
  const Tensor y = to_host(targets);
  check_targets(op, y, z, z);
  const int64_t nb = z.shape()[0], k = z.shape()[1];
  Tensor mask = Tensor::empty({nb}, z.dtype());
  dispatch(z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (int64_t b = 0; b < nb; ++b) {
      const T* row = z.data<T>() + b * k;
      const int64_t best = std::max_element(row, row + k) - row;  // first maximum, as torch.argmax
      mask.data<T>()[b] = static_cast<T>(best == y.data<int64_t>()[b] ? 1 : 0);
    }
  });
  return mask.to(logits.device());
}

Tensor generous_teacher_loss(const Tensor& generous_logits, const Tensor& standard_logits, const Tensor& targets,
                             double k, double tckd_weight, bool only_teacher_correct, bool standard_std) {
  const char* op = "generous_teacher_loss";
  RETORT_CHECK(std::isfinite(k) && k > 0.0, op, ": the temperature multiple k must be finite and > 0, got ", k);
  RETORT_CHECK(std::isfinite(tckd_weight) && tckd_weight >= 0.0, op, ": tckd_weight must be finite and >= 0, got ",
               tckd_weight);
  fn::check_float(op, standard_logits, "standard_logits");
  fn::check_dim(op, standard_logits, 2, "standard_logits", "[B, K]");
  const Tensor mask = only_teacher_correct ? correct_prediction_mask(standard_logits, targets)
                                           : Tensor::ones({standard_logits.shape()[0]}, standard_logits.dtype(),
                                                          standard_logits.device());
  Tensor g = zscore(generous_logits);
  if (standard_std) {
    fn::check_float(op, generous_logits, "generous_logits");
    fn::check_dim(op, generous_logits, 2, "generous_logits", "[B, K]");
    RETORT_CHECK(generous_logits.shape() == standard_logits.shape(), op, ": generous_logits ",
                 generous_logits.meta_str(), " and standard_logits ", standard_logits.meta_str(), " differ in shape");
    const Tensor sigma = add(stddev(standard_logits, {1}, true, true),
                             Tensor::scalar(1e-7, standard_logits.dtype(), standard_logits.device()));
    g = div(sub(generous_logits, mean(generous_logits, {1}, true)), sigma);
  }
  return dkd_impl(op, g, zscore(standard_logits), targets, tckd_weight, 0.0, mask, k);
}

}  // namespace retort
