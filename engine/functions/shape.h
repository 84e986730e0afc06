// Shape functions. reshape shares storage with its input (a view); the rest produce new contiguous
// tensors through one strided-copy kernel. Dimensions may be negative (counted from the end).
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace retort {

// One entry may be -1 (inferred).
Tensor reshape(const Tensor& x, Shape shape);
// dst's values = src's, in place (src converted to dst's dtype and device; equal element counts), not
// recorded by autograd; counts as an in-place update of dst (Tensor::bump_version). The one way the
// library overwrites a tensor others hold: load_state_dict, the Distiller's trial steps, strategies' state.
void copy_(Tensor& dst, const Tensor& src);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);  // dim must have size 1
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
// Elements start, start+step, ... below end along dim (negative start/end count from the end and
// are clamped to the size, as Python slicing).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
// Constant padding of the trailing dimensions, F.pad order: {last_lo, last_hi, 2nd_last_lo, ...}.
// Negative amounts crop.
Tensor pad(const Tensor& x, const std::vector<int64_t>& amounts, double value = 0.0);
// Broadcasts size-1 (or missing leading) dimensions to `shape`; -1 keeps a dimension.
Tensor expand(const Tensor& x, const Shape& shape);

}  // namespace retort
