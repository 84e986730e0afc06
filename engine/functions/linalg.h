// Matrix products through the backend's GEMM (OpenBLAS on the CPU).
#pragma once
#include "engine/tensor.h"

namespace retort {

// a [.., m, k] @ b [.., k, n]: 1-D operands are promoted as in torch.matmul; batch dimensions of
// 3-D and higher operands broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [.., in] @ weight[out, in]^T + bias[out] (bias may be undefined), as torch.nn.functional.linear.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace retort
