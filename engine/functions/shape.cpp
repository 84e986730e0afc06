// Shape functions (see shape.h). All but reshape are one strided copy: a source view (offset and
// per-dimension strides into the input's storage) copied into a destination view of a new tensor.
#include "engine/functions/shape.h"

#include <algorithm>

#include "engine/functions/common.h"
#include "engine/functions/reduce.h"

namespace retort {

namespace {

// Copies region `shape` from src (starting at src_start per dim) into dst (at dst_start per dim).
void copy_region(const Tensor& src, const std::vector<int64_t>& src_start, Tensor& dst,
                 const std::vector<int64_t>& dst_start, const Shape& shape) {
  StridedView sv{0, contiguous_strides(src.shape())}, dv{0, contiguous_strides(dst.shape())};
  for (size_t d = 0; d < shape.size(); ++d) {
    sv.offset += src_start[d] * sv.strides[d];
    dv.offset += dst_start[d] * dv.strides[d];
  }
  backend_for(src).strided_copy(src, sv, dst, dv, shape);
}

}  // namespace

Tensor reshape(const Tensor& x, Shape shape) {
  fn::check_defined("reshape", x, "input");
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      RETORT_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      RETORT_CHECK(shape[i] >= 0, "reshape: invalid size ", shape[i], " in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    RETORT_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape ", x.meta_str(), " into ",
                 shape_str(shape));
    shape[infer] = x.numel() / known;
  }
  RETORT_CHECK(shape_numel(shape) == x.numel(), "reshape: cannot reshape ", x.meta_str(), " (", x.numel(),
               " elements) into ", shape_str(shape));
  Tensor out = x.view_as_shape(shape);
  const Shape xs = x.shape();
  return record(out, "ReshapeBackward", {x}, [xs](const Tensor& g, const Node&) {
    return std::vector<Tensor>{g.view_as_shape(xs)};
  });
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  fn::check_defined("flatten", x, "input");
  if (x.dim() == 0) return reshape(x, {1});
  const int s = normalize_dim(start_dim, x.dim(), "flatten"), e = normalize_dim(end_dim, x.dim(), "flatten");
  RETORT_CHECK(s <= e, "flatten: start_dim ", start_dim, " is after end_dim ", end_dim);
  Shape out;
  for (int i = 0; i < s; ++i) out.push_back(x.shape()[i]);
  int64_t m = 1;
  for (int i = s; i <= e; ++i) m *= x.shape()[i];
  out.push_back(m);
  for (int i = e + 1; i < x.dim(); ++i) out.push_back(x.shape()[i]);
  return reshape(x, out);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  const int d = normalize_dim(dim, x.dim() + 1, "unsqueeze");
  Shape s = x.shape();
  s.insert(s.begin() + d, 1);
  return reshape(x, s);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  const int d = normalize_dim(dim, x.dim(), "squeeze");
  RETORT_CHECK(x.shape()[d] == 1, "squeeze: dimension ", dim, " of ", x.meta_str(), " has size ", x.shape()[d],
               ", expected 1");
  Shape s = x.shape();
  s.erase(s.begin() + d);
  return reshape(x, s);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  fn::check_defined("permute", x, "input");
  RETORT_CHECK(static_cast<int64_t>(order.size()) == x.dim(), "permute: order has ", order.size(),
               " entries for ", x.meta_str());
  std::vector<int64_t> ord(order.size()), inverse(order.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) {
    ord[i] = normalize_dim(order[i], x.dim(), "permute");
    RETORT_CHECK(inverse[ord[i]] < 0, "permute: dimension ", order[i], " repeated in the order");
    inverse[ord[i]] = static_cast<int64_t>(i);
  }
  const auto xs = contiguous_strides(x.shape());
  Shape out_shape(ord.size());
  StridedView sv{0, std::vector<int64_t>(ord.size())};
  for (size_t i = 0; i < ord.size(); ++i) {
    out_shape[i] = x.shape()[ord[i]];
    sv.strides[i] = xs[ord[i]];
  }
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  backend_for(x).strided_copy(x, sv, out, StridedView{0, contiguous_strides(out_shape)}, out_shape);
  return record(out, "PermuteBackward", {x}, [inverse](const Tensor& g, const Node&) {
    return std::vector<Tensor>{permute(g, inverse)};
  });
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  fn::check_defined("transpose", x, "input");
  std::vector<int64_t> order(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) order[i] = i;
  std::swap(order[normalize_dim(dim0, x.dim(), "transpose")], order[normalize_dim(dim1, x.dim(), "transpose")]);
  return permute(x, order);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  fn::check_defined("slice", x, "input");
  const int d = normalize_dim(dim, x.dim(), "slice");
  RETORT_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = x.shape()[d];
  auto wrap = [n](int64_t i) { return std::clamp(i < 0 ? i + n : i, int64_t{0}, n); };
  start = wrap(start);
  end = std::max(wrap(end), start);
  Shape out_shape = x.shape();
  out_shape[d] = (end - start + step - 1) / step;
  StridedView sv{0, contiguous_strides(x.shape())};
  sv.offset = start * sv.strides[d];
  sv.strides[d] *= step;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  backend_for(x).strided_copy(x, sv, out, StridedView{0, contiguous_strides(out_shape)}, out_shape);
  const Shape xs = x.shape();
  return record(out, "SliceBackward", {x}, [xs, d, start, step](const Tensor& g, const Node&) {
    Tensor gx = Tensor::zeros(xs, g.dtype(), g.device());
    StridedView dv{0, contiguous_strides(xs)};
    dv.offset = start * dv.strides[d];
    dv.strides[d] *= step;
    backend_for(g).strided_copy(g, StridedView{0, contiguous_strides(g.shape())}, gx, dv, g.shape());
    return std::vector<Tensor>{gx};
  });
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  RETORT_CHECK(!xs.empty(), "cat: expected at least one tensor");
  const Tensor& first = xs[0];
  fn::check_defined("cat", first, "tensor 0");
  const int d = normalize_dim(dim, first.dim(), "cat");
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    fn::check_defined("cat", xs[i], "a tensor");
    RETORT_CHECK(xs[i].dtype() == first.dtype() && xs[i].device() == first.device(), "cat: tensor ", i, " is ",
                 xs[i].meta_str(), " but tensor 0 is ", first.meta_str());
    RETORT_CHECK(xs[i].dim() == first.dim(), "cat: tensor ", i, " is ", xs[i].meta_str(), ", tensor 0 is ",
                 first.meta_str(), " (ranks differ)");
    for (int64_t k = 0; k < first.dim(); ++k)
      RETORT_CHECK(k == d || xs[i].shape()[k] == first.shape()[k], "cat: along dim ", d, " tensor ", i, " has shape ",
                   shape_str(xs[i].shape()), " but tensor 0 has ", shape_str(first.shape()));
    out_shape[d] += xs[i].shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> sizes;
  std::vector<int64_t> zero(out_shape.size(), 0), at(out_shape.size(), 0);
  for (const Tensor& x : xs) {
    copy_region(x, zero, out, at, x.shape());
    at[d] += x.shape()[d];
    sizes.push_back(x.shape()[d]);
  }
  return record(out, "CatBackward", xs, [sizes, d](const Tensor& g, const Node& n) {
    std::vector<Tensor> grads;
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      grads.push_back(n.needs_grad(i) ? slice(g, d, off, off + sizes[i]) : Tensor());
      off += sizes[i];
    }
    return grads;
  });
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& amounts, double value) {
  fn::check_defined("pad", x, "input");
  RETORT_CHECK(amounts.size() % 2 == 0 && static_cast<int64_t>(amounts.size()) <= 2 * x.dim(), "pad: ",
               amounts.size(), " amounts for ", x.meta_str(), " (expected pairs for at most ", x.dim(), " dims)");
  const size_t nd = x.shape().size();
  Shape out_shape = x.shape();
  std::vector<int64_t> src_start(nd, 0), dst_start(nd, 0);
  Shape region = x.shape();
  for (size_t p = 0; p < amounts.size() / 2; ++p) {
    const size_t d = nd - 1 - p;
    const int64_t lo = amounts[2 * p], hi = amounts[2 * p + 1];
    out_shape[d] = x.shape()[d] + lo + hi;
    RETORT_CHECK(out_shape[d] >= 0, "pad: padding (", lo, ", ", hi, ") makes dimension ", d, " of ", x.meta_str(),
                 " negative");
    src_start[d] = std::max<int64_t>(0, -lo);
    dst_start[d] = std::max<int64_t>(0, lo);
    region[d] = std::max<int64_t>(0, x.shape()[d] - src_start[d] - std::max<int64_t>(0, -hi));
  }
  Tensor out = Tensor::full(out_shape, value, x.dtype(), x.device());
  copy_region(x, src_start, out, dst_start, region);
  const Shape xs = x.shape();
  return record(out, "PadBackward", {x}, [xs, src_start, dst_start, region](const Tensor& g, const Node&) {
    Tensor gx = Tensor::zeros(xs, g.dtype(), g.device());
    copy_region(g, dst_start, gx, src_start, region);
    return std::vector<Tensor>{gx};
  });
}

