// Gradchecks for conv2d: one case per code path of the CPU kernels (im2col + GEMM, the 1x1 fast
// path, the depthwise direct loops) and per setting that changes index arithmetic (stride, padding,
// dilation, groups, rectangular kernels, asymmetric settings), plus cases where only some inputs
// require grad (the backward must skip the rest and saves only what it reads).
#include "engine/functions/conv.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

Conv2dParams square(int64_t stride, int64_t padding, int64_t dilation = 1, int64_t groups = 1) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = padding;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}

// x, weight and (when with_bias) bias, all requiring grad.
void conv_case(std::vector<GradcheckCase>& out, const std::string& variant, Shape xs, Shape ws, bool with_bias,
               Conv2dParams p) {
  out.push_back({"conv2d." + variant, "conv2d",
                 [=](Generator& g) {
                   Inputs in{gc_randn(xs, g), gc_randn(ws, g)};
                   if (with_bias) in.push_back(gc_randn({ws[0]}, g));
                   return in;
                 },
                 [p](const Inputs& in) { return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), p); }});
}
}  // namespace

void add_conv_checks(std::vector<GradcheckCase>& out) {
  conv_case(out, "basic", {2, 4, 5, 5}, {3, 4, 3, 3}, true, square(1, 1));
  conv_case(out, "stride2", {2, 3, 6, 6}, {4, 3, 3, 3}, true, square(2, 1));
  conv_case(out, "dilation2", {2, 3, 6, 6}, {2, 3, 3, 3}, true, square(1, 2, 2));
  conv_case(out, "groups2", {2, 4, 5, 5}, {6, 2, 3, 3}, true, square(1, 1, 1, 2));
  conv_case(out, "depthwise", {2, 4, 5, 5}, {4, 1, 3, 3}, true, square(1, 1, 1, 4));
  conv_case(out, "depthwise_stride2", {2, 3, 6, 6}, {3, 1, 3, 3}, false, square(2, 1, 1, 3));
  conv_case(out, "depthwise_multiplier", {2, 3, 5, 5}, {6, 1, 3, 3}, true, square(1, 1, 1, 3));  // O = 2C: GEMM
  conv_case(out, "pointwise", {2, 4, 5, 5}, {3, 4, 1, 1}, true, square(1, 0));
  conv_case(out, "pointwise_groups2", {2, 4, 5, 5}, {6, 2, 1, 1}, false, square(1, 0, 1, 2));
  conv_case(out, "pointwise_stride2", {2, 4, 5, 5}, {3, 4, 1, 1}, true, square(2, 0));  // not the fast path
  Conv2dParams rect;
  rect.stride_h = 2; rect.stride_w = 1;
  rect.pad_h = 1; rect.pad_w = 0;
  conv_case(out, "no_bias_rect_kernel", {2, 3, 6, 5}, {4, 3, 3, 2}, false, rect);
  Conv2dParams asym = rect;
  asym.dilation_h = 1; asym.dilation_w = 2;
  asym.pad_w = 2;
  conv_case(out, "asymmetric_dilation", {2, 2, 5, 6}, {3, 2, 2, 3}, true, asym);

  // Only the input requires grad (a frozen layer): the weight gradient is never computed.
  out.push_back({"conv2d.input_grad_only", "conv2d",
                 [](Generator& g) {
                   return Inputs{gc_randn({2, 3, 5, 5}, g), Tensor::randn({4, 3, 3, 3}, g, DType::F64),
                                 Tensor::randn({4}, g, DType::F64)};
                 },
                 [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 1, 1); }});
  // Only the parameters require grad (the first layer): the input gradient is never computed.
  out.push_back({"conv2d.weight_grad_only", "conv2d",
                 [](Generator& g) {
                   return Inputs{Tensor::randn({2, 3, 5, 5}, g, DType::F64), gc_randn({4, 3, 3, 3}, g),
                                 gc_randn({4}, g)};
                 },
                 [](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 1); }});
}

}  // namespace retort
