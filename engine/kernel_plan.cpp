// Host-side kernel planning shared by the backends (see kernel_plan.h).
#include "engine/kernel_plan.h"

namespace retort {

BroadcastPlan plan_broadcast(const Shape& out, const Shape& a, const Shape& b) {
  const size_t r = out.size();
  auto strides_for = [&](const Shape& s) {
    std::vector<int64_t> st(r, 0);
    const auto cs = contiguous_strides(s);
    const size_t off = r - s.size();
    for (size_t i = 0; i < s.size(); ++i) st[off + i] = (s[i] == 1 && out[off + i] != 1) ? 0 : cs[i];
    return st;
  };
  const auto sa = strides_for(a), sb = strides_for(b);
  BroadcastPlan p;
  for (size_t i = 0; i < r; ++i) {
    if (out[i] == 1) continue;  // size-1 dims contribute nothing
    if (!p.size.empty() && p.sa.back() == sa[i] * out[i] && p.sb.back() == sb[i] * out[i]) {
      p.size.back() *= out[i];
      p.sa.back() = sa[i];
      p.sb.back() = sb[i];
    } else {
      p.size.push_back(out[i]);
      p.sa.push_back(sa[i]);
      p.sb.push_back(sb[i]);
    }
  }
  if (p.size.empty()) p = {{1}, {0}, {0}};
  return p;
}

CopyPlan coalesce_copy(const StridedView& sv, const StridedView& dv, const Shape& shape) {
  CopyPlan c;
  c.src.offset = sv.offset;
  c.dst.offset = dv.offset;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!c.shape.empty()) {
      const size_t last = c.shape.size() - 1;
      if (c.src.strides[last] == shape[d] * sv.strides[d] && c.dst.strides[last] == shape[d] * dv.strides[d]) {
        c.shape[last] *= shape[d];
        c.src.strides[last] = sv.strides[d];
        c.dst.strides[last] = dv.strides[d];
        continue;
      }
    }
    c.shape.push_back(shape[d]);
    c.src.strides.push_back(sv.strides[d]);
    c.dst.strides.push_back(dv.strides[d]);
  }
  return c;
}

ChannelLayout channel_layout(const Shape& x) {
  ChannelLayout l;
  l.n = x[0];
  l.c = x[1];
  for (size_t d = 2; d < x.size(); ++d) l.s *= x[d];
  return l;
}

}  // namespace retort
