// Reductions over chosen dimensions. `dims` may be negative and in any order; an empty `dims` means
// every dimension. keepdim keeps reduced dimensions with size 1 (PyTorch semantics).
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace retort {

Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
// Maximum (torch.amax): the gradient is shared equally among tied maxima.
Tensor max(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor min(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
// Variance with divisor N - correction (correction 1 = unbiased, 0 = biased), and its square root.
Tensor var(const Tensor& x, std::vector<int64_t> dims = {}, bool unbiased = true, bool keepdim = false);
// Named stddev, not std, so that `using namespace retort;` does not make std:: ambiguous.
Tensor stddev(const Tensor& x, std::vector<int64_t> dims = {}, bool unbiased = true, bool keepdim = false);

// Sums g down to `shape` (the inverse of broadcasting): the backward of every broadcasting op.
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace retort
