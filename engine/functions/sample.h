// Spatial transformers, as torch.nn.functional.affine_grid / grid_sample with align_corners=false,
// bilinear interpolation and zero padding (what SoKD's learnable feature augmentation needs).
#pragma once
#include "engine/tensor.h"

namespace retort {

// theta [N, 2, 3] -> grid [N, H, W, 2] of (x, y) sampling positions in [-1, 1] for an output of
// spatial size H x W. Differentiable in theta.
Tensor affine_grid(const Tensor& theta, int64_t H, int64_t W);
// x [N, C, H, W] sampled at grid [N, OH, OW, 2] -> [N, C, OH, OW]. Differentiable in x and grid.
Tensor grid_sample(const Tensor& x, const Tensor& grid);

}  // namespace retort
