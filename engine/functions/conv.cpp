// conv2d (see conv.h): validation, output allocation, the backend kernels and the Conv2dBackward node.
// The bias gradient is a plain sum over N, H, W of the output gradient, so no kernel is needed for it.
#include "engine/functions/conv.h"

#include "engine/functions/common.h"
#include "engine/functions/reduce.h"

namespace retort {

namespace {

// "stride (2, 1), padding (1, 0), dilation (1, 1), groups 2": repeated in errors, so the user sees
// every setting that went into the output size.
std::string params_str(const Conv2dParams& p) {
  return detail::cat("stride (", p.stride_h, ", ", p.stride_w, "), padding (", p.pad_h, ", ", p.pad_w,
                     "), dilation (", p.dilation_h, ", ", p.dilation_w, "), groups ", p.groups);
}

// Validates every argument and returns the output shape [N, O, OH, OW].
Shape conv2d_output_shape(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  const char* op = "conv2d";
  fn::check_float(op, x, "input");
  fn::check_dim(op, x, 4, "input", "[N, C, H, W]");
  fn::check_compatible(op, x, w, "input", "weight");
  fn::check_dim(op, w, 4, "weight", "[out_channels, in_channels / groups, kH, kW]");
  RETORT_CHECK(p.groups >= 1, "conv2d: groups must be >= 1, got ", p.groups);
  RETORT_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "conv2d: stride must be >= 1, got (", p.stride_h, ", ",
               p.stride_w, ")");
  RETORT_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, "conv2d: dilation must be >= 1, got (", p.dilation_h,
               ", ", p.dilation_w, ")");
  RETORT_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "conv2d: padding must be >= 0, got (", p.pad_h, ", ", p.pad_w, ")");
  const Shape& xs = x.shape();
  const Shape& ws = w.shape();
  RETORT_CHECK(ws[1] >= 1 && ws[2] >= 1 && ws[3] >= 1, "conv2d: weight ", w.meta_str(),
               " must have at least one input channel and a kernel of at least 1x1");
  RETORT_CHECK(xs[1] == ws[1] * p.groups, "conv2d: input ", x.meta_str(), " has ", xs[1], " channels but weight ",
               w.meta_str(), " with groups ", p.groups, " expects ", ws[1] * p.groups, " (", ws[1], " per group x ",
               p.groups, " groups)");
  RETORT_CHECK(ws[0] % p.groups == 0, "conv2d: weight ", w.meta_str(), " has ", ws[0],
               " output channels, which groups ", p.groups, " does not divide");
  if (bias.defined()) {
    fn::check_compatible(op, x, bias, "input", "bias");
    RETORT_CHECK(bias.dim() == 1 && bias.shape()[0] == ws[0], "conv2d: bias ", bias.meta_str(),
                 " must be 1-D [", ws[0], "], one value per output channel of weight ", w.meta_str());
  }
  // The padded input must hold the dilated kernel at least once: extent = dilation * (k - 1) + 1.
  const int64_t ext_h = p.dilation_h * (ws[2] - 1) + 1, ext_w = p.dilation_w * (ws[3] - 1) + 1;
  const int64_t in_h = xs[2] + 2 * p.pad_h, in_w = xs[3] + 2 * p.pad_w;
  RETORT_CHECK(in_h >= ext_h && in_w >= ext_w, "conv2d: output would be empty: input ", x.meta_str(),
               " padded to ", in_h, "x", in_w, " is smaller than the kernel ", ws[2], "x", ws[3], " of weight ",
               w.meta_str(), " (dilated extent ", ext_h, "x", ext_w, ") with ", params_str(p));
  return {xs[0], ws[0], (in_h - ext_h) / p.stride_h + 1, (in_w - ext_w) / p.stride_w + 1};
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params) {
  const Shape out_shape = conv2d_output_shape(x, weight, bias, params);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  backend_for(x).conv2d_forward(x, weight, bias, params, y);
  // Keep only what the needed gradients read: gx reads the weight, gw reads the input.
  Tensor x_saved = weight.requires_grad() ? saved(x) : Tensor();
  Tensor w_saved = x.requires_grad() ? saved(weight) : Tensor();
  return record(y, "Conv2dBackward", {x, weight, bias},
                [xs = x_saved, w = w_saved, p = params, x_shape = x.shape(), w_shape = weight.shape()](
                    const Tensor& gy, const Node& node) {
                  Backend& be = backend_for(gy);
                  Tensor gx, gw, gb;
                  if (node.needs_grad(0)) {
                    gx = Tensor::empty(x_shape, gy.dtype(), gy.device());
                    be.conv2d_backward_input(gy, w, p, gx);
                  }
                  if (node.needs_grad(1)) {
                    gw = Tensor::empty(w_shape, gy.dtype(), gy.device());
                    be.conv2d_backward_weight(gy, xs, p, gw);
                  }
                  if (node.needs_grad(2)) gb = sum(gy, {0, 2, 3});
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

Tensor conv2d_bn_eval(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                      const Tensor& bn_weight, const Tensor& bn_bias, const Tensor& running_mean,
                      const Tensor& running_var, double eps, bool relu) {
  const char* op = "conv2d_bn_eval";
  const Shape out_shape = conv2d_output_shape(x, weight, bias, params);
  const int64_t oc = out_shape[1];
  auto check_channel = [&](const Tensor& t, const char* what, bool required) {
    if (!t.defined()) {
      RETORT_CHECK(!required, op, ": ", what, " is required (an eval-mode batch norm normalises with it)");
      return;
    }
    fn::check_compatible(op, x, t, "input", what);
    RETORT_CHECK(t.dim() == 1 && t.shape()[0] == oc, op, ": ", what, " must be [", oc,
                 "] (one value per output channel of weight ", weight.meta_str(), "), got ", t.meta_str());
  };
  check_channel(bn_weight, "bn weight", false);
  check_channel(bn_bias, "bn bias", false);
  check_channel(running_mean, "running_mean", true);
  check_channel(running_var, "running_var", true);
  RETORT_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  if (grad_enabled())
    for (const Tensor* t : {&x, &weight, &bias, &bn_weight, &bn_bias})
      RETORT_CHECK(!t->defined() || !t->requires_grad(), op,
                   ": inference only, but an input requires a gradient (", t->meta_str(),
                   "); run under NoGradGuard, or use conv2d + batch_norm to train");
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  backend_for(x).conv2d_bn_eval_forward(x, weight, bias, params, bn_weight, bn_bias, running_mean, running_var, eps,
                                        relu, y);
  return y;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding,
              int64_t dilation, int64_t groups) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = padding;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return conv2d(x, weight, bias, p);
}

}  // namespace retort
