// Feature distillation nodes: attention transfer (AT), channel-wise distillation (CWD) and ReviewKD's
// hierarchical context loss (HCL). Each follows its reference implementation to the formula
// (docs: /work/shared/research/methods.md §1.3, §1.6, §1.7); a node's loss is one stage's term, the
// strategy sums stages and applies its weight.
//
//   attention_map  q = a / max(‖a‖₂, 1e-12),  a[b, i] = mean_c f[b, c, i]^p          (F.normalize)
//   at_loss        mean_{b,i} (q(fs) − q(ft))²,  the larger map adaptive-avg-pooled to the smaller
//   cwd_loss       τ²/(N·C) · Σ_{n,c,i} φ_t (log φ_t − log φ_s),  φ = softmax_i(y[n, c, :] / τ)
//   hcl_loss       [mse(fs, ft) + Σ_{l∈(4,2,1), l<H} w_l mse(pool_l fs, pool_l ft)] / (1 + Σ w_l),
//                  w = 0.5, 0.25, 0.125 in the order the levels are used
//
// All take NCHW features (f32 or f64, both operands alike) and differentiate in both operands;
// teacher features usually need no gradient and then cost none.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

// f [B, C, H, W] -> [B, H*W]. One "AttentionMapBackward" node.
Tensor attention_map(const Tensor& f, double p = 2.0);
// fs and ft [B, *, H, W] brought to one spatial size: where a size differs, the larger is
// adaptive-avg-pooled to the smaller (per dimension); a map already at that size is returned as is.
std::pair<Tensor, Tensor> pool_to_common_size(const Tensor& fs, const Tensor& ft);
// fs [B, Cs, Hs, Ws], ft [B, Ct, Ht, Wt]: channels may differ; where a spatial size differs the larger
// is adaptive-avg-pooled to the smaller (mdistiller's single_stage_at_loss). 0-D result. Composed of
// attention_map (and adaptive_avg_pool2d) nodes and one mse_loss node.
Tensor at_loss(const Tensor& fs, const Tensor& ft, double p = 2.0);
// fs and ft of one shape [N, C, H, W]; tau > 0. 0-D result, one "CWDLossBackward" node. The
// reference's loss_weight is left to the strategy.
Tensor cwd_loss(const Tensor& fs, const Tensor& ft, double tau);
// fs and ft of one shape [N, C, H, W]. 0-D result, one "HCLLossBackward" node.
Tensor hcl_loss(const Tensor& fs, const Tensor& ft);

// Gradcheck cases of this family (feature_checks.cpp) and the functions they cover; the connectors'
// conv_transpose2d (distill/connectors.h) is checked here too.
void add_feature_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> feature_node_functions();

}  // namespace retort
