// Elementwise differentiable functions. Binary functions broadcast as PyTorch does (shapes aligned at
// the trailing dimension; a size-1 or missing dimension stretches); both operands must share dtype and
// device. Gradients of broadcast operands are summed back to the operand's shape (sum_to).
#pragma once
#include "engine/tensor.h"

namespace retort {

// The broadcast shape of a and b; throws naming `op` and both shapes when they are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

Tensor add(const Tensor& a, const Tensor& b);
// relu(a + b) in one pass each way (the end of a residual block); broadcasts as add.
Tensor add_relu(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // gradient to a where a >= b, else to b
Tensor minimum(const Tensor& a, const Tensor& b);  // gradient to a where a <= b, else to b
// a * log(b), 0 where a == 0 (torch.xlogy); the entropy term of KL divergences.
Tensor xlogy(const Tensor& a, const Tensor& b);

// alpha * x + beta in one pass (scalar add/mul/sub/div are this).
Tensor affine(const Tensor& x, double alpha, double beta);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor abs(const Tensor& x);   // subgradient 0 at 0
Tensor sign(const Tensor& x);  // not differentiable (zero gradient)
Tensor clamp(const Tensor& x, double lo, double hi);  // gradient passes where lo <= x <= hi
Tensor relu(const Tensor& x);  // gradient passes where x > 0
// x > 0 ? x : negative_slope * x (F.leaky_relu); gradient 1 where x > 0, else negative_slope (at 0 too).
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);

// Comparison masks (1 where true, 0 elsewhere), not differentiable.
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);

}  // namespace retort
