// KDSVD nodes: self-supervised knowledge distillation using singular value decomposition (Lee, Kim and
// Song, ECCV 2018), as mdistiller's KDSVD.py implements it (docs/methods/kdsvd.md). Each stage's
// feature map is summarised by its top right singular vectors; the student learns the teacher's
// *relations between consecutive stages*: a Gaussian (RBF) kernel between every pair of the two stages'
// vector entries.
//
//   kdsvd_svd    f [B, C, H, W] viewed as X [B, C·H, W] (mdistiller's feat.view(B, C·H, W)): the top k
//                right singular vectors V[:, :, :k] ([B, W, k], descending singular value) and the
//                singular values [B, k]. Computed as the eigenvectors of the W x W Gram matrix X^T X
//                (eigh, engine/functions/linalg.h) and the square roots of its eigenvalues (clamped at
//                0), so the gradient flows through the eigendecomposition. Signs follow eigh's
//                convention (the largest-magnitude entry positive); torch.svd's are arbitrary.
//   kdsvd_align  the student's candidate vectors vs [B, W, ks] matched to the teacher's vt [B, W, k]:
//                for each teacher vector the student vector of largest |cosine|, multiplied by the
//                cosine's sign (align_rsv; the choice and the sign are constants, no gradient), [B, W, k]
//   kdsvd_rbf    exp(−(v[b, i, l] − u[b, j, l])² / 8): [B, W_v, W_u, k] between two stages' vectors
//   kdsvd_loss   over stages i = 0..S−1: teacher t_i = kdsvd_svd(ft_i, k), student s_i =
//                kdsvd_svd(fs_i, min(k + 3, W_i)) aligned to t_i, both scaled by the teacher's
//                L2-normalised singular values; then (1/B) Σ_{i≥1} Σ (rbf(s_i, s_{i−1}) −
//                rbf(t_i, t_{i−1}))². The teacher side carries no gradient (mdistiller detaches it).
//
// What differs from the reference (docs/methods/kdsvd.md): the singular vectors come from the Gram
// matrix's eigendecomposition rather than an SVD (the same vectors; the smallest singular values would
// lose precision, the top ones used here do not), their signs are fixed by a convention instead of
// being whatever LAPACK returns (the loss depends on the teacher's signs, so the reference's value is
// not reproducible from run to run either), and non-finite kernel entries are not silently zeroed (the
// reference's torch.where(isfinite) guard): a non-finite loss stops the run with an error instead.
#pragma once
#include <string>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

struct SvdFeature {
  Tensor vectors;  // [B, W, k]: column j the right singular vector of the j-th largest singular value
  Tensor values;   // [B, k], descending
};
// The top-k right singular vectors and singular values of f [B, C, H, W] viewed as [B, C·H, W];
// 1 <= k <= W. Differentiable in f (the singular values' gradient is infinite where one is 0).
SvdFeature kdsvd_svd(const Tensor& f, int64_t k);
// mdistiller's align_rsv: vs [B, W, ks] (the student's candidates), vt [B, W, k] (the teacher's),
// same B and W; returns vs @ mask [B, W, k] with mask[b, i, j] = sign(cos) where |cos(vs_i, vt_j)| is
// the largest over i (ties: every tied column is added), else 0. Gradient to vs only.
Tensor kdsvd_align(const Tensor& vs, const Tensor& vt);
// The Gaussian kernel between two stages' vectors: v [B, Wv, k], u [B, Wu, k] -> [B, Wv, Wu, k],
// exp(−(v[:, :, None] − u[:, None])² / 8).
Tensor kdsvd_rbf(const Tensor& v, const Tensor& u);
// One stage's compared vectors: the student's aligned to the teacher's, both scaled by the teacher's
// L2-normalised singular values, [B, W, k] each (the student's differentiable, the teacher's not).
struct KdsvdVectors {
  Tensor student, teacher;
};
// The KDSVD loss over S >= 2 stages: student and teacher features per stage (NCHW, one dtype and
// device; the widths W must match per stage, channels and heights may differ), k >= 1 teacher vectors
// (at most every stage's W). 0-D. The teacher's features get no gradient. When `vectors` is given it
// receives each stage's compared vectors (what retort-inspect shows).
Tensor kdsvd_loss(const std::vector<Tensor>& student, const std::vector<Tensor>& teacher, int64_t k = 1,
                  std::vector<KdsvdVectors>* vectors = nullptr);

void add_kdsvd_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> kdsvd_node_functions();

}  // namespace retort
