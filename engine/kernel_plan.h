// Host-side planning shared by every backend's kernels: shapes and strides are simplified once, the
// same way on each device, so the CPU reference and the CUDA kernels walk memory by one plan.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/backend.h"

namespace retort {

// A binary op's output shape with size-1 dimensions dropped and neighbours merged where both operands
// step through them as one; sa/sb are each operand's strides (0 where it broadcasts). Never empty: a
// one-element output is {1} with strides {0}.
struct BroadcastPlan {
  std::vector<int64_t> size, sa, sb;
};
BroadcastPlan plan_broadcast(const Shape& out, const Shape& a, const Shape& b);

// A strided copy with size-1 dimensions dropped and neighbours merged wherever both views step through
// them as one (stride[d] == shape[d+1] * stride[d+1] on both sides). Empty shape: a single element.
struct CopyPlan {
  Shape shape;
  StridedView src, dst;
};
CopyPlan coalesce_copy(const StridedView& src, const StridedView& dst, const Shape& shape);

// x of shape [N, C, *] viewed as [N, C, S] (S = product of the dims after C, 1 for [N, C]): batch norm.
struct ChannelLayout {
  int64_t n = 0, c = 0, s = 1;
};
ChannelLayout channel_layout(const Shape& x);

}  // namespace retort
