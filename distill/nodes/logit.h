// Logit distillation nodes: Hinton KD, DKD (decoupled target / non-target KD) and the logit
// z-score of logit standardization (LS). Each is one fused autograd node with a hand-written
// backward, so a loss graph shows "KDLossBackward", "DKDLossBackward", "ZScoreBackward" rather than
// the softmaxes it is made of. Spec: /work/shared/research/methods.md §1.1, §1.4, §1.5.
//
// Conventions (all three):
//  - Logits are [B, K] (batch, classes), f32 or f64, CPU. Student and teacher share shape and dtype.
//  - Every row is computed in double with log-sum-exp (LSE); results are cast back to the dtype.
//  - Losses are 0-D, summed over classes and AVERAGED OVER THE BATCH B, and carry the T² factor
//    (Hinton's scaling, so gradient magnitudes do not shrink as T grows).
//  - Both logits are differentiable: the teacher gets a gradient when it requires one (the Generous
//    Teacher trains a teacher by distillation); a frozen teacher costs nothing extra.
//
// KD:   u = z/T,  log p = u − LSE(u),  KL_b = Σ_k p_t (log p_t − log p_s)   (0·log 0 = 0)
//       kd_loss = T² · (1/B) · Σ_b KL_b
//       ∂/∂z_s = (T/B)(p_s − p_t),   ∂/∂z_t = (T/B) p_t (log p_t − log p_s − KL_b)
//
// DKD:  g = target class, L = LSE_{k≠g}(u) (an exact masked LSE, no ±1000 mask),
//       d = u_g − L (the binary target-vs-rest logit), so LSE(u) = L + softplus(d) and
//       log p_g = −softplus(−d),  log(1 − p_g) = −softplus(d)      (never log of a subtraction)
//       TCKD_b = p_g^t (log p_g^t − log p_g^s) + (1−p_g^t)(log(1−p_g^t) − log(1−p_g^s))
//       NCKD_b = Σ_{k≠g} p̂_t (log p̂_t − log p̂_s),   log p̂_k = u_k − L  (softmax over k ≠ g)
//       dkd_loss = (T²/B) Σ_b (α TCKD_b + β_b NCKD_b)      (β_b = β, or a per-sample tensor)
//       Identity: KL_b = TCKD_b + (1 − p_g^t) NCKD_b, so α = 1, β_b = 1 − p_g^t gives kd_loss.
//
// Z-score (LS): per row, μ = mean_k z, σ = unbiased std (divide by K−1, torch's default),
//       Z(z) = (z − μ) / (eps + σ)      — eps is added to σ, not to the variance (the LS code).
//       ∂Z_i/∂z_j = (δ_ij − 1/K)/s − d_i d_j / ((K−1) σ s²),  s = σ + eps, d = z − μ.
//       A constant row (σ = 0) maps to 0; its gradient keeps only the first term, (g − ḡ)/eps (the
//       std's term is 0·∞ there and taken as 0, as PyTorch does), and 0 when eps = 0 too.
//       KD+LS is kd_loss(zscore(z_s), zscore(z_t), T_base): the T² factor uses the base temperature.
#pragma once
#include <string>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

// Hinton KD with T² scaling. temperature > 0. Node "KDLossBackward".
Tensor kd_loss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature);

// DKD (Zhao et al., CVPR 2022). targets: I64 [B] in [0, K); K >= 2. temperature > 0.
// Node "DKDLossBackward" (student and teacher logits).
Tensor dkd_loss(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets, double alpha,
                double beta, double temperature);
// DKD with a per-sample NCKD weight beta [B] (same dtype as the logits), e.g. β_b = 1 − p_g^t for the
// KD identity, or a mask that keeps NCKD only on samples the teacher gets right. beta is a
// differentiable input too (∂/∂β_b = (T²/B) NCKD_b). Node "DKDLossBackward".
Tensor dkd_loss_per_sample_beta(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets,
                                double alpha, const Tensor& beta, double temperature);

// The per-sample pieces of DKD, unscaled (no T², no 1/B), in the logits' dtype, each [B]; not
// differentiable (for logging and tests). teacher_target_prob is p_g^t.
struct DKDTerms {
  Tensor tckd;
  Tensor nckd;
  Tensor teacher_target_prob;
};
DKDTerms dkd_terms(const Tensor& student_logits, const Tensor& teacher_logits, const Tensor& targets,
                   double temperature);

// Logit standardization, row-wise over K (K >= 2). eps >= 0. Node "ZScoreBackward".
Tensor zscore(const Tensor& logits, double eps = 1e-7);

// Generous Teacher (Ding et al., IVC 2024; methods.md §3.3): the distillation loss a generous teacher
// G minimises while it is trained from a standard teacher S. Both logit rows are z-scored (each
// network's own per-sample mean and unbiased std, as LS), so the temperature of a row is k·σ(z);
// then decoupled KD at base temperature k, weighted to keep the non-target part:
//   loss = (k²/B) Σ_b ( tckd_weight · TCKD_b + m_b · NCKD_b )
// with m_b = 1, or with only_teacher_correct m_b = [argmax z_S,b == y_b] (S's non-target knowledge
// only where S is right; TCKD, if weighted, still on every sample). The batch mean is over all B.
// It is dkd_loss_per_sample_beta(zscore(G), zscore(S), y, tckd_weight, m, k), so its graph shows
// ZScoreBackward and DKDLossBackward. generous_logits play the student's role (they get the gradient).
// With standard_std (methods.md's other reading, "the ST's std for both"), G's rows are centred by their
// own mean but scaled by S's std: G' = (G − mean(G)) / (σ(S) + 1e-7), so both rows share S's
// temperature k·σ(S); S' = zscore(S) as before.
Tensor generous_teacher_loss(const Tensor& generous_logits, const Tensor& standard_logits, const Tensor& targets,
                             double k, double tckd_weight, bool only_teacher_correct, bool standard_std = false);
// The mask m of generous_teacher_loss with only_teacher_correct: 1 where argmax(logits) == target
// (the first maximum on ties, as torch.argmax), else 0; [B] in the logits' dtype and device.
Tensor correct_prediction_mask(const Tensor& logits, const Tensor& targets);

// Gradcheck registration (logit_checks.cpp): cases "kd_loss.*", "dkd_loss.*", "zscore.*", ...
void add_logit_node_checks(std::vector<GradcheckCase>& out);
// The differentiable functions above, by name, for the gradcheck coverage test.
std::vector<std::string> logit_node_functions();

}  // namespace retort
