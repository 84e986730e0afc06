// Feature distillation nodes: attention transfer (AT), channel-wise distillation (CWD), ReviewKD's
// hierarchical context loss (HCL), neuron selectivity transfer (NST), variational information
// distillation (VID), the overhaul of feature distillation's partial L2 (OFD), the activation
// boundaries' hinge (AB), the flow of solution procedure (FSP) and factor transfer (FT). Each follows
// its reference implementation to the formula (docs: /work/shared/research/methods.md §1.3, §1.6,
// §1.7; RepDistiller's distiller_zoo NST.py, VID.py, AB.py, FSP.py and FT.py, mdistiller's OFD.py;
// docs/methods/nst.md, vid.md, ofd.md, ab.md, fsp.md, ft.md); a node's loss is one stage's term, the
// strategy sums stages and applies its weight.
//
//   attention_map  q = a / max(‖a‖₂, 1e-12),  a[b, i] = mean_c f[b, c, i]^p          (F.normalize)
//   at_loss        mean_{b,i} (q(fs) − q(ft))²,  the larger map adaptive-avg-pooled to the smaller
//   cwd_loss       τ²/(N·C) · Σ_{n,c,i} φ_t (log φ_t − log φ_s),  φ = softmax_i(y[n, c, :] / τ)
//   hcl_loss       [mse(fs, ft) + Σ_{l∈(4,2,1), l<H} w_l mse(pool_l fs, pool_l ft)] / (1 + Σ w_l),
//                  w = 0.5, 0.25, 0.125 in the order the levels are used
//   nst_loss       mean K(t̂, t̂) + mean K(ŝ, ŝ) − 2 mean K(ŝ, t̂),  K(a, b)[n, i, j] = ⟨a[n, i], b[n, j]⟩²,
//                  x̂[n, c] = the channel's map over positions, L2-normalised (F.normalize, eps 1e-12);
//                  the larger map adaptive-avg-pooled to the smaller; channels may differ
//   vid_loss       mean_{n,c,h,w} ½ ((μ − t)² / v_c + log v_c),  v_c = softplus(log_scale_c) + eps
//   ofd_loss       (1/B) Σ [(s − m)² if s > m ≥ t] + [(s − t)² if s > t, m < t ≤ 0] + [(s − t)² if t > 0],
//                  m = the teacher's per-channel margin (ofd_margin), s the connector's output
//   ab_loss        (1/B) Σ [(s + μ)² if s > −μ, t ≤ 0] + [(s − μ)² if s ≤ μ, t > 0]: the student's
//                  pre-ReLU response pushed at least μ past 0 on the side where the teacher's neuron is
//                  (on: t > 0)
//   fsp_matrix     G[b, j, i] = mean_positions top[b, j] · bot[b, i]  ([B, C_top, C_bot]), the larger map
//                  adaptive-avg-pooled to the smaller: how one stage's channels flow into the next's
//   fsp_loss       mean (G(s_bot, s_top) − G(t_bot, t_top))²: the student's flow matrices against the
//                  teacher's (equal channel counts on both sides; the spatial sizes may differ)
//   ft_loss        mean |q(fs) − q(ft)|^p2 with q = attention_map(·, p1) (FT.py's factor: F.normalize of
//                  the channel mean of f^p1), the larger map adaptive-avg-pooled to the smaller
//
// All take NCHW features (f32 or f64, both operands alike) and differentiate in both operands (vid_loss
// also in log_scale; ab_loss in the student's only); teacher features usually need no gradient and then
// cost none.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

// The check every pair-of-maps node starts with: fs and ft are NCHW feature maps of one float dtype and
// device, with the same batch size and no empty dimension; an error begins with `op` and names both
// tensors as `a` and `b` (a wrong tap usually shows as a wrong pair).
void check_feature_pair(const char* op, const Tensor& fs, const Tensor& ft, const char* a = "student",
                        const char* b = "teacher");
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

