// Feature distillation nodes (see feature.h): AT's attention map, CWD's spatial-softmax KL, ReviewKD's
// HCL pyramid, NST's polynomial-kernel MMD, VID's Gaussian likelihood, OFD's partial L2 and AB's hinge.
// Forwards are composed of engine functions under NoGradGuard and each records one node with a
// hand-written backward, so a graph shows "CWDLossBackward" rather than its pieces and the backward
// saves only what it reads. at_loss is the exception: it is composed of attention_map and mse_loss,
// whose nodes are already fused and whose composition needs no extra memory.
#include "distill/nodes/feature.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "engine/functions.h"
#include "engine/functions/common.h"

namespace retort {

namespace {

// F.normalize's default eps: the norm is clamped from below, so an all-zero map stays zero.
constexpr double kNormalizeEps = 1e-12;

void check_same_shape(const char* op, const Tensor& fs, const Tensor& ft, const char* why) {
  check_feature_pair(op, fs, ft);
  RETORT_CHECK(fs.shape() == ft.shape(), op, ": student ", fs.meta_str(), " and teacher ", ft.meta_str(),
               " must have the same shape (", why, ")");
}

// F.normalize along the last dimension: y = x / max(‖x‖, eps). Where the clamp is active the
// denominator is a constant and only x / eps is differentiated (`live` is 0 there).
struct Normalized {
  Tensor y, denom, live;
};

Normalized normalize_last_dim(const Tensor& x) {
  NoGradGuard ng;
  const int64_t last = x.dim() - 1;
  const Tensor norm = sqrt(sum(mul(x, x), {last}, true));
  Normalized n;
  n.denom = clamp(norm, kNormalizeEps, std::numeric_limits<double>::infinity());
  n.live = ge(norm, Tensor::scalar(kNormalizeEps, x.dtype(), x.device()));
  n.y = div(x, n.denom);
  return n;
}

// dy -> dx for normalize_last_dim: (I − y yᵀ) dy / ‖x‖ row by row, without forming the matrix.
Tensor normalize_last_dim_backward(const Normalized& n, const Tensor& gy) {
  const int64_t last = n.y.dim() - 1;
  const Tensor dot = mul(sum(mul(n.y, gy), {last}, true), n.live);
  return div(sub(gy, mul(n.y, dot)), n.denom);
}

}  // namespace

void check_feature_pair(const char* op, const Tensor& fs, const Tensor& ft, const char* a, const char* b) {
  fn::check_compatible(op, fs, ft, a, b);
  RETORT_CHECK(fs.dim() == 4 && ft.dim() == 4, op, ": features must be 4-D [N, C, H, W], got ", a, " ", fs.meta_str(),
               " and ", b, " ", ft.meta_str());
  RETORT_CHECK(fs.shape()[0] == ft.shape()[0], op, ": ", a, " ", fs.meta_str(), " and ", b, " ", ft.meta_str(),
               " have different batch sizes");
  RETORT_CHECK(fs.numel() > 0 && ft.numel() > 0, op, ": empty features: ", a, " ", fs.meta_str(), " and ", b, " ",
               ft.meta_str());
}

// ---- AT ----------------------------------------------------------------------------------------------

Tensor attention_map(const Tensor& f, double p) {
  const char* op = "attention_map";
  fn::check_float(op, f, "features");
  fn::check_dim(op, f, 4, "features", "[B, C, H, W]");
  RETORT_CHECK(f.numel() > 0, op, ": empty features ", f.meta_str());
  // p < 1: f^p's derivative is infinite at 0, and post-activation features hold zeros.
  RETORT_CHECK(std::isfinite(p) && p >= 1, op, ": p must be a number of at least 1, got ", p, " (features ",
               f.meta_str(), ")");
  const int64_t B = f.shape()[0], C = f.shape()[1], H = f.shape()[2], W = f.shape()[3];
  Normalized q;
  {
    NoGradGuard ng;
    // A fractional power of a negative number is not a real number: say so rather than return NaN (as
    // the references, which take f^p without abs(), would).
    if (p != std::floor(p)) {
      const double lowest = min(f).item();
      RETORT_CHECK(lowest >= 0, op, ": p = ", p, " is not a whole number and the features hold negative values (",
                   lowest, "; a tap before its ReLU?), where f^p is undefined (features ", f.meta_str(), ")");
    }
    const Tensor fp = p == 2.0 ? mul(f, f) : pow(f, p);
    q = normalize_last_dim(reshape(mean(fp, {1}), {B, H * W}));
  }
  return record(q.y, "AttentionMapBackward", {f},
                [f = saved(f), q = Normalized{saved(q.y), q.denom, q.live}, p, B, C, H, W](const Tensor& g,
                                                                                          const Node&) {
                  const Tensor ga = normalize_last_dim_backward(q, g);
                  // a = mean_c f^p: da/df = p f^(p-1) / C.
                  const double s = p / static_cast<double>(C);
                  const Tensor dadf = p == 2.0 ? affine(f, s, 0.0) : affine(pow(f, p - 1.0), s, 0.0);
                  return std::vector<Tensor>{mul(ga.view_as_shape({B, 1, H, W}), dadf)};
                });
}

std::pair<Tensor, Tensor> pool_to_common_size(const Tensor& fs, const Tensor& ft) {
  // mdistiller pools the larger map to the smaller one's (H, H); per dimension here, which is the same
  // for the square maps of every model in the zoo.
  const int64_t h = std::min(fs.shape()[2], ft.shape()[2]), w = std::min(fs.shape()[3], ft.shape()[3]);
  auto to_common = [h, w](const Tensor& f) {
    return f.shape()[2] == h && f.shape()[3] == w ? f : adaptive_avg_pool2d(f, h, w);
  };
  return {to_common(fs), to_common(ft)};
}

Tensor at_loss(const Tensor& fs, const Tensor& ft, double p) {
  check_feature_pair("at_loss", fs, ft);
  const auto [s, t] = pool_to_common_size(fs, ft);
  return mse_loss(attention_map(s, p), attention_map(t, p));
}

// ---- CWD ---------------------------------------------------------------------------------------------

Tensor cwd_loss(const Tensor& fs, const Tensor& ft, double tau) {
  const char* op = "cwd_loss";
  check_same_shape(op, fs, ft, "a 1x1 adapter on the student aligns channels");
  RETORT_CHECK(std::isfinite(tau) && tau > 0, op, ": tau must be positive, got ", tau, " (student ", fs.meta_str(),
               ", teacher ", ft.meta_str(), ")");
  const Shape& s = fs.shape();
  const int64_t rows = s[0] * s[1], cols = s[2] * s[3];
  const double scale = tau * tau / static_cast<double>(rows);  // mmrazor: loss * tau^2 / (C * N)
  Tensor loss, log_ps, log_pt, pt;
  {
    NoGradGuard ng;
    log_ps = log_softmax(affine(fs.view_as_shape({rows, cols}), 1.0 / tau, 0.0), 1);
    log_pt = log_softmax(affine(ft.view_as_shape({rows, cols}), 1.0 / tau, 0.0), 1);
    pt = exp(log_pt);
    loss = affine(sum(mul(pt, sub(log_pt, log_ps))), scale, 0.0);
  }
  return record(loss, "CWDLossBackward", {fs, ft},
                [log_ps = saved(log_ps), log_pt = saved(log_pt), pt = saved(pt), k = scale / tau, s](
                    const Tensor& g, const Node& node) {
                  // The 1/tau of the logits' scaling turns tau^2 into tau.
                  const Tensor gk = affine(g, k, 0.0);
                  Tensor gs, gt;
                  if (node.needs_grad(0)) gs = mul(sub(exp(log_ps), pt), gk).view_as_shape(s);
                  if (node.needs_grad(1)) {
                    // d/dz_t of sum p_t (log p_t - log p_s) = p_t (d - sum_i p_t d), d = log p_t - log p_s.
                    const Tensor d = sub(log_pt, log_ps);
                    const Tensor centred = sub(d, sum(mul(pt, d), {1}, true));
                    gt = mul(mul(pt, centred), gk).view_as_shape(s);
                  }
                  return std::vector<Tensor>{gs, gt};
                });
}

// ---- HCL ---------------------------------------------------------------------------------------------

Tensor hcl_loss(const Tensor& fs, const Tensor& ft) {
  const char* op = "hcl_loss";
  check_same_shape(op, fs, ft, "ABF outputs are made at the teacher's size");
  // ReviewKD's loop: levels 4, 2, 1 below the height, each weighing half the previous one.
  struct Level {
    int64_t size;
    double weight;
    Tensor pooled;  // pool(fs - ft) at this level; pooling is linear, so one pool serves both maps
  };
  std::vector<Level> levels;
  double weight = 1.0, total = 1.0;
  for (int64_t l : {4, 2, 1}) {
    if (l >= fs.shape()[2]) continue;
    weight /= 2.0;
    total += weight;
    levels.push_back({l, weight, Tensor()});
  }
  Tensor loss, diff;
  {
    NoGradGuard ng;
    diff = sub(fs, ft);
    loss = mean(mul(diff, diff));
    for (Level& lv : levels) {
      lv.pooled = adaptive_avg_pool2d(diff, lv.size, lv.size);
      loss = add(loss, affine(mean(mul(lv.pooled, lv.pooled)), lv.weight, 0.0));
    }
    loss = affine(loss, 1.0 / total, 0.0);
  }
  return record(loss, "HCLLossBackward", {fs, ft},
                [diff = saved(diff), levels = std::move(levels), total](const Tensor& g, const Node& node) {
                  // d/d diff of w mean(pool(diff)^2) = pool^T(2 w pool(diff) / n_l); pool^T is the
                  // adaptive pool's backward kernel (each bin's value spread evenly over the bin).
                  Tensor gd = affine(diff, 2.0 / static_cast<double>(diff.numel()), 0.0);
                  for (const Level& lv : levels) {
                    const Tensor gp = affine(lv.pooled, 2.0 * lv.weight / static_cast<double>(lv.pooled.numel()), 0.0);
                    Tensor spread = Tensor::empty_like(diff);
                    backend_for(gp).adaptive_avg_pool2d_backward(gp, spread);
                    gd = add(gd, spread);
                  }
                  gd = mul(gd, affine(g, 1.0 / total, 0.0));
                  return std::vector<Tensor>{node.needs_grad(0) ? gd : Tensor(),
                                             node.needs_grad(1) ? neg(gd) : Tensor()};
                });
}

// ---- NST ---------------------------------------------------------------------------------------------

Tensor nst_loss(const Tensor& fs, const Tensor& ft) {
  const char* op = "nst_loss";
  check_feature_pair(op, fs, ft);
  const auto [ps, pt] = pool_to_common_size(fs, ft);
  const int64_t B = ps.shape()[0], Cs = ps.shape()[1], Ct = pt.shape()[1], L = ps.shape()[2] * ps.shape()[3];
  Normalized ns, nt;
  Tensor gss, gst, gtt, loss;
  {
    NoGradGuard ng;
    ns = normalize_last_dim(reshape(ps, {B, Cs, L}));
    nt = normalize_last_dim(reshape(pt, {B, Ct, L}));
    // The polynomial kernel's Gram matrices per sample: channel i against channel j.
    gss = matmul(ns.y, transpose(ns.y, 1, 2));
    gtt = matmul(nt.y, transpose(nt.y, 1, 2));
    gst = matmul(ns.y, transpose(nt.y, 1, 2));
    loss = sub(add(mean(mul(gtt, gtt)), mean(mul(gss, gss))), affine(mean(mul(gst, gst)), 2.0, 0.0));
  }
  const double b = static_cast<double>(B), cs = static_cast<double>(Cs), ct = static_cast<double>(Ct);
  return record(loss, "NSTLossBackward", {ps, pt},
                [ns, nt, gss, gst, gtt, k_ss = 4.0 / (b * cs * cs), k_tt = 4.0 / (b * ct * ct),
                 k_st = 4.0 / (b * cs * ct), s_shape = ps.shape(), t_shape = pt.shape()](const Tensor& g,
                                                                                         const Node& node) {
                  // d mean(G²)/dy for G = y yᵀ is 4 G y / |G|; for G = ys ytᵀ it is 2 G yt / |G| per side,
                  // times the -2 of the cross term.
                  Tensor gs, gt;
                  if (node.needs_grad(0)) {
                    const Tensor gy = sub(affine(matmul(gss, ns.y), k_ss, 0.0), affine(matmul(gst, nt.y), k_st, 0.0));
                    gs = reshape(normalize_last_dim_backward(ns, mul(gy, g)), s_shape);
                  }
                  if (node.needs_grad(1)) {
                    const Tensor gy = sub(affine(matmul(gtt, nt.y), k_tt, 0.0),
                                          affine(matmul(transpose(gst, 1, 2), ns.y), k_st, 0.0));
                    gt = reshape(normalize_last_dim_backward(nt, mul(gy, g)), t_shape);
                  }
                  return std::vector<Tensor>{gs, gt};
                });
}

// ---- VID ---------------------------------------------------------------------------------------------

Tensor vid_variance(const Tensor& log_scale, double eps) {
  NoGradGuard ng;
  // softplus in the form that does not overflow: max(s, 0) + log(1 + exp(-|s|)).
  const Tensor sp = add(relu(log_scale), log(affine(exp(neg(abs(log_scale))), 1.0, 1.0)));
  return affine(sp, 1.0, eps);
}

Tensor vid_loss(const Tensor& mu, const Tensor& target, const Tensor& log_scale, double eps) {
  const char* op = "vid_loss";
  check_same_shape(op, mu, target, "the regressor predicts the teacher's feature");
  fn::check_compatible(op, mu, log_scale, "prediction", "log_scale");
  const int64_t C = mu.shape()[1];
  RETORT_CHECK(log_scale.dim() == 1 && log_scale.shape()[0] == C, op, ": log_scale must be [", C,
               "] (one per channel of the prediction ", mu.meta_str(), "), got ", log_scale.meta_str());
  RETORT_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be >= 0, got ", eps);
  Tensor loss, d, v;
  {
    NoGradGuard ng;
    v = vid_variance(log_scale, eps).view_as_shape({1, C, 1, 1});
    d = sub(mu, target);
    loss = affine(add(mean(div(mul(d, d), v)), mean(log(v))), 0.5, 0.0);
  }
  const double n = static_cast<double>(mu.numel()), c = static_cast<double>(C);
  return record(loss, "VIDLossBackward", {mu, target, log_scale},
                [d, v, s = saved(log_scale), n, c](const Tensor& g, const Node& node) {
                  Tensor gm, gt, gs;
                  if (node.needs_grad(0) || node.needs_grad(1)) {
                    const Tensor gd = mul(div(d, v), affine(g, 1.0 / n, 0.0));
                    if (node.needs_grad(0)) gm = gd;
                    if (node.needs_grad(1)) gt = neg(gd);
                  }
                  if (node.needs_grad(2)) {
                    // dL/dv_c = ½ (−Σ_{n,h,w} d² / v_c² / N + 1 / (C v_c)); dv/ds = sigmoid(s).
                    const Tensor vc = v.view_as_shape({static_cast<int64_t>(c)});
                    const Tensor sq = sum(mul(d, d), {0, 2, 3});
                    const Tensor dv = affine(sub(affine(div(Tensor::ones_like(vc), vc), 1.0 / c, 0.0),
                                                 affine(div(sq, mul(vc, vc)), 1.0 / n, 0.0)),
                                             0.5, 0.0);
                    gs = mul(mul(dv, sigmoid(s)), g);
                  }
                  return std::vector<Tensor>{gm, gt, gs};
                });
}

// ---- OFD ---------------------------------------------------------------------------------------------

Tensor ofd_loss(const Tensor& s, const Tensor& t, const Tensor& margin) {
  const char* op = "ofd_loss";
  check_same_shape(op, s, t, "the connector maps the student to the teacher's channels, the teacher is pooled to the "
                   "student's size");
  fn::check_compatible(op, s, margin, "student", "margin");
  const int64_t C = s.shape()[1];
  RETORT_CHECK(margin.dim() == 1 && margin.shape()[0] == C, op, ": margin must be [", C,
               "] (one per channel of the features ", s.meta_str(), "), got ", margin.meta_str());
  // mdistiller's feat_loss in one residual: with τ = max(t, m) (margins are <= 0), an element counts
  // where the student is above τ or the teacher is positive, and then it is s − τ: below the margin
  // the student is only kept from rising above m, between the margin and 0 only a student above the
  // teacher is pulled down, above 0 both ways. One saved tensor instead of the formula's four.
  Tensor loss, r, t_live;
  {
    NoGradGuard ng;
    const Tensor m = margin.view_as_shape({1, C, 1, 1});
    const Tensor tau = maximum(t, m);
    const Tensor counts = maximum(gt(s, tau), gt(t, Tensor::scalar(0.0, s.dtype(), s.device())));
    r = mul(sub(s, tau), counts);
    loss = affine(sum(mul(r, r)), 1.0 / static_cast<double>(s.shape()[0]), 0.0);
    if (t.requires_grad()) t_live = gt(t, m);  // where τ is t, not the margin
  }
  return record(loss, "OFDLossBackward", {s, t},
                [r, t_live, k = 2.0 / static_cast<double>(s.shape()[0])](const Tensor& g, const Node& node) {
                  const Tensor gs = mul(r, affine(g, k, 0.0));
                  Tensor gt_;
                  if (node.needs_grad(1)) gt_ = neg(mul(gs, t_live));
                  return std::vector<Tensor>{node.needs_grad(0) ? gs : Tensor(), gt_};
                });
}

Tensor ofd_margin(const Tensor& bn_weight, const Tensor& bn_bias) {
  const char* op = "ofd_margin";
  fn::check_compatible(op, bn_weight, bn_bias, "weight", "bias");
  RETORT_CHECK(bn_weight.dim() == 1 && bn_weight.shape() == bn_bias.shape(), op,
               ": weight and bias must be [C] alike, got ", bn_weight.meta_str(), " and ", bn_bias.meta_str());
  const std::vector<double> w = bn_weight.to(Device::cpu()).to_vector(), b = bn_bias.to(Device::cpu()).to_vector();
  std::vector<double> out(w.size());
  const double inv_sqrt_2pi = 1.0 / std::sqrt(2.0 * M_PI);
  for (size_t c = 0; c < w.size(); ++c) {
    const double sd = std::abs(w[c]), mu = b[c];
    if (sd == 0) {
      out[c] = std::min(mu, 0.0);  // a constant channel: its value where it is negative
      continue;
    }
    const double z = mu / sd;
    const double below = 0.5 * std::erfc(z / std::sqrt(2.0));  // Φ(−z)
    out[c] = below > 0.001 ? -sd * std::exp(-z * z / 2.0) * inv_sqrt_2pi / below + mu : -3.0 * sd;
  }
  return Tensor::from_vector(out, {static_cast<int64_t>(out.size())}, bn_weight.dtype()).to(bn_weight.device());
}

// ---- AB ----------------------------------------------------------------------------------------------

Tensor ab_loss(const Tensor& s, const Tensor& t, double margin) {
  const char* op = "ab_loss";
  check_same_shape(op, s, t, "the connector maps the student to the teacher's shape");
  RETORT_CHECK(std::isfinite(margin) && margin >= 0, op, ": margin must be >= 0, got ", margin);
  Tensor loss, r;
  {
    NoGradGuard ng;
    // AB.py's criterion_alternative_l2 as one residual: where the teacher's neuron is off (t <= 0) a
    // student above −μ is pushed to −μ; where it is on, a student below μ is pushed to μ.
    const Tensor on = gt(t, Tensor::scalar(0.0, s.dtype(), s.device()));
    const Tensor lo = Tensor::scalar(-margin, s.dtype(), s.device()), hi = Tensor::scalar(margin, s.dtype(), s.device());
    const Tensor off_part = mul(affine(s, 1.0, margin), gt(s, lo));
    const Tensor on_part = mul(affine(s, 1.0, -margin), le(s, hi));
    r = add(off_part, mul(on, sub(on_part, off_part)));
    loss = affine(sum(mul(r, r)), 1.0 / static_cast<double>(s.shape()[0]), 0.0);
  }
  return record(loss, "ABLossBackward", {s, t}, [r, k = 2.0 / static_cast<double>(s.shape()[0])](
                                                    const Tensor& g, const Node& node) {
    return std::vector<Tensor>{node.needs_grad(0) ? mul(r, affine(g, k, 0.0)) : Tensor(), Tensor()};
  });
}

// ---- FSP and FT ----------------------------------------------------------------------------------

Tensor fsp_matrix(const Tensor& bot, const Tensor& top) {
  check_feature_pair("fsp_matrix", bot, top, "bot", "top");
  const auto [b, t] = pool_to_common_size(bot, top);
  const int64_t B = b.shape()[0], Cb = b.shape()[1], Ct = t.shape()[1], L = b.shape()[2] * b.shape()[3];
  const Tensor g = matmul(reshape(t, {B, Ct, L}), transpose(reshape(b, {B, Cb, L}), 1, 2));
  return affine(g, 1.0 / static_cast<double>(L), 0.0);
}

Tensor fsp_loss(const Tensor& s_bot, const Tensor& s_top, const Tensor& t_bot, const Tensor& t_top) {
  check_feature_pair("fsp_loss", s_bot, t_bot);
  check_feature_pair("fsp_loss", s_top, t_top);
  RETORT_CHECK(s_bot.shape()[1] == t_bot.shape()[1] && s_top.shape()[1] == t_top.shape()[1],
               "fsp_loss: FSP compares the networks' flow matrices, so both need the same channels at each tap: "
               "student ", s_bot.meta_str(), " -> ", s_top.meta_str(), ", teacher ", t_bot.meta_str(), " -> ",
               t_top.meta_str());
  return mse_loss(fsp_matrix(s_bot, s_top), fsp_matrix(t_bot, t_top));
}

Tensor ft_loss(const Tensor& fs, const Tensor& ft, double p1, double p2) {
  check_feature_pair("ft_loss", fs, ft);
  RETORT_CHECK(std::isfinite(p1) && p1 >= 1, "ft_loss: p1 must be >= 1, got ", p1);
  RETORT_CHECK(std::isfinite(p2) && p2 >= 1, "ft_loss: p2 must be >= 1, got ", p2);
  const auto [s, t] = pool_to_common_size(fs, ft);
  const Tensor d = abs(sub(attention_map(s, p1), attention_map(t, p1)));
  return mean(p2 == 1.0 ? d : pow(d, p2));
}

}  // namespace retort
