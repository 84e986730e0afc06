// Stage-wise distillation losses of MTKD-SSR (see stage.h) and their gradchecks.
#include "distill/nodes/stage.h"

#include <algorithm>

#include "distill/nodes/logit.h"
#include "engine/functions.h"

namespace retort {

namespace {
void check_stage_lists(const char* op, const std::vector<Tensor>& a, const char* an, const std::vector<Tensor>& b,
                       const char* bn) {
  RETORT_CHECK(!a.empty() && a.size() == b.size(), op, ": ", a.size(), " ", an, " for ", b.size(), " ", bn,
               " (one [B, K] tensor per stage in each, at least one stage)");
}

Tensor sum_into(const Tensor& total, const Tensor& l) { return total.defined() ? add(total, l) : l; }
}  // namespace

std::vector<std::pair<int, int>> review_pairs(int num_stages, bool adjacent_only, bool deep_teaches_shallow) {
  RETORT_CHECK(num_stages >= 1, "review_pairs: need at least one stage, got ", num_stages);
  std::vector<std::pair<int, int>> out;
  for (int lo = 0; lo < num_stages; ++lo)
    for (int hi = lo + 1; hi < num_stages; ++hi) {
      if (adjacent_only && hi != lo + 1) continue;
      out.push_back(deep_teaches_shallow ? std::pair{lo, hi} : std::pair{hi, lo});
    }
  std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.first < b.first; });
  return out;
}

Tensor stage_response_loss(const std::vector<Tensor>& student_stage_logits,
                           const std::vector<Tensor>& teacher_stage_logits, double temperature) {
  check_stage_lists("stage_response_loss", student_stage_logits, "student stage logits", teacher_stage_logits,
                    "teacher stage logits");
  Tensor total;
  for (size_t k = 0; k < student_stage_logits.size(); ++k)
    total = sum_into(total, kd_loss(student_stage_logits[k], teacher_stage_logits[k].detach(), temperature));
  return total;
}

Tensor cross_stage_review_loss(const std::vector<Tensor>& learner_logits, const std::vector<Tensor>& teacher_logits,
                               const std::vector<std::pair<int, int>>& pairs, double temperature) {
  const char* op = "cross_stage_review_loss";
  check_stage_lists(op, learner_logits, "learner logits", teacher_logits, "teacher logits");
  RETORT_CHECK(!pairs.empty(), op, ": no (learner, teacher) pairs: the review needs at least two stages, got ",
               learner_logits.size());
  const int n = static_cast<int>(learner_logits.size());
  Tensor total;
  for (const auto& [j, k] : pairs) {
    RETORT_CHECK(j >= 0 && j < n && k >= 0 && k < n && j != k, op, ": pair (", j, ", ", k,
                 ") is not two different stages of ", n);
    total = sum_into(total, kd_loss(learner_logits[static_cast<size_t>(j)],
                                    teacher_logits[static_cast<size_t>(k)].detach(), temperature));
  }
  return total;
}

Tensor channel_distill_loss(const Tensor& fs, const Tensor& ft) {
  const char* op = "channel_distill_loss";
  RETORT_CHECK(fs.dim() == 4 && ft.dim() == 4 && fs.shape()[0] == ft.shape()[0] && fs.shape()[1] == ft.shape()[1],
               op, ": student ", fs.meta_str(), " and teacher ", ft.meta_str(),
               " must be [B, C, H, W] with the same B and C (bring the channels together with an adapter first)");
  return mse_loss(adaptive_avg_pool2d(fs, 1, 1), adaptive_avg_pool2d(ft, 1, 1));
}

// ---- gradchecks ----------------------------------------------------------------------------------------

void add_stage_node_checks(std::vector<GradcheckCase>& out) {
  using Inputs = std::vector<Tensor>;
  // Three stages of [4, 6] logits. The targets are separate constant inputs (the losses detach them),
  // so the finite differences see exactly the function the backward differentiates.
  out.push_back({"stage_response_loss.three_stages", "stage_response_loss",
                 [](Generator& g) {
                   Inputs in;
                   for (int i = 0; i < 3; ++i) in.push_back(gc_randn({4, 6}, g, 2.0));
                   for (int i = 0; i < 3; ++i) in.push_back(Tensor::randn({4, 6}, g, DType::F64, 0.0, 2.0));
                   return in;
                 },
                 [](const Inputs& in) {
                   return stage_response_loss({in[0], in[1], in[2]}, {in[3], in[4], in[5]}, 4.0);
                 }});
  for (const bool adjacent : {false, true}) {
    out.push_back({std::string("cross_stage_review_loss.") + (adjacent ? "adjacent" : "all_pairs") + "_t3",
                   "cross_stage_review_loss",
                   [](Generator& g) {
                     Inputs in;
                     for (int i = 0; i < 3; ++i) in.push_back(gc_randn({4, 6}, g, 2.0));
                     for (int i = 0; i < 3; ++i) in.push_back(Tensor::randn({4, 6}, g, DType::F64, 0.0, 2.0));
                     return in;
                   },
                   [adjacent](const Inputs& in) {
                     return cross_stage_review_loss({in[0], in[1], in[2]}, {in[3], in[4], in[5]},
                                                    review_pairs(3, adjacent, true), 3.0);
                   }});
  }
  out.push_back({"cross_stage_review_loss.shallow_teaches_deep", "cross_stage_review_loss",
                 [](Generator& g) {
                   return Inputs{gc_randn({3, 5}, g), gc_randn({3, 5}, g), Tensor::randn({3, 5}, g, DType::F64),
                                 Tensor::randn({3, 5}, g, DType::F64)};
                 },
                 [](const Inputs& in) {
                   return cross_stage_review_loss({in[0], in[1]}, {in[2], in[3]}, review_pairs(2, false, false), 1.0);
                 }});
  out.push_back({"channel_distill_loss.sizes_differ", "channel_distill_loss",
                 [](Generator& g) { return Inputs{gc_randn({2, 3, 4, 4}, g), gc_randn({2, 3, 2, 2}, g)}; },
                 [](const Inputs& in) { return channel_distill_loss(in[0], in[1]); }});
}

std::vector<std::string> stage_node_functions() {
  return {"stage_response_loss", "cross_stage_review_loss", "channel_distill_loss"};
}

}  // namespace retort
