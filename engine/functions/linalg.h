// Matrix products through the backend's GEMM (OpenBLAS on the CPU); the symmetric eigendecomposition
// through LAPACK (CPU) or cuSOLVER (CUDA).
#pragma once
#include "engine/tensor.h"

namespace retort {

// a [.., m, k] @ b [.., k, n]: 1-D operands are promoted as in torch.matmul; batch dimensions of
// 3-D and higher operands broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [.., in] @ weight[out, in]^T + bias[out] (bias may be undefined), as torch.nn.functional.linear.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// Eigendecomposition of symmetric matrices a [.., n, n] (as torch.linalg.eigh): values [.., n] in
// ascending order and vectors [.., n, n] whose column j is the unit eigenvector of values[.., j], so
// a = vectors diag(values) vectors^T. The input is symmetrised first, (a + a^T) / 2, so its gradient
// is symmetric and finite differences of any entry agree with it. Each eigenvector's sign is fixed:
// its component of largest magnitude is positive (LAPACK and cuSOLVER leave the sign arbitrary;
// backend.h, symeig). Backward (either output or both):
//   grad_a = V (diag(grad_values) + F o skew(V^T grad_vectors)) V^T,  F_ij = 1 / (values_j - values_i),
// skew(M) = (M - M^T) / 2 — torch's formula. With repeated eigenvalues the eigenvectors are not unique
// and the gradient through them is infinite, as in torch; a pair whose term is exactly zero (neither
// vector receives a gradient, e.g. vectors a loss does not use) contributes 0 rather than 0/0.
// gap_eps > 0 bounds the gradient near repeated eigenvalues: F_ij = d / (d² + ε²) with d = values_j −
// values_i and ε = gap_eps · max_i |values_i| per matrix — 1/d up to a relative (ε/d)² for well
// separated pairs, at most 1/(2ε) and 0 for ties (a Tikhonov-style damping; what KDSVD's students
// need, docs/methods/kdsvd.md). The forward is the same either way.
struct EighResult {
  Tensor values, vectors;
};
EighResult eigh(const Tensor& a, double gap_eps = 0.0);

}  // namespace retort