Tensor expand(const Tensor& x, const Shape& shape_in) {
  fn::check_defined("expand", x, "input");
  RETORT_CHECK(shape_in.size() >= x.shape().size(), "expand: cannot expand ", x.meta_str(), " to fewer dims ",
               shape_str(shape_in));
  const size_t lead = shape_in.size() - x.shape().size();
  Shape shape = shape_in;
  const auto xs = contiguous_strides(x.shape());
  StridedView sv{0, std::vector<int64_t>(shape.size(), 0)};
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      RETORT_CHECK(shape[i] >= 0, "expand: new leading dimension ", i, " must be given, got ", shape_str(shape_in));
      continue;
    }
    const int64_t have = x.shape()[i - lead];
    if (shape[i] == -1) shape[i] = have;
    RETORT_CHECK(have == shape[i] || have == 1, "expand: cannot expand ", x.meta_str(), " to ", shape_str(shape_in),
                 " (dimension ", i, ": ", have, " vs ", shape[i], ")");
    sv.strides[i] = have == 1 && shape[i] != 1 ? 0 : xs[i - lead];
  }
  if (shape == x.shape()) return x;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  backend_for(x).strided_copy(x, sv, out, StridedView{0, contiguous_strides(shape)}, shape);
  const Shape orig = x.shape();
  return record(out, "ExpandBackward", {x}, [orig](const Tensor& g, const Node&) {
    return std::vector<Tensor>{sum_to(g, orig)};
  });
}

void copy_(Tensor& dst, const Tensor& src) {
  RETORT_CHECK(dst.numel() == src.numel(), "copy_: cannot copy ", src.meta_str(), " into ", dst.meta_str());
  NoGradGuard no_grad;
  const Tensor converted = src.to(dst.dtype()).to(dst.device());
  // (to() returns src itself where nothing changes; dst may be that very tensor)
  if (!converted.shares_storage(dst))
    backend_for(dst).copy(converted.raw_data(), dst.raw_data(), dst.nbytes());
  dst.bump_version();
}

}  // namespace retort
