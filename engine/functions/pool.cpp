// Pooling and nearest resizing (see pool.h): validation, output sizes, backend kernels, backward nodes.
//
// Output sizes follow PyTorch with ceil_mode=False: out = (in + 2*pad - kernel) / stride + 1, floored.
// Padding is limited to half the kernel as PyTorch requires, which also guarantees that every window
// overlaps the real input (a max pool never returns the -inf of padding). Backwards need only shapes
// (and max pool's argmax indices), never the input values.
#include "engine/functions/pool.h"

#include "engine/functions/common.h"

namespace retort {

namespace {

void check_input(const char* op, const Tensor& x) {
  fn::check_float(op, x, "input");
  fn::check_dim(op, x, 4, "input", "[N, C, H, W]");
  RETORT_CHECK(x.shape()[2] >= 1 && x.shape()[3] >= 1, op, ": input must have non-empty spatial dimensions, got ",
               x.meta_str());
}

// Validates the window against x and returns the output shape.
Shape pooled_shape(const char* op, const Tensor& x, const Pool2dParams& p) {
  check_input(op, x);
  RETORT_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1, op, ": kernel size must be >= 1, got ", p.kernel_h, "x",
               p.kernel_w, " (input ", x.meta_str(), ")");
  RETORT_CHECK(p.stride_h >= 1 && p.stride_w >= 1, op, ": stride must be >= 1, got ", p.stride_h, "x", p.stride_w,
               " (input ", x.meta_str(), ")");
  RETORT_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && p.pad_h <= p.kernel_h / 2 && p.pad_w <= p.kernel_w / 2, op,
               ": padding must be non-negative and at most half the kernel size, got padding ", p.pad_h, "x",
               p.pad_w, " for kernel ", p.kernel_h, "x", p.kernel_w, " (input ", x.meta_str(), ")");
  const int64_t h = x.shape()[2], w = x.shape()[3];
  const int64_t span_h = h + 2 * p.pad_h - p.kernel_h, span_w = w + 2 * p.pad_w - p.kernel_w;
  // Checked before dividing: C++ truncates a negative quotient towards zero, which would read as 1.
  const int64_t oh = span_h < 0 ? 0 : span_h / p.stride_h + 1, ow = span_w < 0 ? 0 : span_w / p.stride_w + 1;
  RETORT_CHECK(oh >= 1 && ow >= 1, op, ": input ", x.meta_str(), " is too small for kernel ", p.kernel_h, "x",
               p.kernel_w, " with padding ", p.pad_h, "x", p.pad_w, " and stride ", p.stride_h, "x", p.stride_w,
               " (output would be ", oh, "x", ow, ")");
  return {x.shape()[0], x.shape()[1], oh, ow};
}

// Square window; stride -1 means the kernel size. Validation is left to pooled_shape().
Pool2dParams square_params(int64_t kernel, int64_t stride, int64_t padding) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = kernel;
  p.stride_h = p.stride_w = stride == -1 ? kernel : stride;
  p.pad_h = p.pad_w = padding;
  return p;
}

void check_output_size(const char* op, const Tensor& x, int64_t out_h, int64_t out_w) {
  check_input(op, x);
  RETORT_CHECK(out_h >= 1 && out_w >= 1, op, ": output size must be >= 1, got ", out_h, "x", out_w, " (input ",
               x.meta_str(), ")");
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dParams& params) {
  const Shape out_shape = pooled_shape("max_pool2d", x, params);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor indices = Tensor::empty(out_shape, DType::I64, x.device());
  backend_for(x).max_pool2d_forward(x, params, y, indices);
  const Shape xs = x.shape();
  return record(y, "MaxPool2dBackward", {x}, [indices, xs, params](const Tensor& g, const Node&) {
    Tensor gx = Tensor::empty(xs, g.dtype(), g.device());
    backend_for(g).max_pool2d_backward(g, indices, params, gx);
    return std::vector<Tensor>{gx};
  });
}

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return max_pool2d(x, square_params(kernel, stride, padding));
}

Tensor avg_pool2d(const Tensor& x, const Pool2dParams& params) {
  const Shape out_shape = pooled_shape("avg_pool2d", x, params);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  backend_for(x).avg_pool2d_forward(x, params, y);
  const Shape xs = x.shape();
  return record(y, "AvgPool2dBackward", {x}, [params, xs](const Tensor& g, const Node&) {
    Tensor gx = Tensor::empty(xs, g.dtype(), g.device());
    backend_for(g).avg_pool2d_backward(g, params, gx);
    return std::vector<Tensor>{gx};
  });
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return avg_pool2d(x, square_params(kernel, stride, padding));
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_output_size("adaptive_avg_pool2d", x, out_h, out_w);
  Tensor y = Tensor::empty({x.shape()[0], x.shape()[1], out_h, out_w}, x.dtype(), x.device());
  backend_for(x).adaptive_avg_pool2d_forward(x, y);
  const Shape xs = x.shape();
  return record(y, "AdaptiveAvgPool2dBackward", {x}, [xs](const Tensor& g, const Node&) {
    Tensor gx = Tensor::empty(xs, g.dtype(), g.device());
    backend_for(g).adaptive_avg_pool2d_backward(g, gx);
    return std::vector<Tensor>{gx};
  });
}

Tensor interpolate_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_output_size("interpolate_nearest", x, out_h, out_w);
  Tensor y = Tensor::empty({x.shape()[0], x.shape()[1], out_h, out_w}, x.dtype(), x.device());
  backend_for(x).upsample_nearest2d_forward(x, y);
  const Shape xs = x.shape();
  return record(y, "UpsampleNearest2dBackward", {x}, [xs](const Tensor& g, const Node&) {
    Tensor gx = Tensor::empty(xs, g.dtype(), g.device());
    backend_for(g).upsample_nearest2d_backward(g, gx);
    return std::vector<Tensor>{gx};
  });
}

}  // namespace retort
