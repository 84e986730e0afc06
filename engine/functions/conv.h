// 2-D convolution (cross-correlation, as PyTorch): x [N, C, H, W], weight [O, C/groups, KH, KW],
// optional bias [O]; output [N, O, OH, OW] with OH = (H + 2*pad_h - dil_h*(KH-1) - 1) / stride_h + 1.
// groups == C == O is depthwise. CPU: im2col + GEMM per group, a direct loop for depthwise.
#pragma once
#include "engine/backend.h"
#include "engine/tensor.h"

namespace retort {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params);
// Square stride/padding/dilation shorthand.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int64_t stride = 1,
              int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);

}  // namespace retort
