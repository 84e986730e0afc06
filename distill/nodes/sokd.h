// SoKD's nodes (Shen et al., ACM MM 2024; methods.md §3.1, docs/methods/sokd.md): the feature-level
// augmentation that refines the teacher's feature for the student, the straight-through path that
// gives its magnitudes a gradient, the Distinctive Area Detection Module's region masks, and the
// masked feature loss.
//
// Augmentation ops act on a feature f [B, C, H, W] with a value v = low + m (high − low) from a
// magnitude m ∈ [0, 1] (at m = 0.5 every symmetric op is the identity):
//   ShearX      (−0.3, 0.3)    affine θ = [[1, v, 0], [0, 1, 0]], bilinear, zero padding (affine_grid +
//   ShearY      (−0.3, 0.3)    θ = [[1, 0, 0], [v, 1, 0]]                 grid_sample, align_corners false)
//   TranslateX  (−0.45, 0.45)  θ = [[1, 0, 2v], [0, 1, 0]]   (a shift of v times the width: methods.md's
//   TranslateY  (−0.45, 0.45)  θ = [[1, 0, 0], [0, 1, 2v]]    fix of the dev code's v·H)
//   Rotate      (−30°, 30°)    θ = [[cos a, sin a, 0], [−sin a, cos a, 0]]
//   Cutout      (0, 0.2)       zero a round(vH) x round(vW) box at one random centre, same for the batch
//   Noise       (0, 0.1)       f + v · N(0, 1)
//   ChannelShuffle (0, 1)      a random channel permutation (v unused)
//   ChannelDrop (0, 0.5)       zero each channel with probability v, one mask for the batch, no rescale
// Every op is differentiable in f (the geometric ones through grid_sample), with the randomness drawn
// from the Generator given.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace retort {

enum class FeatureOp { ShearX, ShearY, TranslateX, TranslateY, Rotate, Cutout, Noise, ChannelShuffle, ChannelDrop };
constexpr int kNumFeatureOps = 9;

const char* feature_op_name(FeatureOp op);
// The (low, high) range of an op's value.
std::array<double, 2> feature_op_range(FeatureOp op);
// v for magnitude m (clamped to [0, 1]).
double feature_op_value(FeatureOp op, double magnitude);
// Applies one op with value v to f [B, C, H, W] (f32 or f64).
Tensor apply_feature_op(const Tensor& f, FeatureOp op, double value, Generator& gen);

// out[:, c] = x[:, perm[c]] for x [B, C, ...]; perm a permutation of 0..C-1. Node
// "ChannelPermuteBackward" (the gradient goes back through the inverse permutation).
Tensor permute_channels(const Tensor& x, const std::vector<int64_t>& perm);

// DADA's straight-through mix for magnitudes as one node: the value is f_aug exactly, the 0-D s (the
// sum of the applied ops' magnitudes) receives Σ(upstream gradient) and f_aug the upstream gradient
// itself. (The reference writes (f_aug − s).detach() + s, which gives f_aug none; that only differs
// when f_aug carries a gradient — in SoKD, the op-probability and sub-policy paths of sokd.cpp.)
// Node "StraightThroughMagnitudeBackward".
Tensor straight_through_magnitude(const Tensor& f_aug, const Tensor& magnitude_sum);

// ---- DAM regions ---------------------------------------------------------------------------------

// The regions the DAM heads point at (not differentiable; inputs are read as values):
//   1. keep the heatmap's local maxima: heat · [maxpool_kxk(heat, stride 1, pad k/2) == heat];
//   2. the top `k` scores over the flattened [classes, H, W] of each sample (ties: the lower index);
//   3. at each (y, x): centre (x + offset_x, y + offset_y), box = centre ± wh/2 with wh = (w, h),
//      top-left clamped at 0, bottom-right at (W−1, H−1), each coordinate truncated toward zero;
//   4. mask = Σ_j 1[rows y1..y2, columns x1..x2] (inclusive; overlaps count twice; a box whose end is
//      before its start is empty).
// heatmap [B, K, H, W] (after the sigmoid), wh and offset [B, 2, H, W] (channel 0 = x, 1 = y).
struct DamRegions {
  Tensor mask;     // [B, H, W], the heatmap's dtype: how many boxes cover each position
  Tensor boxes;    // i64 [B, k, 4]: x1, y1, x2, y2
  Tensor scores;   // [B, k]
  Tensor classes;  // i64 [B, k]: the heatmap channel of each peak
};
DamRegions dam_regions(const Tensor& heatmap, const Tensor& wh, const Tensor& offset, int64_t k, int64_t kernel = 3);

// mean over all B·C·H·W elements of ((fs − ft) · mask)², mask [B, H, W] broadcast over channels; fs and
// ft [B, C, H, W]. The mean is over every element, masked or not (the reference's MSE of masked maps).
Tensor masked_feature_mse(const Tensor& fs, const Tensor& ft, const Tensor& mask);

void add_sokd_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> sokd_node_functions();

}  // namespace retort
