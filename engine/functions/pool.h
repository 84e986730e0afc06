// Pooling and nearest-neighbour resizing over NCHW tensors (PyTorch semantics, floor output sizes).
#pragma once
#include "engine/backend.h"
#include "engine/tensor.h"

namespace retort {

Tensor max_pool2d(const Tensor& x, const Pool2dParams& params);
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride = -1, int64_t padding = 0);  // stride -1 = kernel
Tensor avg_pool2d(const Tensor& x, const Pool2dParams& params);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = -1, int64_t padding = 0);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// F.interpolate(x, size=(out_h, out_w), mode="nearest").
Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace retort
