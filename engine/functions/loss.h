// Softmax family and losses.
#pragma once
#include "engine/generator.h"
#include "engine/tensor.h"

namespace retort {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// logits [N, C], targets I64 [N] with values in [0, C): mean over the batch of the cross entropy,
// with optional label smoothing s (target distribution (1 - s) * onehot + s / C), as F.cross_entropy.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, double label_smoothing = 0.0);
// F.kl_div(input, target, reduction="batchmean"): input holds log-probabilities, target
// probabilities; sum over all elements of target * (log target - input), divided by the batch size
// (dim 0). Terms with target == 0 contribute 0. Differentiable in both.
Tensor kl_div(const Tensor& input, const Tensor& target);
// Mean squared error over all elements.
Tensor mse_loss(const Tensor& a, const Tensor& b);
// F.smooth_l1_loss(a, b, beta=beta), mean over all elements: with d = a - b, 0.5 d² / beta where
// |d| < beta, |d| - 0.5 beta elsewhere (the Huber loss divided by beta). beta > 0. Differentiable in
// both; the gradient clamp(d, -beta, beta) / beta / n is continuous.
Tensor smooth_l1_loss(const Tensor& a, const Tensor& b, double beta = 1.0);
// Zeroes each element with probability p and scales the rest by 1/(1-p) when training; identity
// otherwise. The mask comes from `gen`, so a seed fixes it.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace retort
