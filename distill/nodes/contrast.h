// Contrastive representation distillation nodes (CRD: Tian, Krishnan & Isola, ICLR 2020), following
// RepDistiller's crd/memory.py (ContrastMemory) and crd/criterion.py (ContrastLoss, Embed) to the
// formula:
//
//   l2_normalize_rows  x / ‖x‖₂ per row (Embed's Normalize: no eps, a zero row is an error there too)
//   contrast_scores    P[b, k] = exp(⟨M[idx[b, k]], v[b]⟩ / T): a memory bank M [N, D] (state, no
//                      gradient) read at idx [B, K+1] (column 0 the positive), against embeddings v [B, D]
//   nce_loss           −(Σ_b log(P[b,0] / (P[b,0] + c)) + Σ_b Σ_{k≥1} log(K·Pn / (P[b,k] + c))) / B,
//                      Pn = 1/N (uniform noise), c = K·Pn + 1e-7; P already divided by the constant Z
//
// contrast_scores is composed of gather_rows (engine/functions/index.h) and a batched matmul, so it
// runs on every device and differentiates v; nce_loss is one "NCELossBackward" node.
#pragma once
#include <string>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

// x [B, D] -> each row divided by its L2 norm (composed of engine functions).
Tensor l2_normalize_rows(const Tensor& x);
// memory [N, D] (no grad), indices I64 [B, K+1] on the host, v [B, D] -> [B, K+1]; temperature > 0.
Tensor contrast_scores(const Tensor& memory, const Tensor& indices, const Tensor& v, double temperature);
// scores [B, K+1] > 0 (column 0 the positive pair), n_data the memory's N. 0-D.
Tensor nce_loss(const Tensor& scores, int64_t n_data);
// ContrastMemory's update, in place and without gradient: memory[y] ← normalize(momentum · memory[y] +
// (1 − momentum) · v) for the batch's distinct sample indices y (I64 [B], host) and embeddings v [B, D].
void contrast_memory_update(Tensor& memory, const Tensor& indices, const Tensor& v, double momentum);

void add_contrast_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> contrast_node_functions();

}  // namespace retort
