// Stage-wise distillation losses of MTKD-SSR (Gou et al., IJCV 2023; methods.md §3.2, our reading of
// it in docs/methods/mtkd_ssr.md). Stage k = 1..K of a network gives logits z^k: the auxiliary
// classifier's for k < K, the network's own for k = K. Targets in these losses are STOP-GRADIENT: a
// loss never moves the logits it teaches with, only the ones that learn.
//
//   stage_response_loss   SRD   Σ_k  T² KL( softmax(sg(z_t^k)/T) ‖ softmax(z_s^k/T) )     (batch mean)
//   cross_stage_review_loss CRD Σ_(learner j, teacher k) T² KL( softmax(sg(z^k)/T) ‖ softmax(z^j/T) )
//   channel_distill_loss  CD    mean_{b,c} ( GAP(f_s)_{b,c} − GAP(f_t)_{b,c} )²           (CCSKD)
//
// Each KL term is one kd_loss node (KDLossBackward); targets pass through detach() first, so the graph
// shows exactly which logits learn. The review's (learner, teacher) pairs come from review_pairs(); the
// loss takes the learners' and the teachers' logits as two lists so that a caller (and the gradcheck)
// can give the teachers separately: MTKD-SSR passes the same list twice.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

// Which stage teaches which in the cross-stage review, over stages 0..num_stages-1 (0 = shallowest).
//   adjacent_only     only neighbouring stages (k, k−1) instead of every pair (j < k)
//   deep_teaches_shallow  the deeper stage is the teacher (the default reading: after stage k, the
//                     student re-teaches its earlier stages with stage k's prediction); false reverses
// Returns (learner, teacher) index pairs, learners in increasing order.
std::vector<std::pair<int, int>> review_pairs(int num_stages, bool adjacent_only, bool deep_teaches_shallow);

// SRD: student_stage_logits and teacher_stage_logits are equally long lists of [B, K] logits (one per
// stage); each teacher's logits are detached. temperature > 0. 0-D.
Tensor stage_response_loss(const std::vector<Tensor>& student_stage_logits,
                           const std::vector<Tensor>& teacher_stage_logits, double temperature);

// CRD: for each (j, k) of pairs, kd_loss(learner_logits[j], detach(teacher_logits[k]), T), summed.
// Both lists have one [B, K] tensor per stage (MTKD-SSR passes the student's stage logits twice).
Tensor cross_stage_review_loss(const std::vector<Tensor>& learner_logits, const std::vector<Tensor>& teacher_logits,
                               const std::vector<std::pair<int, int>>& pairs, double temperature);

// CD: fs [B, C, Hs, Ws], ft [B, C, Ht, Wt] (same B and C; sizes may differ, GAP removes them). 0-D.
Tensor channel_distill_loss(const Tensor& fs, const Tensor& ft);

// Gradcheck registration (stage_checks in stage.cpp): "stage_response_loss.*", "cross_stage_review_loss.*",
// "channel_distill_loss.*".
void add_stage_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> stage_node_functions();

}  // namespace retort
