// KDSVD nodes: self-supervised knowledge distillation using singular value decomposition (Lee, Kim and
// Song, ECCV 2018; RepDistiller's and mdistiller's KDSVD.py; docs/methods/kdsvd.md). Each stage's
// feature map is summarised by its top right singular vectors; the student learns the teacher's
// *relations between consecutive stages*: a Gaussian (RBF) kernel between every pair of the two stages'
// vector entries.
//
// Two views of a map f [B, C, H, W] as a matrix X, the two references' (KdsvdView):
//   channels  X = [B, H·W, C] (the paper's TensorFlow code and RepDistiller: positions as rows), so a
//             vector has one entry per channel — the student's and the teacher's channels must agree;
//   width     X = [B, C·H, W] (mdistiller's feat.view(B, C·H, W)), one entry per column of the map —
//             the widths must agree, channels may differ.
//
//   kdsvd_svd    the top k right singular vectors of X ([B, n, k], n = C or W, descending singular
//                value) and the singular values [B, k], as the eigenvectors of the n x n Gram matrix
//                X^T X (eigh, engine/functions/linalg.h) and the square roots of its eigenvalues
//                (clamped at 0); the gradient flows through the eigendecomposition. Signs follow eigh's
//                convention (the largest-magnitude entry positive); torch.svd's are arbitrary.
//   kdsvd_align  the student's candidate vectors vs [B, n, ks] matched to the teacher's vt [B, n, k]:
//                for each teacher vector the student vector of largest |cosine|, multiplied by the
//                cosine's sign (align_rsv; the choice and the sign are constants, no gradient), [B, n, k]
//   kdsvd_rbf    exp(−(v[b, i, l] − u[b, j, l])² / 8): [B, n, m, k] between two stages' vectors
//   kdsvd_loss   over stages i = 0..S−1: teacher t_i = kdsvd_svd(ft_i, k), student s_i =
//                kdsvd_svd(fs_i, min(k + 3, n_i)) aligned to t_i, both scaled by the teacher's
//                L2-normalised singular values; then (1/B) Σ_{i≥1} Σ (rbf(s_i, s_{i−1}) −
//                rbf(t_i, t_{i−1}))². The teacher side carries no gradient (the references detach it).
//
// What differs from the references (docs/methods/kdsvd.md): the singular vectors come from the Gram
// matrix's eigendecomposition rather than an SVD (the same vectors; the smallest singular values would
// lose precision, the top ones used here do not), their signs are fixed by a convention instead of
// being whatever LAPACK returns (the loss depends on the teacher's signs, so the references' value is
// not reproducible from run to run either), and non-finite kernel entries are not silently zeroed (the
// references' torch.where(isfinite) guard): a non-finite loss stops the run with an error instead.
#pragma once
#include <string>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

enum class KdsvdView { Channels, Width };
const char* kdsvd_view_name(KdsvdView view);  // "channels", "width" (the config's spelling)
// The length n of a map's singular vectors in `view`: C or W.
int64_t kdsvd_vector_size(const Tensor& f, KdsvdView view);

struct SvdFeature {
  Tensor vectors;  // [B, n, k]: column j the right singular vector of the j-th largest singular value
  Tensor values;   // [B, k], descending
};
// The top-k right singular vectors and singular values of f [B, C, H, W] in `view`; 1 <= k <= n.
// Differentiable in f (the singular values' gradient is infinite where one is 0).
// gap_eps damps the gradient near repeated singular values (eigh's gap_eps; 0 = exact).
SvdFeature kdsvd_svd(const Tensor& f, int64_t k, KdsvdView view = KdsvdView::Channels, double gap_eps = 0.0);
// align_rsv: vs [B, n, ks] (the student's candidates), vt [B, n, k] (the teacher's), same B and n;
// returns vs @ mask [B, n, k] with mask[b, i, j] = sign(cos) where |cos(vs_i, vt_j)| is
// the largest over i (ties: every tied column is added), else 0. Gradient to vs only.
Tensor kdsvd_align(const Tensor& vs, const Tensor& vt);
// The Gaussian kernel between two stages' vectors: v [B, n, k], u [B, m, k] -> [B, n, m, k],
// exp(−(v[:, :, None] − u[:, None])² / 8).
Tensor kdsvd_rbf(const Tensor& v, const Tensor& u);
// One stage's compared vectors: the student's aligned to the teacher's, both scaled by the teacher's
// L2-normalised singular values, [B, n, k] each (the student's differentiable, the teacher's not).
struct KdsvdVectors {
  Tensor student, teacher;
};
// The KDSVD loss over S >= 2 stages: student and teacher features per stage (NCHW, one dtype and
// device; per stage the vectors' length n must match — channels in the channels view, widths in the
// width view), k >= 1 teacher vectors (at most every stage's n). 0-D. The teacher's features get no gradient. When `vectors` is given it
// receives each stage's compared vectors (what retort-inspect shows).
// gap_eps is passed to the student's kdsvd_svd.
Tensor kdsvd_loss(const std::vector<Tensor>& student, const std::vector<Tensor>& teacher, int64_t k = 1,
                  KdsvdView view = KdsvdView::Channels, double gap_eps = 0.0,
                  std::vector<KdsvdVectors>* vectors = nullptr);

void add_kdsvd_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> kdsvd_node_functions();

}  // namespace retort
