// Relation distillation nodes (see relation.h): SP's normalised Gram matrix, PKT's cosine-similarity
// probabilities, RKD's normalised distances and angles. As in feature.cpp, each relation map's forward
// is composed of engine functions under NoGradGuard and records one node whose backward is written
// out below; the losses on top are compositions (mse_loss, smooth_l1_loss, log), whose nodes already
// save only what they read. Everything is made of engine functions, so it runs on every device.
#include "distill/nodes/relation.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "engine/functions.h"
#include "engine/functions/common.h"

namespace retort {

namespace {

constexpr double kNormalizeEps = 1e-12;  // F.normalize's eps (clamps the norm from below)
constexpr double kPktEps = 1e-7;         // PKT.py: added to the norm and inside the log
constexpr double kRkdEps = 1e-12;        // RKD.py pdist: clamps the squared distance from below
const double kInf = std::numeric_limits<double>::infinity();

// f [B, ...] viewed [B, D] (a view, no copy), after checking what every relation map needs.
Tensor as_rows(const char* op, const Tensor& f) {
  fn::check_float(op, f, "features");
  RETORT_CHECK(f.dim() >= 2, op, ": features must be [B, ...] with at least 2 dimensions, got ", f.meta_str());
  RETORT_CHECK(f.numel() > 0, op, ": empty features ", f.meta_str());
  RETORT_CHECK(f.shape()[0] >= 2, op, ": a relation needs at least 2 samples in the batch, got ", f.meta_str());
  return f.view_as_shape({f.shape()[0], f.numel() / f.shape()[0]});
}

// Checks a loss's pair; true when the batch has a single sample, whose loss is 0 (see relation.h).
bool single_sample_pair(const char* op, const Tensor& fs, const Tensor& ft) {
  fn::check_compatible(op, fs, ft, "student", "teacher");
  RETORT_CHECK(fs.dim() >= 2 && ft.dim() >= 2 && fs.shape()[0] == ft.shape()[0], op, ": student ", fs.meta_str(),
               " and teacher ", ft.meta_str(), " must both be [B, ...] with the same batch size B");
  return fs.shape()[0] == 1 && fs.numel() > 0 && ft.numel() > 0;
}

// 0 with a zero gradient for the student (a batch's last, single-sample remainder).
Tensor zero_loss(const Tensor& fs) { return affine(sum(fs), 0.0, 0.0); }

Tensor scalar_like(double v, const Tensor& t) { return Tensor::scalar(v, t.dtype(), t.device()); }

// 1 off the diagonal, 0 on it: [B, B] on t's device.
Tensor off_diagonal(int64_t b, const Tensor& like) {
  std::vector<double> v(static_cast<size_t>(b * b), 1.0);
  for (int64_t i = 0; i < b; ++i) v[static_cast<size_t>(i * b + i)] = 0.0;
  return Tensor::from_vector(v, {b, b}, like.dtype()).to(like.device());
}

// g [B, B] -> the gradient of F for G = F Fᵀ: (g + gᵀ) F.
Tensor gram_backward(const Tensor& g, const Tensor& rows) { return matmul(add(g, transpose(g, 0, 1)), rows); }

}  // namespace

// ---- SP ----------------------------------------------------------------------------------------------

Tensor similarity_matrix(const Tensor& f) {
  const Tensor rows = as_rows("similarity_matrix", f);
  Tensor out, denom, live;
  {
    NoGradGuard ng;
    const Tensor gram = matmul(rows, transpose(rows, 0, 1));
    const Tensor norm = sqrt(sum(mul(gram, gram), {1}, true));  // [B, 1]
    denom = clamp(norm, kNormalizeEps, kInf);
    live = ge(norm, scalar_like(kNormalizeEps, f));
    out = div(gram, denom);
  }
  return record(out, "SimilarityMatrixBackward", {f},
                [rows = saved(rows), out = saved(out), denom, live, shape = f.shape()](const Tensor& g, const Node&) {
                  // Row normalisation as in attention_map: dG = (g − N (N·g)) / ‖G_i‖ where the norm is
                  // above eps, g / eps where it is clamped (N·g then drops out).
                  const Tensor dot = mul(sum(mul(out, g), {1}, true), live);
                  const Tensor gg = div(sub(g, mul(out, dot)), denom);
                  return std::vector<Tensor>{reshape(gram_backward(gg, rows), shape)};
                });
}

Tensor sp_loss(const Tensor& fs, const Tensor& ft) {
  if (single_sample_pair("sp_loss", fs, ft)) return zero_loss(fs);
  // SP.py: (G_t − G_s)² summed over the B×B entries, / B² — the mean over them.
  return mse_loss(similarity_matrix(fs), similarity_matrix(ft));
}

// ---- CC ----------------------------------------------------------------------------------------------

Tensor cc_loss(const Tensor& fs, const Tensor& ft) {
  const char* op = "cc_loss";
  const bool single = single_sample_pair(op, fs, ft);
  RETORT_CHECK(fs.shape() == ft.shape(), op, ": student ", fs.meta_str(), " and teacher ", ft.meta_str(),
               " must have the same shape (CC's embeddings bring both to feat_dim)");
  if (single) return zero_loss(fs);
  // CC.py: delta = |f_s − f_t|; mean over b of Σ_d delta[b] · delta[b + 1] (consecutive samples).
  const int64_t b = fs.shape()[0];
  const Tensor d = abs(sub(flatten(fs, 1), flatten(ft, 1)));
  return affine(sum(mul(slice(d, 0, 0, b - 1), slice(d, 0, 1, b))), 1.0 / static_cast<double>(b - 1), 0.0);
}

// ---- PKT ---------------------------------------------------------------------------------------------

Tensor pkt_probabilities(const Tensor& f) {
  const Tensor rows = as_rows("pkt_probabilities", f);
  Tensor out, norm, shifted, unit, row_sum;
  {
    NoGradGuard ng;
    norm = sqrt(sum(mul(rows, rows), {1}, true));  // [B, 1]
    shifted = affine(norm, 1.0, kPktEps);
    unit = div(rows, shifted);
    const Tensor s = affine(matmul(unit, transpose(unit, 0, 1)), 0.5, 0.5);  // cosine scaled to [0, 1]
    row_sum = sum(s, {1}, true);
    out = div(s, row_sum);
  }
  return record(out, "PKTProbabilitiesBackward", {f},
                [rows = saved(rows), out = saved(out), norm, shifted, unit, row_sum, shape = f.shape()](
                    const Tensor& g, const Node&) {
                  // P = S / rowsum(S): dS = (g − Σ_j g P) / rowsum(S); S = (X Xᵀ + 1) / 2.
                  const Tensor gs = div(sub(g, sum(mul(g, out), {1}, true)), row_sum);
                  const Tensor gu = gram_backward(affine(gs, 0.5, 0.0), unit);
                  // X = F / (‖F‖ + eps): dF = dX / (‖F‖ + eps) − F (dX·F) / (‖F‖ (‖F‖ + eps)²). A zero
                  // row has dX·F = 0; its norm is floored at the smallest normal so 0/0 cannot arise.
                  const Tensor safe_norm = clamp(norm, static_cast<double>(std::numeric_limits<float>::min()), kInf);
                  const Tensor coef = div(div(sum(mul(gu, rows), {1}, true), safe_norm), mul(shifted, shifted));
                  return std::vector<Tensor>{reshape(sub(div(gu, shifted), mul(rows, coef)), shape)};
                });
}

Tensor pkt_loss(const Tensor& fs, const Tensor& ft) {
  if (single_sample_pair("pkt_loss", fs, ft)) return zero_loss(fs);
  const Tensor ps = pkt_probabilities(fs), pt = pkt_probabilities(ft);
  // PKT.py: mean(P_t · log((P_t + eps) / (P_s + eps))).
  return mean(mul(pt, sub(log(affine(pt, 1.0, kPktEps)), log(affine(ps, 1.0, kPktEps)))));
}

// ---- RKD ---------------------------------------------------------------------------------------------

Tensor rkd_distances(const Tensor& f) {
  const Tensor rows = as_rows("rkd_distances", f);
  const int64_t b = rows.shape()[0];
  const double pairs = static_cast<double>(b * (b - 1));
  Tensor out, dist, live, mu;
  {
    NoGradGuard ng;
    const Tensor sq = sum(mul(rows, rows), {1}, true);  // [B, 1]
    // RKD.py's pdist: ‖fᵢ‖² + ‖fⱼ‖² − 2 fᵢ·fⱼ clamped at eps, its root, the diagonal set to 0.
    const Tensor d2 = sub(add(sq, transpose(sq, 0, 1)), affine(matmul(rows, transpose(rows, 0, 1)), 2.0, 0.0));
    const Tensor off = off_diagonal(b, f);
    live = mul(ge(d2, scalar_like(kRkdEps, f)), off);
    dist = sqrt(clamp(d2, kRkdEps, kInf));  // > 0 everywhere, so the backward may divide by it
    const Tensor d = mul(dist, off);
    // The mean over d > 0: every off-diagonal entry is at least sqrt(eps), so it is the mean over i ≠ j.
    mu = affine(sum(d), 1.0 / pairs, 0.0);
    out = div(d, mu);
  }
  return record(out, "RKDDistancesBackward", {f},
                [rows = saved(rows), out = saved(out), dist, live, mu, pairs, shape = f.shape()](const Tensor& g,
                                                                                                  const Node&) {
                  // ψ = d / μ, μ = Σ d / pairs: dd = (g − Σ(g ψ) / pairs) / μ on the live pairs.
                  const Tensor gd = div(sub(g, affine(sum(mul(g, out)), 1.0 / pairs, 0.0)), mu);
                  // d = sqrt(d²): dd² = dd / (2 d); d²ᵢⱼ = ‖fᵢ‖² + ‖fⱼ‖² − 2 fᵢ·fⱼ gives, with
                  // A = dd² + dd²ᵀ, dF = 2 (rowsum(A) ⊙ F − A F).
                  const Tensor g2 = mul(div(gd, affine(dist, 2.0, 0.0)), live);
                  const Tensor a = add(g2, transpose(g2, 0, 1));
                  const Tensor gf = affine(sub(mul(rows, sum(a, {1}, true)), matmul(a, rows)), 2.0, 0.0);
                  return std::vector<Tensor>{reshape(gf, shape)};
                });
}

Tensor rkd_angles(const Tensor& f) {
  const Tensor rows = as_rows("rkd_angles", f);
  Tensor out, unit, denom, live;
  {
    NoGradGuard ng;
    // v[a, b] = f_b − f_a (RKD.py: student.unsqueeze(0) − student.unsqueeze(1)), normalised over D.
    const Tensor v = sub(unsqueeze(rows, 0), unsqueeze(rows, 1));  // [B, B, D]
    const Tensor norm = sqrt(sum(mul(v, v), {2}, true));           // [B, B, 1]
    denom = clamp(norm, kNormalizeEps, kInf);
    live = ge(norm, scalar_like(kNormalizeEps, f));
    unit = div(v, denom);
    out = matmul(unit, transpose(unit, 1, 2));  // [B, B, B]: ⟨e_ab, e_ac⟩
  }
  return record(out, "RKDAnglesBackward", {f},
                [unit, denom, live, shape = f.shape()](const Tensor& g, const Node&) {
                  // Per anchor a the angles are E_a E_aᵀ: dE_a = (g_a + g_aᵀ) E_a.
                  const Tensor ge_ = matmul(add(g, transpose(g, 1, 2)), unit);
                  // normalize's backward on the live pairs only (see relation.h): (dE − e (e·dE)) / ‖v‖.
                  const Tensor dot = sum(mul(unit, ge_), {2}, true);
                  const Tensor gv = mul(div(sub(ge_, mul(unit, dot)), denom), live);
                  // v[a, b] = f_b − f_a: f_k gains Σ_a gv[a, k] and loses Σ_b gv[k, b].
                  return std::vector<Tensor>{reshape(sub(sum(gv, {0}), sum(gv, {1})), shape)};
                });
}

Tensor rkd_loss(const Tensor& fs, const Tensor& ft, double distance_weight, double angle_weight) {
  const char* op = "rkd_loss";
  const bool single = single_sample_pair(op, fs, ft);
  RETORT_CHECK(std::isfinite(distance_weight) && std::isfinite(angle_weight) && distance_weight >= 0 &&
                   angle_weight >= 0 && distance_weight + angle_weight > 0,
               op, ": the distance and angle weights must be >= 0 and not both 0, got ", distance_weight, " and ",
               angle_weight);
  if (single) return zero_loss(fs);
  Tensor loss;
  if (distance_weight > 0)
    loss = affine(smooth_l1_loss(rkd_distances(fs), rkd_distances(ft)), distance_weight, 0.0);
  if (angle_weight > 0) {
    const Tensor a = affine(smooth_l1_loss(rkd_angles(fs), rkd_angles(ft)), angle_weight, 0.0);
    loss = loss.defined() ? add(loss, a) : a;
  }
  return loss;
}

// ---- inspection --------------------------------------------------------------------------------------

std::string relation_agreement(const Tensor& student, const Tensor& teacher) {
  RETORT_CHECK(student.shape() == teacher.shape() && (student.dim() == 2 || student.dim() == 3),
               "relation_agreement: two relation maps of one shape [B, B] or [B, B, B], got ", student.meta_str(),
               " and ", teacher.meta_str());
  const std::vector<double> s = student.to(Device::cpu()).to_vector(), t = teacher.to(Device::cpu()).to_vector();
  const int64_t b = student.size(0);
  double n = 0, ms = 0, mt = 0;
  std::vector<size_t> idx;
  for (size_t k = 0; k < s.size(); ++k) {
    const int64_t i = (static_cast<int64_t>(k) / b) % b, j = static_cast<int64_t>(k) % b;  // the last two indices
    const int64_t a = student.dim() == 3 ? static_cast<int64_t>(k) / (b * b) : -1;          // the anchor
    if (i == j || i == a || j == a) continue;  // constants: 0 (or 1 for an angle with itself)
    idx.push_back(k), ms += s[k], mt += t[k], ++n;
  }
  if (n < 2) return "no off-diagonal pairs";
  ms /= n, mt /= n;
  double cov = 0, vs = 0, vt = 0;
  for (size_t k : idx) cov += (s[k] - ms) * (t[k] - mt), vs += (s[k] - ms) * (s[k] - ms), vt += (t[k] - mt) * (t[k] - mt);
  std::ostringstream o;
  o.precision(3);
  o << std::fixed << "r " << (vs > 0 && vt > 0 ? cov / std::sqrt(vs * vt) : 0.0) << " over " << idx.size()
    << (student.dim() == 2 ? " pairs" : " triplets");
  return o.str();
}

}  // namespace retort
