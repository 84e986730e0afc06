// Relation distillation nodes: losses that compare how the samples of a batch relate to each other
// in the student and in the teacher, rather than the features themselves — so the two networks'
// feature widths may differ and no connector is needed. Each follows the reference implementation
// (RepDistiller's distiller_zoo: SP.py, PKT.py, RKD.py, CC.py) to the formula:
//
//   similarity_matrix  G = F Fᵀ with every row L2-normalised (F.normalize), F = f viewed [B, D]
//   sp_loss            ‖G_s − G_t‖²_F / B²                                   (Tung & Mori, ICCV 2019)
//   pkt_probabilities  P[i, j] = S[i, j] / Σ_k S[i, k],  S = (x̂ᵢ·x̂ⱼ + 1) / 2,  x̂ = x / (‖x‖ + 1e-7)
//   pkt_loss           mean_{i,j} P_t (log(P_t + 1e-7) − log(P_s + 1e-7))   (Passalis & Tefas, ECCV 2018)
//   rkd_distances      ψ_D[i, j] = ‖fᵢ − fⱼ‖ / μ, μ the mean over i ≠ j; 0 on the diagonal
//   rkd_angles         ψ_A[a, b, c] = ⟨e_ab, e_ac⟩,  e_ab = normalize(f_b − f_a)   ([B, B, B])
//   rkd_loss           w_d · smooth_l1(ψ_D(s), ψ_D(t)) + w_a · smooth_l1(ψ_A(s), ψ_A(t))   (Park et al., CVPR 2019)
//   cc_loss            Σ_{b<B−1} Σ_d δ[b, d] δ[b+1, d] / (B − 1),  δ = |f_s − f_t|
//                      (RepDistiller's Correlation, "the authors' code"; not the paper's kernel matrix —
//                      see docs/methods/cc.md)
//
// Inputs are [B, ...] (any rank ≥ 2; a 4-D feature map is flattened per sample, as the references'
// view(B, -1)), f32 or f64, B ≥ 2 for the relation maps. The losses of a batch of one sample (the last,
// incomplete batch of an epoch can be one) are 0 with a zero gradient: there is no pair to compare
// (SP.py and PKT.py give 0 there too; RKD.py a NaN, the mean of no distances). Every relation map is one node with a hand-written backward, so
// a graph shows "SimilarityMatrixBackward", "PKTProbabilitiesBackward", "RKDDistancesBackward" and
// "RKDAnglesBackward"; the losses compose them with mse_loss / smooth_l1_loss / log. Both operands
// are differentiable; the strategies pass teacher features that need no gradient.
//
// One deliberate difference from the references, in degenerate inputs only: a pair of samples closer
// than 1e-12 (its squared distance for ψ_D, its distance for ψ_A) gets no gradient, where PyTorch's
// clamp / F.normalize give the direction of a zero vector a derivative of 1e12 × the upstream. The
// diagonal pairs (a, a) are such pairs but are identically 0, so there the two agree exactly.
#pragma once
#include <string>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

// f [B, ...] -> [B, B]. One "SimilarityMatrixBackward" node.
Tensor similarity_matrix(const Tensor& f);
// fs [B, ...], ft [B, ...] (per-sample sizes may differ). 0-D; mse_loss of the two similarity matrices.
Tensor sp_loss(const Tensor& fs, const Tensor& ft);

// f [B, ...] -> [B, B], rows summing to 1. One "PKTProbabilitiesBackward" node.
Tensor pkt_probabilities(const Tensor& f);
// fs [B, ...], ft [B, ...]. 0-D.
Tensor pkt_loss(const Tensor& fs, const Tensor& ft);

// f [B, ...] -> [B, B]. One "RKDDistancesBackward" node (the mean μ is differentiated too).
Tensor rkd_distances(const Tensor& f);
// f [B, ...] -> [B, B, B]. One "RKDAnglesBackward" node. Costs B²·D memory.
Tensor rkd_angles(const Tensor& f);
// fs [B, ...], ft [B, ...]; weights >= 0, a zero weight skips its part. 0-D.
Tensor rkd_loss(const Tensor& fs, const Tensor& ft, double distance_weight = 25.0, double angle_weight = 50.0);

// fs, ft [B, ...] of one shape (CC's two embeddings). 0-D; composed of engine functions (abs, slice,
// mul, sum), so the graph shows their nodes.
Tensor cc_loss(const Tensor& fs, const Tensor& ft);

// How alike two relation maps of one shape are ([B, B] or [B, B, B], no gradient): the Pearson
// correlation of their entries off the diagonal (i ≠ j; for angles b ≠ a ≠ c, b ≠ c), with how many
// there are — "r 0.834 over 4032 pairs". For retort-inspect's text; not a loss.
std::string relation_agreement(const Tensor& student, const Tensor& teacher);

// Gradcheck cases of this family (relation_checks.cpp) and the functions they cover.
void add_relation_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> relation_node_functions();

}  // namespace retort
