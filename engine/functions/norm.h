// Batch normalisation over [N, C, *] per channel (torch.nn.functional.batch_norm).
// training: normalise with the batch mean and biased variance; when running_mean/running_var are
//   defined they are updated in place: r = (1 - momentum) * r + momentum * batch_stat, the variance
//   entering unbiased (N/(N-1)), as PyTorch does. Gradients flow to x, weight and bias.
// eval: normalise with running_mean/running_var (which must be defined).
// weight/bias may be undefined (affine=false).
#pragma once
#include "engine/tensor.h"

namespace retort {

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5);

// relu(batch_norm(...)) in one kernel pass forward and one backward (the ReLU's mask applied inside
// the BN backward): the same values and gradients as the two functions, one memory pass less each
// way. Models use it through BatchNorm2d::forward_relu.
Tensor batch_norm_relu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                       double eps = 1e-5);

}  // namespace retort
