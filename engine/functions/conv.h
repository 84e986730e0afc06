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

// Inference only: relu?(batch_norm_eval(conv2d(x, weight, bias))) with the batch norm's running
// statistics, in one backend call (on the CPU, F32: the BN's scale and shift and the ReLU are the
// convolution's epilogue). Nothing is recorded for autograd: with gradients enabled, any input that
// requires a gradient is an error (train with conv2d + batch_norm). bias, bn_weight, bn_bias may be
// undefined. Differs from the separate ops only by the rounding of where the BN's multiply happens.
Tensor conv2d_bn_eval(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                      const Tensor& bn_weight, const Tensor& bn_bias, const Tensor& running_mean,
                      const Tensor& running_var, double eps, bool relu);

}  // namespace retort