// fs [B, Cs, Hs, Ws], ft [B, Ct, Ht, Wt] (a common size after pooling, as at_loss). 0-D result,
// an "NSTLossBackward" node (after the pooling nodes, if any). Differentiates the whole expression in
// both operands: the reference detaches its teacher-teacher term, which changes nothing for a frozen
// teacher, the only way it is used.
Tensor nst_loss(const Tensor& fs, const Tensor& ft);
// mean [B, C, H, W] (the regressor's prediction of the teacher's feature), target of the same shape,
// log_scale [C] (the per-channel variance's parameter); eps >= 0. 0-D result, one "VIDLossBackward"
// node differentiable in all three.
Tensor vid_loss(const Tensor& mean, const Tensor& target, const Tensor& log_scale, double eps = 1e-5);
// softplus(log_scale) + eps: the per-channel variance vid_loss uses (no graph; for inspection).
Tensor vid_variance(const Tensor& log_scale, double eps = 1e-5);

// s and t [B, C, H, W] of one shape (pre-ReLU features: the student's through the connector, the
// teacher's pooled to its size), margin [C]. 0-D, one "OFDLossBackward" node, differentiable in s and t
// (not in the margin, a constant of the teacher).
Tensor ofd_loss(const Tensor& s, const Tensor& t, const Tensor& margin);
// OFD's margin per channel from the affine parameters of the BN before the teacher's ReLU: the mean
// of the negative part of N(β, |γ|²), E[x | x < 0] = β − |γ| φ(β/|γ|) / Φ(−β/|γ|), where
// Φ(−β/|γ|) > 0.001; −3|γ| where it is not (and min(β, 0) where γ = 0). weight, bias [C] -> [C], on
// their device, in their dtype, no graph.
Tensor ofd_margin(const Tensor& bn_weight, const Tensor& bn_bias);
// s and t [B, C, H, W] of one shape (the student's pre-ReLU feature through the connector, the
// teacher's pre-ReLU feature); margin μ >= 0. 0-D, one "ABLossBackward" node, differentiable in s only
// (t enters through which side of 0 it is on: no gradient).
Tensor ab_loss(const Tensor& s, const Tensor& t, double margin = 1.0);
// bot [B, Cb, Hb, Wb] (a stage's input side), top [B, Ct, Ht, Wt] (its output side) -> [B, Ct, Cb],
// RepDistiller's FSP.compute_fsp for one pair. Composed of adaptive_avg_pool2d (where the sizes
// differ), reshape, one matmul and one affine node.
Tensor fsp_matrix(const Tensor& bot, const Tensor& top);
// The FSP term of one pair of consecutive taps: fsp_matrix on the student's pair against the teacher's,
// mean squared difference (FSP.compute_loss). s_bot and t_bot must have equal channels, s_top and t_top
// too (FSP's requirement; an error naming the four shapes). 0-D; composed of fsp_matrix and mse_loss.
Tensor fsp_loss(const Tensor& s_bot, const Tensor& s_top, const Tensor& t_bot, const Tensor& t_top);
// FT's factor loss (FactorTransfer.factor_loss): fs [B, Cs, Hs, Ws] (the translator's factor), ft
// [B, Ct, Ht, Wt] (the paraphraser's); channels may differ, the larger map is pooled to the smaller.
// p1 > 0, p2 >= 1: p2 = 1 is the mean absolute difference (the reference's default), otherwise the
// mean of |d|^p2 (the reference takes d^p2, the same for even p2). 0-D; composed of attention_map,
// abs/pow and mean nodes.
Tensor ft_loss(const Tensor& fs, const Tensor& ft, double p1 = 2.0, double p2 = 1.0);

// Gradcheck cases of this family (feature_checks.cpp) and the functions they cover; the connectors'
// conv_transpose2d (distill/connectors.h) is checked here too.
void add_feature_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> feature_node_functions();

}  // namespace retort
