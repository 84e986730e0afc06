// conv2d against a naive 7-nested-loop reference in double: forward values, the input/weight/bias
// gradients (on shapes larger than the gradchecks, so the OpenMP batch loop, the serial path with
// threaded im2col, the 1x1 fast path and the depthwise loops all run), and the errors bad arguments
// raise. Every F32 case runs twice: through oneDNN where it takes the shape (the default) and
// through our im2col path (RETORT_CPU_CONV=im2col).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/functions.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;

namespace {

Conv2dParams params(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh = 1, int64_t dw = 1,
                    int64_t groups = 1) {
  Conv2dParams p;
  p.stride_h = sh; p.stride_w = sw;
  p.pad_h = ph; p.pad_w = pw;
  p.dilation_h = dh; p.dilation_w = dw;
  p.groups = groups;
  return p;
}

Shape out_shape(const Shape& xs, const Shape& ws, const Conv2dParams& p) {
  return {xs[0], ws[0], (xs[2] + 2 * p.pad_h - p.dilation_h * (ws[2] - 1) - 1) / p.stride_h + 1,
          (xs[3] + 2 * p.pad_w - p.dilation_w * (ws[3] - 1) - 1) / p.stride_w + 1};
}

// Calls f(x_index, w_index, y_index) for every (sample, output channel, output pixel, input channel
// of the group, kernel tap) that reads inside the input: the definition of F.conv2d, written as
// plainly as possible so that it can serve as the reference for the forward and both backwards.
template <class F>
void for_each_tap(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dParams& p, F&& f) {
  const int64_t cg = ws[1], og = ws[0] / p.groups;
  for (int64_t n = 0; n < xs[0]; ++n)
    for (int64_t o = 0; o < ws[0]; ++o)
      for (int64_t oh = 0; oh < ys[2]; ++oh)
        for (int64_t ow = 0; ow < ys[3]; ++ow)
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t kh = 0; kh < ws[2]; ++kh)
              for (int64_t kw = 0; kw < ws[3]; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
                const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
                if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
                const int64_t ci = (o / og) * cg + c;
                f(((n * xs[1] + ci) * xs[2] + ih) * xs[3] + iw, ((o * cg + c) * ws[2] + kh) * ws[3] + kw,
                  ((n * ys[1] + o) * ys[2] + oh) * ys[3] + ow);
              }
}

std::vector<double> naive_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  const Shape ys = out_shape(x.shape(), w.shape(), p);
  const auto xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> y(shape_numel(ys), 0.0);
  if (b.defined()) {
    const auto bv = b.to_vector();
    const int64_t plane = ys[2] * ys[3];
    for (size_t i = 0; i < y.size(); ++i) y[i] = bv[(i / plane) % ys[1]];
  }
  for_each_tap(x.shape(), w.shape(), ys, p, [&](int64_t xi, int64_t wi, int64_t yi) { y[yi] += xv[xi] * wv[wi]; });
  return y;
}

struct NaiveGrads {
  std::vector<double> gx, gw, gb;
};

NaiveGrads naive_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  const Shape& ys = gy.shape();
  const auto gyv = gy.to_vector(), xv = x.to_vector(), wv = w.to_vector();
  NaiveGrads g{std::vector<double>(x.numel(), 0.0), std::vector<double>(w.numel(), 0.0),
               std::vector<double>(ys[1], 0.0)};
  for_each_tap(x.shape(), w.shape(), ys, p, [&](int64_t xi, int64_t wi, int64_t yi) {
    g.gx[xi] += gyv[yi] * wv[wi];
    g.gw[wi] += gyv[yi] * xv[xi];
  });
  const int64_t plane = ys[2] * ys[3];
  for (size_t i = 0; i < gyv.size(); ++i) g.gb[(i / plane) % ys[1]] += gyv[i];
  return g;
}

// Elementwise |got - want| <= tol * (1 + |want|); F32 sums over a few hundred products lose ~1e-6
// relative per term, F64 is near exact.
void expect_close(const Tensor& got, const std::vector<double>& want, const char* what) {
  ASSERT_TRUE(got.defined()) << what;
  const auto g = got.to_vector();
  ASSERT_EQ(g.size(), want.size()) << what << " " << got.meta_str();
  const double tol = got.dtype() == DType::F32 ? 2e-4 : 1e-10;
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::abs(g[i] - want[i]) <= tol * (1.0 + std::abs(want[i])))) {
      if (++bad <= 5) ADD_FAILURE() << what << " element " << i << ": got " << g[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size() << " elements differ";
}

struct Case {
  std::string name;
  Shape xs, ws;
  Conv2dParams p;
  bool bias;
  DType dtype;
};

// Sizes are chosen so that most cases have more work per call than the parallel grain: with several
// samples the batch loop runs in parallel; the N = 1 cases take the serial path (threaded im2col).
std::vector<Case> cases() {
  const DType f32 = DType::F32, f64 = DType::F64;
  return {
      {"basic_3x3_pad1_f32", {4, 8, 12, 12}, {16, 8, 3, 3}, params(1, 1, 1, 1), true, f32},
      {"basic_3x3_pad1_f64", {4, 8, 12, 12}, {16, 8, 3, 3}, params(1, 1, 1, 1), true, f64},
      {"stride2_f64", {3, 6, 13, 13}, {10, 6, 3, 3}, params(2, 2, 1, 1), true, f64},
      {"stride3_kernel2_f32", {3, 5, 14, 11}, {7, 5, 2, 2}, params(3, 3, 0, 0), true, f32},
      {"dilation2_f64", {2, 4, 14, 14}, {8, 4, 3, 3}, params(1, 1, 2, 2, 2, 2), true, f64},
      {"groups2_f32", {4, 8, 10, 10}, {6, 4, 3, 3}, params(1, 1, 1, 1, 1, 1, 2), true, f32},
      {"groups4_rect_f64", {3, 8, 9, 11}, {12, 2, 3, 5}, params(2, 1, 1, 2, 1, 1, 4), false, f64},
      {"depthwise_f32", {4, 16, 14, 14}, {16, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 16), true, f32},
      {"depthwise_stride2_f64", {4, 16, 15, 15}, {16, 1, 3, 3}, params(2, 2, 1, 1, 1, 1, 16), false, f64},
      {"depthwise_5x5_dilated_f32", {2, 8, 16, 12}, {8, 1, 5, 5}, params(1, 2, 4, 2, 2, 1, 8), true, f32},
      // The direct depthwise kernels (engine/cpu/depthwise.cpp): channel segments with a partial last
      // one, more samples than a weight-gradient chunk, 2x2 planes, a plane larger than a segment,
      // rectangular kernels and strides (F64 runs every direction there; F32 strided forward and data
      // gradient go to oneDNN).
      {"depthwise_4x4_many_channels_f32", {70, 130, 4, 4}, {130, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 130), true, f32},
      {"depthwise_2x2_f64", {3, 300, 2, 2}, {300, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 300), false, f64},
      {"depthwise_stride2_odd_f32", {5, 24, 9, 7}, {24, 1, 3, 3}, params(2, 2, 1, 1, 1, 1, 24), true, f32},
      {"depthwise_5x3_stride12_f64", {2, 6, 11, 13}, {6, 1, 5, 3}, params(1, 2, 2, 1, 1, 1, 6), true, f64},
      {"depthwise_big_plane_f32", {2, 3, 40, 40}, {3, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 3), false, f32},
      {"depthwise_multiplier_f64", {2, 4, 10, 10}, {8, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 4), true, f64},
      {"pointwise_f32", {4, 32, 12, 12}, {24, 32, 1, 1}, params(1, 1, 0, 0), true, f32},
      // (the one above runs on conv.cpp's GEMMs by default, this one in oneDNN: see dnnl_conv2d)
      {"pointwise_large_f32", {2, 256, 16, 16}, {128, 256, 1, 1}, params(1, 1, 0, 0), true, f32},
      {"pointwise_f64_no_bias", {3, 16, 9, 7}, {8, 16, 1, 1}, params(1, 1, 0, 0), false, f64},
      {"pointwise_groups4_f32", {4, 16, 10, 10}, {32, 4, 1, 1}, params(1, 1, 0, 0, 1, 1, 4), true, f32},
      // Grouped 1x1 on a plane of <= 64 values: the default F32 path runs conv.cpp's GEMMs, not oneDNN.
      {"pointwise_groups3_small_plane_f32", {6, 24, 8, 8}, {12, 8, 1, 1}, params(1, 1, 0, 0, 1, 1, 3), true, f32},
      {"pointwise_stride2_f64", {2, 8, 11, 11}, {8, 8, 1, 1}, params(2, 2, 0, 0), true, f64},
      {"no_bias_asymmetric_f32", {3, 6, 11, 9}, {5, 6, 3, 2}, params(2, 1, 1, 0, 1, 2), false, f32},
      {"padding_wider_than_kernel_f64", {2, 3, 6, 6}, {4, 3, 2, 2}, params(1, 2, 3, 3), true, f64},
      {"single_sample_serial_f32", {1, 16, 32, 32}, {32, 16, 3, 3}, params(1, 1, 1, 1), true, f32},
      {"single_sample_serial_f64", {1, 8, 24, 20}, {12, 8, 5, 3}, params(2, 1, 2, 1), false, f64},
      {"single_sample_pointwise_f32", {1, 64, 32, 32}, {32, 64, 1, 1}, params(1, 1, 0, 0), false, f32},
  };
}

// Failure messages name the configuration instead of dumping its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Conv2dReference : public ::testing::TestWithParam<Case> {};

// Runs body() once per CPU convolution implementation that applies to the case's dtype: F32 by default
// and through im2col, 1x1 F32 cases also through forced oneDNN (by default the small ones run on
// conv.cpp's GEMMs, so oneDNN's 1x1 kernels are checked here); F64 has one path.
template <class F>
void for_each_impl(const Case& c, F&& body) {
  std::vector<cpu::ConvImpl> impls{cpu::ConvImpl::Auto};
  if (c.dtype == DType::F32) impls.push_back(cpu::ConvImpl::Im2col);
  if (c.dtype == DType::F32 && c.ws[2] == 1 && c.ws[3] == 1) impls.push_back(cpu::ConvImpl::Dnnl);
  const cpu::ConvImpl saved = cpu::conv_impl();
  for (cpu::ConvImpl impl : impls) {
    SCOPED_TRACE(impl == cpu::ConvImpl::Im2col ? "im2col" : impl == cpu::ConvImpl::Dnnl ? "oneDNN (forced)" : "auto");
    cpu::set_conv_impl(impl);
    body();
  }
  cpu::set_conv_impl(saved);
}

TEST_P(Conv2dReference, Forward) {
  const Case& c = GetParam();
  for_each_impl(c, [&] {
  Generator gen(7);
  Tensor x = Tensor::randn(c.xs, gen, c.dtype), w = Tensor::randn(c.ws, gen, c.dtype);
  Tensor b = c.bias ? Tensor::randn({c.ws[0]}, gen, c.dtype) : Tensor();
  Tensor y = conv2d(x, w, b, c.p);
  EXPECT_EQ(y.shape(), out_shape(c.xs, c.ws, c.p));
  EXPECT_EQ(y.dtype(), c.dtype);
  expect_close(y, naive_forward(x, w, b, c.p), "y");
  });
}

// Through autograd: all three gradients, and the node that produced them.
TEST_P(Conv2dReference, BackwardThroughAutograd) {
  const Case& c = GetParam();
  for_each_impl(c, [&] {
  Generator gen(11);
  Tensor x = Tensor::randn(c.xs, gen, c.dtype).set_requires_grad();
  Tensor w = Tensor::randn(c.ws, gen, c.dtype).set_requires_grad();
  Tensor b = c.bias ? Tensor::randn({c.ws[0]}, gen, c.dtype).set_requires_grad() : Tensor();
  Tensor y = conv2d(x, w, b, c.p);
  ASSERT_TRUE(y.grad_fn());
  EXPECT_EQ(y.grad_fn()->name(), "Conv2dBackward");
  Tensor gy = Tensor::randn(y.shape(), gen, c.dtype);
  y.backward(gy);
  const NaiveGrads want = naive_backward(gy, x, w, c.p);
  expect_close(x.grad(), want.gx, "grad input");
  expect_close(w.grad(), want.gw, "grad weight");
  if (c.bias) expect_close(b.grad(), want.gb, "grad bias");
  });
}

// The kernels directly, into outputs pre-filled with NaN: they must overwrite, not accumulate.
TEST_P(Conv2dReference, BackwardKernelsOverwriteTheirOutputs) {
  const Case& c = GetParam();
  for_each_impl(c, [&] {
  Generator gen(13);
  Tensor x = Tensor::randn(c.xs, gen, c.dtype), w = Tensor::randn(c.ws, gen, c.dtype);
  Tensor gy = Tensor::randn(out_shape(c.xs, c.ws, c.p), gen, c.dtype);
  Backend& be = backend_for(x);
  Tensor gx = Tensor::full(c.xs, std::numeric_limits<double>::quiet_NaN(), c.dtype);
  Tensor gw = Tensor::full(c.ws, std::numeric_limits<double>::quiet_NaN(), c.dtype);
  be.conv2d_backward_input(gy, w, c.p, gx);
  be.conv2d_backward_weight(gy, x, c.p, gw);
  const NaiveGrads want = naive_backward(gy, x, w, c.p);
  expect_close(gx, want.gx, "grad input");
  expect_close(gw, want.gw, "grad weight");
  });
}

INSTANTIATE_TEST_SUITE_P(Configs, Conv2dReference, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// More threads than samples divide evenly into (7 samples over 5 threads): the per-thread column
// buffers and the partial weight gradients of uneven shares. The thread count is restored after.
TEST(Conv2d, UnevenThreadSharesMatchReference) {
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(5);
  for (const bool depthwise : {false, true}) {
    SCOPED_TRACE(depthwise ? "depthwise" : "groups 2");
    Generator gen(17);
    const Shape xs{7, 6, 11, 11}, ws = depthwise ? Shape{6, 1, 3, 3} : Shape{8, 3, 3, 3};
    const Conv2dParams p = params(1, 1, 1, 1, 1, 1, depthwise ? 6 : 2);
    Tensor x = Tensor::randn(xs, gen, DType::F64).set_requires_grad();
    Tensor w = Tensor::randn(ws, gen, DType::F64).set_requires_grad();
    Tensor b = Tensor::randn({ws[0]}, gen, DType::F64).set_requires_grad();
    Tensor y = conv2d(x, w, b, p);
    expect_close(y, naive_forward(x, w, b, p), "y");
    Tensor gy = Tensor::randn(y.shape(), gen, DType::F64);
    y.backward(gy);
    const NaiveGrads want = naive_backward(gy, x, w, p);
    expect_close(x.grad(), want.gx, "grad input");
    expect_close(w.grad(), want.gw, "grad weight");
    expect_close(b.grad(), want.gb, "grad bias");
  }
  omp_set_num_threads(saved_threads);
}

// Depthwise "same" convolutions run the direct kernels: every direction at stride 1, only the weight
// gradient at stride 2 in F32 (all three in F64); other shapes and RETORT_CPU_CONV=im2col do not.
TEST(Conv2d, DirectDepthwiseKernelsRunWhereTheyApply) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  Generator gen(29);
  auto calls = [&](DType dt, int64_t stride, int64_t pad, int64_t groups) {
    Tensor x = Tensor::randn({2, 8, 6, 6}, gen, dt).set_requires_grad();
    Tensor w = Tensor::randn({8, 8 / groups, 3, 3}, gen, dt).set_requires_grad();
    const int64_t before = cpu::depthwise_direct_calls();
    sum(conv2d(x, w, Tensor(), params(stride, stride, pad, pad, 1, 1, groups))).backward();
    return cpu::depthwise_direct_calls() - before;
  };
  EXPECT_EQ(calls(DType::F32, 1, 1, 8), 3);
  EXPECT_EQ(calls(DType::F32, 2, 1, 8), 1);
  EXPECT_EQ(calls(DType::F64, 2, 1, 8), 3);
  EXPECT_EQ(calls(DType::F32, 1, 0, 8), 0);  // "valid" padding: not this kernel's shape
  EXPECT_EQ(calls(DType::F32, 1, 1, 4), 0);  // grouped, not depthwise
  cpu::set_conv_impl(cpu::ConvImpl::Im2col);
  EXPECT_EQ(calls(DType::F32, 1, 1, 8), 0);
  cpu::set_conv_impl(saved);
}

// A non-finite value in one channel stays in that channel: the direct kernels read across plane and
// channel boundaries within a segment, and must select those reads away rather than multiply them by 0.
TEST(Conv2d, DirectDepthwiseKeepsNonFiniteValuesInTheirChannel) {
  Generator gen(31);
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = Tensor::randn({2, 4, 4, 4}, gen, dt);
    auto v = x.to_vector();
    v[1 * 16 + 0] = std::numeric_limits<double>::infinity();  // sample 0, channel 1, corner
    x = Tensor::from_vector(v, x.shape(), dt).set_requires_grad();
    Tensor w = Tensor::randn({4, 1, 3, 3}, gen, dt).set_requires_grad();
    Tensor y = conv2d(x, w, Tensor(), params(1, 1, 1, 1, 1, 1, 4));
    const auto yv = y.to_vector();
    for (int64_t i = 0; i < y.numel(); ++i) {
      const int64_t n = i / 64, c = (i / 16) % 4;
      if (n != 0 || c != 1) {
        EXPECT_TRUE(std::isfinite(yv[i])) << dtype_name(dt) << " output " << i;
      }
    }
    // gy with an infinity in sample 1, channel 2: the data gradient stays finite outside that plane.
    auto gv = std::vector<double>(static_cast<size_t>(y.numel()), 1.0);
    gv[static_cast<size_t>(64 + 2 * 16 + 5)] = std::numeric_limits<double>::infinity();
    const int64_t before = cpu::depthwise_direct_calls();
    y.backward(Tensor::from_vector(gv, y.shape(), dt));
    EXPECT_EQ(cpu::depthwise_direct_calls() - before, 2) << dtype_name(dt);  // both backwards ran here
    const auto gw = w.grad().to_vector();
    for (int64_t i = 0; i < w.numel(); ++i)
      if (i / 9 != 1 && i / 9 != 2) {
        EXPECT_TRUE(std::isfinite(gw[i])) << dtype_name(dt) << " grad weight " << i;
      }
    const auto gx = x.grad().to_vector();
    for (int64_t i = 0; i < x.numel(); ++i)
      if (i / 16 != 4 + 2) {
        EXPECT_TRUE(std::isfinite(gx[i])) << dtype_name(dt) << " grad input " << i;
      }
  }
}

// The default F32 path really is oneDNN for ordinary shapes (a 3x3 conv, forward and both
// backwards), and RETORT_CPU_CONV=im2col's setting really keeps it out.
TEST(Conv2d, OneDnnRunsF32ConvolutionsByDefault) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  Generator gen(23);
  Tensor x = Tensor::randn({2, 16, 8, 8}, gen).set_requires_grad();
  Tensor w = Tensor::randn({16, 16, 3, 3}, gen).set_requires_grad();
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  int64_t before = cpu::dnnl_conv_calls();
  sum(conv2d(x, w, Tensor(), 1, 1)).backward();
  EXPECT_EQ(cpu::dnnl_conv_calls() - before, 3);
  cpu::set_conv_impl(cpu::ConvImpl::Im2col);
  before = cpu::dnnl_conv_calls();
  sum(conv2d(x, w, Tensor(), 1, 1)).backward();
  EXPECT_EQ(cpu::dnnl_conv_calls() - before, 0);
  // F64 never goes to oneDNN.
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  before = cpu::dnnl_conv_calls();
  conv2d(x.to(DType::F64), w.to(DType::F64), Tensor(), 1, 1);
  EXPECT_EQ(cpu::dnnl_conv_calls() - before, 0);
  cpu::set_conv_impl(saved);
}

// 1x1 convolutions with small per-sample GEMMs skip oneDNN by default (its reorders cost more than the
// GEMMs there): grouped ones on planes of <= 64 values, ungrouped ones on planes of >= 16 values with
// C*O*plane <= 2^22. Larger ones, 2x2 planes and forced oneDNN still use it.
TEST(Conv2d, SmallPointwiseConvolutionsRunOnGemms) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  Generator gen(29);
  auto dnnl_calls = [&](Shape xs, Shape ws, int64_t groups) {
    Tensor x = Tensor::randn(xs, gen).set_requires_grad();
    Tensor w = Tensor::randn(ws, gen).set_requires_grad();
    const int64_t before = cpu::dnnl_conv_calls();
    sum(conv2d(x, w, Tensor(), 1, 0, 1, groups)).backward();
    return cpu::dnnl_conv_calls() - before;
  };
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  EXPECT_EQ(dnnl_calls({2, 24, 8, 8}, {12, 8, 1, 1}, 3), 0);
  EXPECT_EQ(dnnl_calls({2, 24, 4, 4}, {48, 8, 1, 1}, 3), 0);
  EXPECT_EQ(dnnl_calls({2, 24, 9, 8}, {12, 8, 1, 1}, 3), 3);       // grouped, 72 values a plane
  EXPECT_EQ(dnnl_calls({2, 24, 8, 8}, {12, 24, 1, 1}, 1), 0);      // ungrouped, 12*24*64 multiply-adds
  EXPECT_EQ(dnnl_calls({2, 64, 32, 32}, {64, 64, 1, 1}, 1), 0);    // 2^22
  EXPECT_EQ(dnnl_calls({2, 128, 32, 32}, {64, 128, 1, 1}, 1), 3);  // 2^23
  EXPECT_EQ(dnnl_calls({2, 24, 2, 2}, {12, 24, 1, 1}, 1), 3);      // 2x2 plane
  cpu::set_conv_impl(cpu::ConvImpl::Dnnl);
  EXPECT_EQ(dnnl_calls({2, 24, 8, 8}, {12, 8, 1, 1}, 3), 3);
  EXPECT_EQ(dnnl_calls({2, 24, 8, 8}, {12, 24, 1, 1}, 1), 3);
  cpu::set_conv_impl(saved);
}

TEST(Conv2d, HandComputedValues) {
  // 1 x 1 x 3 x 3 input 1..9, 2x2 kernel of ones, bias 0.5: sums of each 2x2 window plus 0.5.
  Tensor x = Tensor::arange(1, 10, 1, DType::F64).view_as_shape({1, 1, 3, 3});
  Tensor w = Tensor::ones({1, 1, 2, 2}, DType::F64);
  Tensor b = Tensor::full({1}, 0.5, DType::F64);
  EXPECT_EQ(conv2d(x, w, b).to_vector(), (std::vector<double>{12.5, 16.5, 24.5, 28.5}));
  // Padding 1, stride 2: the corners of the padded input see one, two or four values.
  EXPECT_EQ(conv2d(x, w, Tensor(), 2, 1).to_vector(), (std::vector<double>{1, 5, 11, 28}));
}

TEST(Conv2d, OnlyRequestedGradientsAreComputed) {
  Generator gen(19);
  Tensor x = Tensor::randn({2, 3, 6, 6}, gen, DType::F64);  // a frozen input: no gradient wanted
  Tensor w = Tensor::randn({4, 3, 3, 3}, gen, DType::F64).set_requires_grad();
  Tensor b = Tensor::randn({4}, gen, DType::F64);
  Tensor y = conv2d(x, w, b, 1, 1);
  sum(y).backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().shape(), w.shape());
  {
    NoGradGuard ng;
    EXPECT_FALSE(conv2d(x, w, b, 1, 1).requires_grad());
  }
}

TEST(Conv2d, EmptyBatch) {
  Tensor y = conv2d(Tensor::zeros({0, 3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({4}), 1, 1);
  EXPECT_EQ(y.shape(), (Shape{0, 4, 5, 5}));
}

// ---- errors ------------------------------------------------------------------------------------------

Tensor zeros(Shape s, DType dt = DType::F32) { return Tensor::zeros(s, dt); }

}  // namespace

TEST(Conv2dErrors, InputMustBeA4DFloatTensor) {
  expect_error([] { conv2d(zeros({3, 5, 5}), zeros({4, 3, 3, 3})); }, {"conv2d", "input", "4-D", "f32[3, 5, 5]"});
  expect_error([] { conv2d(zeros({1, 3, 5, 5}, DType::I64), zeros({4, 3, 3, 3})); },
               {"conv2d", "input", "i64[1, 3, 5, 5]"});
  expect_error([] { conv2d(Tensor(), zeros({4, 3, 3, 3})); }, {"conv2d", "input", "undefined"});
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), Tensor()); }, {"conv2d", "weight", "undefined"});
}

TEST(Conv2dErrors, WeightMustBe4DOfTheSameDtype) {
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 3})); }, {"conv2d", "weight", "4-D", "f32[4, 3, 3]"});
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}, DType::F64)); },
               {"conv2d", "dtype", "f32[1, 3, 5, 5]", "f64[4, 3, 3, 3]"});
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 0, 3})); }, {"conv2d", "f32[4, 3, 0, 3]", "kernel"});
}

TEST(Conv2dErrors, ChannelsMustMatchWeightTimesGroups) {
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 2, 3, 3})); },
               {"conv2d", "f32[1, 3, 5, 5]", "f32[4, 2, 3, 3]", "3 channels", "expects 2"});
  expect_error([] { conv2d(zeros({1, 4, 5, 5}), zeros({4, 4, 3, 3}), Tensor(), 1, 1, 1, 2); },
               {"conv2d", "f32[1, 4, 5, 5]", "f32[4, 4, 3, 3]", "groups 2", "expects 8"});
  expect_error([] { conv2d(zeros({1, 4, 5, 5}), zeros({3, 2, 3, 3}), Tensor(), 1, 1, 1, 2); },
               {"conv2d", "f32[3, 2, 3, 3]", "3 output channels", "groups 2"});
}

TEST(Conv2dErrors, BiasMustBeOnePerOutputChannel) {
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), zeros({3})); },
               {"conv2d", "bias", "f32[3]", "[4]", "f32[4, 3, 3, 3]"});
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), zeros({1, 4})); },
               {"conv2d", "bias", "f32[1, 4]"});
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), zeros({4}, DType::F64)); },
               {"conv2d", "dtype", "bias", "f64[4]"});
}

TEST(Conv2dErrors, ParametersMustBeInRange) {
  const Tensor x = zeros({1, 3, 5, 5}), w = zeros({4, 3, 3, 3});
  expect_error([&] { conv2d(x, w, Tensor(), 0); }, {"conv2d", "stride", "(0, 0)"});
  expect_error([&] { conv2d(x, w, Tensor(), params(1, 1, 0, -1)); }, {"conv2d", "padding", "(0, -1)"});
  expect_error([&] { conv2d(x, w, Tensor(), params(1, 1, 0, 0, 0, 1)); }, {"conv2d", "dilation", "(0, 1)"});
  expect_error([&] { conv2d(x, w, Tensor(), 1, 0, 1, 0); }, {"conv2d", "groups", "0"});
}

TEST(Conv2dErrors, OutputMustNotBeEmpty) {
  expect_error([] { conv2d(zeros({1, 3, 2, 2}), zeros({4, 3, 3, 3})); },
               {"conv2d", "f32[1, 3, 2, 2]", "f32[4, 3, 3, 3]", "3x3", "padding (0, 0)", "empty"});
  // The dilated kernel spans 7 pixels, more than the 5 + 2*0 available.
  expect_error([] { conv2d(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), Tensor(), 1, 0, 3); },
               {"conv2d", "f32[1, 3, 5, 5]", "7x7", "dilation (3, 3)"});
  // Padding makes it fit: no error.
  EXPECT_EQ(conv2d(zeros({1, 3, 2, 2}), zeros({4, 3, 3, 3}), Tensor(), 1, 1).shape(), (Shape{1, 4, 2, 2}));
}

// ---- conv2d_bn_eval: the inference-only conv -> eval BN [-> ReLU] -----------------------------------

namespace {

Tensor rand_t(const Shape& s, Generator& g, DType dt, double lo, double hi) { return Tensor::rand(s, g, dt, lo, hi); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  EXPECT_EQ(va.size(), vb.size());
  double m = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

}  // namespace

// Against the two separate functions, in F64 (the backend's default path) and in F32 through oneDNN's
// epilogue and through the im2col fallback; shapes with bias, groups, depthwise, strides, padding,
// with and without the BN's affine parameters and the ReLU.
TEST(Conv2dBnEval, MatchesConvThenEvalBatchNorm) {
  struct Case {
    Shape x, w;
    Conv2dParams p;
    bool conv_bias, affine;
  };
  const std::vector<Case> cases = {
      {{4, 16, 12, 12}, {32, 16, 3, 3}, params(1, 1, 1, 1), false, true},
      {{2, 16, 9, 9}, {16, 16, 3, 3}, params(2, 2, 1, 1), true, true},
      {{3, 32, 8, 8}, {32, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 32), false, true},  // depthwise
      {{2, 12, 7, 7}, {24, 4, 1, 1}, params(1, 1, 0, 0, 1, 1, 3), true, false},    // grouped 1x1 (GEMMs)
      {{2, 12, 10, 10}, {24, 4, 1, 1}, params(1, 1, 0, 0, 1, 1, 3), false, true},  // grouped 1x1 (oneDNN, fused
                                                                                   // unless it picks a GEMM kernel)
      {{2, 3, 10, 10}, {8, 3, 3, 3}, params(1, 1, 1, 1), false, false},
  };
  Generator gen(11);
  const cpu::ConvImpl saved = cpu::conv_impl();
  for (DType dt : {DType::F32, DType::F64})
    for (cpu::ConvImpl impl : {cpu::ConvImpl::Auto, cpu::ConvImpl::Im2col})
      for (const Case& c : cases)
        for (bool relu : {false, true}) {
          cpu::set_conv_impl(impl);
          const int64_t oc = c.w[0];
          const Tensor x = Tensor::randn(c.x, gen, dt), w = Tensor::randn(c.w, gen, dt, 0.0, 0.3);
          const Tensor b = c.conv_bias ? Tensor::randn({oc}, gen, dt) : Tensor();
          const Tensor gamma = c.affine ? rand_t({oc}, gen, dt, 0.5, 1.5) : Tensor();
          const Tensor beta = c.affine ? Tensor::randn({oc}, gen, dt) : Tensor();
          const Tensor rm = Tensor::randn({oc}, gen, dt), rv = rand_t({oc}, gen, dt, 0.2, 3.0);
          const Tensor ref = [&] {
            const Tensor y = batch_norm(conv2d(x, w, b, c.p), rm, rv, gamma, beta, false, 0.1, 1e-5);
            return relu ? retort::relu(y) : y;
          }();
          const Tensor got = conv2d_bn_eval(x, w, b, c.p, gamma, beta, rm, rv, 1e-5, relu);
          ASSERT_EQ(got.shape(), ref.shape());
          ASSERT_EQ(got.dtype(), dt);
          const double tol = dt == DType::F32 ? 2e-5 : 1e-12;
          EXPECT_LE(max_abs_diff(got, ref), tol * 10)
              << dtype_name(dt) << " x" << shape_str(c.x) << " w" << shape_str(c.w) << " relu " << relu << " impl "
              << static_cast<int>(impl);
          if (relu) {
            const auto v = got.to_vector();
            EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](double e) { return e >= 0; }));
          }
        }
  cpu::set_conv_impl(saved);
}

// oneDNN's GEMM-based convolution applies the epilogue's binary post-ops element by element (200x
// slower on ShuffleNetV1's grouped 1x1 layers): a fused call never keeps such a kernel, and the result
// still matches the two-kernel path.
TEST(Conv2dBnEval, FusedEpilogueIsNeverAGemmKernel) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  Generator gen(13);
  NoGradGuard ng;
  const Tensor x = Tensor::randn({2, 60, 16, 16}, gen), w = Tensor::randn({240, 20, 1, 1}, gen, DType::F32, 0.0, 0.3);
  const Tensor rm = Tensor::randn({240}, gen), rv = rand_t({240}, gen, DType::F32, 0.2, 3.0);
  const Tensor got = conv2d_bn_eval(x, w, Tensor(), params(1, 1, 0, 0, 1, 1, 3), Tensor(), Tensor(), rm, rv, 1e-5, true);
  // Whichever kernel oneDNN picked, the convolution ran in oneDNN (fused, or unfused as the first of two calls).
  bool listed = false;
  for (const std::string& c : cpu::dnnl_conv_choices()) listed |= c.find("x[2, 60, 16, 16] w[240, 20, 1, 1] g3") != std::string::npos;
  EXPECT_TRUE(listed);
  const Tensor ref = relu(batch_norm(conv2d(x, w, Tensor(), params(1, 1, 0, 0, 1, 1, 3)), rm, rv, Tensor(), Tensor(),
                                     false, 0.1, 1e-5));
  EXPECT_LE(max_abs_diff(got, ref), 2e-4);
  for (const std::string& c : cpu::dnnl_conv_choices()) {
    if (c.rfind("fwd+bn", 0) == 0) {
      EXPECT_EQ(c.find("gemm"), std::string::npos) << c;
    }
  }
  cpu::set_conv_impl(saved);
}

TEST(Conv2dBnEval, RefusesInputsThatWantGradients) {
  Tensor w = Tensor::zeros({4, 3, 3, 3});
  w.set_requires_grad(true);
  const Tensor x = zeros({1, 3, 5, 5}), rm = zeros({4}), rv = Tensor::ones({4});
  expect_error([&] { conv2d_bn_eval(x, w, Tensor(), params(1, 1, 1, 1), Tensor(), Tensor(), rm, rv, 1e-5, true); },
               {"conv2d_bn_eval", "inference only", "f32[4, 3, 3, 3]", "NoGradGuard"});
  NoGradGuard ng;  // without gradients the same call is fine
  EXPECT_EQ(conv2d_bn_eval(x, w, Tensor(), params(1, 1, 1, 1), Tensor(), Tensor(), rm, rv, 1e-5, true).shape(),
            (Shape{1, 4, 5, 5}));
}

TEST(Conv2dBnEval, ChecksTheBatchNormTensors) {
  const Tensor x = zeros({1, 3, 5, 5}), w = zeros({4, 3, 3, 3});
  expect_error([&] { conv2d_bn_eval(x, w, Tensor(), params(1, 1, 1, 1), Tensor(), Tensor(), zeros({3}),
                                    Tensor::ones({4}), 1e-5, false); },
               {"conv2d_bn_eval", "running_mean", "[4]", "f32[3]"});
  expect_error([&] { conv2d_bn_eval(x, w, Tensor(), params(1, 1, 1, 1), Tensor(), Tensor(), zeros({4}), Tensor(),
                                    1e-5, false); },
               {"conv2d_bn_eval", "running_var", "required"});
  expect_error([&] { conv2d_bn_eval(x, w, Tensor(), params(1, 1, 1, 1), zeros({4}, DType::F64), Tensor(),
                                    zeros({4}), Tensor::ones({4}), 1e-5, false); },
               {"conv2d_bn_eval", "bn weight", "f64[4]"});
}

// Forwards time oneDNN's two candidate kernels on their first call and keep one; the call's output is
// the chosen kernel's, so a second call gives the same values bit for bit.
TEST(Conv2d, ForwardKernelChoiceIsMadeOnceAndListed) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  Generator gen(29);
  const Tensor x = Tensor::randn({3, 32, 11, 11}, gen), w = Tensor::randn({48, 32, 3, 3}, gen);
  const Tensor first = conv2d(x, w, Tensor(), 1, 1);
  const Tensor second = conv2d(x, w, Tensor(), 1, 1);
  EXPECT_EQ(first.to_vector(), second.to_vector());
  const auto choices = cpu::dnnl_conv_choices();
  const bool listed = std::any_of(choices.begin(), choices.end(), [](const std::string& c) {
    return c.rfind("fwd x[3, 32, 11, 11] w[48, 32, 3, 3] g1: ", 0) == 0;
  });
  EXPECT_TRUE(listed);
  cpu::set_conv_impl(saved);
}

// With kernel autotuning off (as during Trainer::fit), a forward is built with one candidate only.
TEST(Conv2d, PinnedKernelsBuildOneCandidate) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  const bool tune = kernel_autotune();
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  set_kernel_autotune(false);
  Generator gen(31);
  conv2d(Tensor::randn({5, 32, 13, 13}, gen), Tensor::randn({40, 32, 3, 3}, gen), Tensor(), 1, 1);
  set_kernel_autotune(tune);
  cpu::set_conv_impl(saved);
  const auto choices = cpu::dnnl_conv_choices();
  const auto it = std::find_if(choices.begin(), choices.end(), [](const std::string& c) {
    return c.rfind("fwd x[5, 32, 13, 13] w[40, 32, 3, 3] g1: ", 0) == 0;
  });
  ASSERT_NE(it, choices.end());
  EXPECT_NE(it->find("(1 candidate)"), std::string::npos) << *it;
}

// The listing names the kernel the latest call really ran: a shape timed earlier in the process and
// then run pinned (as Trainer::fit does) shows candidate 0, and the timed choice beside it when they
// differ.
TEST(Conv2d, ListingNamesTheKernelAPinnedCallRan) {
  const cpu::ConvImpl saved = cpu::conv_impl();
  const bool tune = kernel_autotune();
  cpu::set_conv_impl(cpu::ConvImpl::Auto);
  Generator gen(37);
  const Tensor x = Tensor::randn({4, 32, 12, 12}, gen), w = Tensor::randn({32, 32, 3, 3}, gen);
  const std::string prefix = "fwd x[4, 32, 12, 12] w[32, 32, 3, 3] g1: ";
  auto entry = [&] {
    const auto choices = cpu::dnnl_conv_choices();
    const auto it = std::find_if(choices.begin(), choices.end(),
                                 [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
    return it == choices.end() ? std::string() : *it;
  };
  set_kernel_autotune(true);
  const Tensor timed = conv2d(x, w, Tensor(), 1, 1);
  const std::string after_timing = entry();
  set_kernel_autotune(false);
  const Tensor pinned = conv2d(x, w, Tensor(), 1, 1);
  const std::string after_pinned = entry();
  set_kernel_autotune(tune);
  cpu::set_conv_impl(saved);
  ASSERT_FALSE(after_timing.empty());
  ASSERT_FALSE(after_pinned.empty());
  const std::string timed_kernel = after_timing.substr(prefix.size(), after_timing.find(" (") - prefix.size());
  const std::string pinned_kernel = after_pinned.substr(prefix.size(), after_pinned.find(" (") - prefix.size());
  if (after_pinned.find("pinned; timing chose ") != std::string::npos) {
    EXPECT_NE(pinned_kernel, timed_kernel) << after_pinned;
    EXPECT_NE(after_pinned.find("timing chose " + timed_kernel + ")"), std::string::npos) << after_pinned;
  } else {
    EXPECT_EQ(after_pinned, after_timing);  // timing had chosen candidate 0: the same kernel ran
  }
  // Either kernel computes the same convolution.
  const auto a = timed.to_vector(), b = pinned.to_vector();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4 * (1 + std::abs(a[i]))) << i;
}

// ---- bf16 convolutions (cpu_conv_bf16) ----------------------------------------------------------

namespace {

// x rounded to the nearest bfloat16, ties to even (what oneDNN's F32 -> bf16 reorder does).
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  u &= 0xFFFF0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

Tensor bf16_rounded_f64(const Tensor& t, bool absolute = false) {
  std::vector<double> v;
  for (double e : t.to_vector()) {
    const double r = round_bf16(static_cast<float>(e));
    v.push_back(absolute ? std::abs(r) : r);
  }
  return Tensor::from_vector(v, t.shape(), DType::F64);
}

// Turns one convolution math switch (set_cpu_conv_bf16, set_cpu_conv_winograd) on for a scope, on
// the oneDNN path with autotuning off, or reports why this CPU cannot.
struct ConvMathScope {
  std::string unsupported;
  void (*set)(bool);
  cpu::ConvImpl impl = cpu::conv_impl();
  bool tune = kernel_autotune();
  explicit ConvMathScope(void (*setter)(bool)) : set(setter) {
    cpu::set_conv_impl(cpu::ConvImpl::Auto);
    set_kernel_autotune(false);
    try {
      set(true);
    } catch (const Error& e) {
      unsupported = e.what();
    }
  }
  ~ConvMathScope() {
    set(false);
    set_kernel_autotune(tune);
    cpu::set_conv_impl(impl);
  }
};
struct Bf16Scope : ConvMathScope {
  Bf16Scope() : ConvMathScope(set_cpu_conv_bf16) {}
};

struct Bf16Case {
  Shape x, w;
  int64_t stride, pad, groups;
};

}  // namespace

// With bf16 on, each direction (forward with bias, backward-data, backward-weight) equals the F64
// convolution of its two operands rounded to bfloat16, to within F32 summation error (the products of
// two bf16 values are exact in F32), and is far closer to it than the F32 result is: so the operands
// really were rounded, and nothing else was. Off again, the same call gives the F32 result.
TEST(Conv2dBf16, EachDirectionIsTheConvolutionOfBf16RoundedOperands) {
  Bf16Scope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  Backend& be = backend_for(Device::cpu());
  Generator gen(41);
  for (const Bf16Case& c : {Bf16Case{{4, 24, 10, 10}, {32, 24, 3, 3}, 1, 1, 1},
                            Bf16Case{{3, 16, 9, 9}, {32, 8, 3, 3}, 2, 1, 2},
                            Bf16Case{{4, 32, 8, 8}, {48, 32, 1, 1}, 1, 0, 1}}) {
    const Conv2dParams p = params(c.stride, c.stride, c.pad, c.pad, 1, 1, c.groups);
    const Shape ys = out_shape(c.x, c.w, p);
    const Tensor x = Tensor::randn(c.x, gen), w = Tensor::randn(c.w, gen), gy = Tensor::randn(ys, gen);
    const Tensor bias = Tensor::randn({c.w[0]}, gen);
    // Each direction as (name, its two operands, the output shape, the number of products per output).
    enum Dir { Fwd, BwdData, BwdWeight };
    for (const Dir dir : {Fwd, BwdData, BwdWeight}) {
      const Shape out = dir == Fwd ? ys : dir == BwdData ? c.x : c.w;
      auto run = [&](const Tensor& a, const Tensor& b, bool abs_bias) {
        Tensor r = Tensor::empty(out, a.dtype());
        if (dir == Fwd) {
          Tensor bb = a.dtype() == DType::F32 ? bias : bias.to(DType::F64);
          if (abs_bias) bb = Tensor::from_vector([&] {
              auto v = bb.to_vector();
              for (auto& e : v) e = std::abs(e);
              return v;
            }(), bb.shape(), DType::F64);
          be.conv2d_forward(a, b, bb, p, r);
        } else if (dir == BwdData) {
          be.conv2d_backward_input(a, b, p, r);
        } else {
          be.conv2d_backward_weight(a, b, p, r);
        }
        return r.to_vector();
      };
      const Tensor& a = dir == Fwd ? x : gy;
      const Tensor& b = dir == BwdWeight ? x : w;
      const auto bf16 = run(a, b, false);
      set_cpu_conv_bf16(false);
      const auto f32 = run(a, b, false);
      set_cpu_conv_bf16(true);
      const auto ref = run(bf16_rounded_f64(a), bf16_rounded_f64(b), false);
      const auto abs_ref = run(bf16_rounded_f64(a, true), bf16_rounded_f64(b, true), true);
      const double terms = dir == Fwd         ? static_cast<double>(c.w[1] * c.w[2] * c.w[3] + 1)
                           : dir == BwdData   ? static_cast<double>(c.w[0] / c.groups * c.w[2] * c.w[3])
                                              : static_cast<double>(ys[0] * ys[2] * ys[3]);
      double bf16_err = 0, f32_err = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        const double bound = (terms + 1) * std::ldexp(1.0, -24) * abs_ref[i];
        ASSERT_LE(std::abs(bf16[i] - ref[i]), bound)
            << "direction " << dir << ", x " << shape_str(c.x) << ", w " << shape_str(c.w) << ", element " << i
            << ": bf16 " << bf16[i] << ", f32 " << f32[i] << ", reference " << ref[i];
        bf16_err = std::max(bf16_err, std::abs(bf16[i] - ref[i]));
        f32_err = std::max(f32_err, std::abs(f32[i] - ref[i]));
      }
      EXPECT_GT(f32_err, 10 * bf16_err) << "direction " << dir << ", x " << shape_str(c.x)
                                        << ": the bf16 call did not round its operands";
    }
  }
  const auto choices = cpu::dnnl_conv_choices();
  for (const char* prefix : {"fwd x[4, 24, 10, 10]", "bwd-data x[4, 24, 10, 10]", "bwd-weight x[4, 24, 10, 10]"}) {
    const auto it = std::find_if(choices.begin(), choices.end(), [&](const std::string& s) {
      return s.rfind(prefix, 0) == 0 && s.find(" bf16 (") != std::string::npos;
    });
    EXPECT_NE(it, choices.end()) << prefix << " is not listed as a bf16 kernel";
  }
}

// The inference conv + eval BN + ReLU (one oneDNN call with an epilogue) takes the bf16 kernel too,
// and equals the bf16 convolution followed by the batch norm and ReLU in F32.
TEST(Conv2dBf16, FusedInferenceConvBnReluMatchesTheUnfusedBf16Path) {
  Bf16Scope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  Generator gen(43);
  const Tensor x = Tensor::randn({2, 16, 12, 12}, gen), w = Tensor::randn({24, 16, 3, 3}, gen);
  const Tensor bn_w = Tensor::randn({24}, gen), bn_b = Tensor::randn({24}, gen), mean = Tensor::randn({24}, gen);
  const Tensor var = Tensor::rand({24}, gen, DType::F32, 0.5, 1.5);
  const Conv2dParams p = params(1, 1, 1, 1);
  const Tensor fused = conv2d_bn_eval(x, w, Tensor(), p, bn_w, bn_b, mean, var, 1e-5, true);
  const Tensor conv = conv2d(x, w, Tensor(), 1, 1);
  const auto c = conv.to_vector(), f = fused.to_vector(), g = bn_w.to_vector(), b = bn_b.to_vector(),
             m = mean.to_vector(), v = var.to_vector();
  const int64_t plane = 12 * 12;
  for (size_t i = 0; i < c.size(); ++i) {
    const size_t ch = static_cast<size_t>(static_cast<int64_t>(i) / plane % 24);
    const double want = std::max(0.0, (c[i] - m[ch]) / std::sqrt(v[ch] + 1e-5) * g[ch] + b[ch]);
    ASSERT_NEAR(f[i], want, 1e-4 * (1 + std::abs(want))) << i;
  }
  const auto choices = cpu::dnnl_conv_choices();
  EXPECT_TRUE(std::any_of(choices.begin(), choices.end(), [](const std::string& s) {
    return s.rfind("fwd+bn+relu x[2, 16, 12, 12]", 0) == 0 && s.find(" bf16 (") != std::string::npos;
  }));
}

// Where oneDNN has no bfloat16 convolutions, turning bf16 on is refused naming the instruction set.
TEST(Conv2dBf16, UnsupportedCpuIsRefusedNamingItsInstructionSet) {
  Bf16Scope scope;
  if (scope.unsupported.empty()) {
    EXPECT_TRUE(cpu_conv_bf16());
    EXPECT_NE(cpu::dnnl_info().find(" bf16, ISA "), std::string::npos) << cpu::dnnl_info();
    GTEST_SKIP() << "this CPU has bf16 convolutions (" << cpu::dnnl_info() << ")";
  }
  EXPECT_NE(scope.unsupported.find("AVX-512"), std::string::npos) << scope.unsupported;
  EXPECT_NE(scope.unsupported.find("ISA"), std::string::npos) << scope.unsupported;
  EXPECT_FALSE(cpu_conv_bf16());
}

// ---- Winograd convolutions (cpu_conv_winograd) ------------------------------------------------------

namespace {

struct WinogradScope : ConvMathScope {
  WinogradScope() : ConvMathScope(set_cpu_conv_winograd) {}
};

// One direction of the convolution of x and w on the CPU backend — 0 forward with bias, 1 the data
// gradient of gy, 2 the weight gradient of gy — with the operands converted to `dt`.
std::vector<double> conv_direction(int dir, const Tensor& x, const Tensor& w, const Tensor& gy, const Tensor& bias,
                                   const Conv2dParams& p, DType dt = DType::F32) {
  Backend& be = backend_for(Device::cpu());
  const Tensor a = (dir == 0 ? x : gy).to(dt), b = (dir == 2 ? x : w).to(dt);
  Tensor r = Tensor::empty(dir == 0 ? gy.shape() : dir == 1 ? x.shape() : w.shape(), dt);
  if (dir == 0) be.conv2d_forward(a, b, bias.to(dt), p, r);
  if (dir == 1) be.conv2d_backward_input(a, b, p, r);
  if (dir == 2) be.conv2d_backward_weight(a, b, p, r);
  return r.to_vector();
}

// With Winograd on (the caller's scope), each direction of the convolution of random operands gives
// bitwise what it gives with Winograd off.
void expect_unchanged_by_winograd(Generator& gen, const Shape& xs, const Shape& wsh, const Conv2dParams& p) {
  const Shape ys = out_shape(xs, wsh, p);
  const Tensor x = Tensor::randn(xs, gen), w = Tensor::randn(wsh, gen), gy = Tensor::randn(ys, gen);
  const Tensor bias = Tensor::randn({wsh[0]}, gen);
  for (int dir : {0, 1, 2}) {
    const auto on = conv_direction(dir, x, w, gy, bias, p);
    set_cpu_conv_winograd(false);
    const auto off = conv_direction(dir, x, w, gy, bias, p);
    set_cpu_conv_winograd(true);
    EXPECT_EQ(on, off) << "direction " << dir << ", x " << shape_str(xs) << ", w " << shape_str(wsh);
  }
}

}  // namespace

// winograd.cpp's own F(4x4, 3x3) kernels (what math "winograd" runs where oneDNN has no Winograd
// kernels), called directly so that every machine tests them: each direction against the F64
// convolution, on outputs that are not whole tiles (down to 1x1), padding 0 to 2 and unequal on the two
// axes, unequal channel counts, batches split into one or a few samples per chunk, and 1 and 3 threads
// (so that both ways of splitting the work run: by chunks, and in rounds when chunks < threads).
TEST(Conv2dWinograd, OwnKernelsMatchF64InEveryDirection) {
  struct Case {
    Shape x;
    int64_t out_channels, pad_h, pad_w;
    size_t chunk_bytes;
  };
  const size_t old = cpu::set_winograd_chunk_bytes(size_t{4} << 20);
  const int old_threads = omp_get_max_threads();
  Generator gen(61);
  for (const int threads : {1, 3})
  for (const Case& c : {Case{{3, 5, 7, 10}, 4, 1, 1, size_t{4} << 20}, Case{{2, 3, 9, 6}, 7, 0, 2, size_t{4} << 20},
                        Case{{5, 17, 8, 8}, 33, 2, 0, 1}, Case{{4, 8, 1, 1}, 6, 1, 1, size_t{4} << 20},
                        Case{{7, 16, 12, 12}, 16, 1, 1, 40000}, Case{{1, 6, 3, 5}, 5, 0, 0, size_t{4} << 20}}) {
    omp_set_num_threads(threads);
    cpu::set_winograd_chunk_bytes(c.chunk_bytes);
    const Shape wsh{c.out_channels, c.x[1], 3, 3};
    const Conv2dParams p = params(1, 1, c.pad_h, c.pad_w);
    ASSERT_TRUE(cpu::winograd_shape_ok(wsh, p));
    const Shape ys = out_shape(c.x, wsh, p);
    const Tensor x = Tensor::randn(c.x, gen), w = Tensor::randn(wsh, gen), gy = Tensor::randn(ys, gen);
    const Tensor bias = Tensor::randn({wsh[0]}, gen);
    ASSERT_EQ(x.dtype(), DType::F32);
    const float *xv = x.data<float>(), *wv = w.data<float>(), *gyv = gy.data<float>(), *bv = bias.data<float>();
    for (int dir : {0, 1, 2}) {
      const auto d = static_cast<cpu::DnnlConvDir>(dir);
      std::vector<float> got(static_cast<size_t>(shape_numel(dir == 0 ? ys : dir == 1 ? c.x : wsh)), -1.f);
      std::vector<float> ws(cpu::winograd_workspace_bytes(d, c.x, wsh, ys, p) / sizeof(float));
      cpu::winograd_conv2d(d, c.x, wsh, ys, p, dir == 0 ? xv : gyv, dir == 2 ? xv : wv,
                           dir == 0 ? bv : nullptr, got.data(), nullptr, ws.data());
      const auto ref = conv_direction(dir, x, w, gy, bias, p, DType::F64);
      double scale = 0, err = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        scale = std::max(scale, std::abs(ref[i]));
        err = std::max(err, std::abs(got[i] - ref[i]));
      }
      // Measured 0.9-3.2e-6 of the largest value on these cases (the direct kernel's: 0.3-0.7e-6).
      EXPECT_LE(err, 1e-5 * scale) << "direction " << dir << ", x " << shape_str(c.x) << ", w " << shape_str(wsh)
                                   << ", pad " << c.pad_h << "x" << c.pad_w << ", chunk " << c.chunk_bytes
                                   << ", threads " << threads;
    }
    // The forward with an eval-BN epilogue (scale, shift, then ReLU) folded into its weights and bias.
    std::vector<float> scale(static_cast<size_t>(wsh[0])), shift(scale.size());
    for (size_t o = 0; o < scale.size(); ++o) scale[o] = 0.5f + 0.25f * static_cast<float>(o % 5), shift[o] = 0.1f * static_cast<float>(o % 3) - 0.1f;
    const cpu::DnnlEpilogue epi{scale.data(), shift.data(), true};
    std::vector<float> got(static_cast<size_t>(shape_numel(ys)));
    std::vector<float> ws(cpu::winograd_workspace_bytes(cpu::DnnlConvDir::Forward, c.x, wsh, ys, p) / sizeof(float));
    cpu::winograd_conv2d(cpu::DnnlConvDir::Forward, c.x, wsh, ys, p, xv, wv, bv, got.data(), &epi,
                         ws.data());
    const auto ref = conv_direction(0, x, w, gy, bias, p, DType::F64);
    const int64_t plane = ys[2] * ys[3];
    double largest = 0;  // of the scaled convolution, before the shift and ReLU
    for (size_t i = 0; i < ref.size(); ++i)
      largest = std::max(largest, std::abs(ref[i] * scale[static_cast<size_t>(static_cast<int64_t>(i) / plane % wsh[0])]));
    for (size_t i = 0; i < ref.size(); ++i) {
      const size_t o = static_cast<size_t>(static_cast<int64_t>(i) / plane % wsh[0]);
      const double want = std::max(0.0, ref[i] * scale[o] + shift[o]);
      ASSERT_NEAR(got[i], want, 1e-5 * largest) << "fused forward, x " << shape_str(c.x) << ", element " << i;
    }
  }
  omp_set_num_threads(old_threads);
  cpu::set_winograd_chunk_bytes(old);
  // An empty batch has a zero weight gradient (whatever the workspace held).
  const Shape xs{0, 4, 6, 6}, wsh{5, 4, 3, 3}, ys{0, 5, 6, 6};
  const Conv2dParams p = params(1, 1, 1, 1);
  std::vector<float> ws(cpu::winograd_workspace_bytes(cpu::DnnlConvDir::BackwardWeight, xs, wsh, ys, p) / sizeof(float), 7.f);
  std::vector<float> gw(static_cast<size_t>(shape_numel(wsh)), -1.f);
  cpu::winograd_conv2d(cpu::DnnlConvDir::BackwardWeight, xs, wsh, ys, p, nullptr, nullptr, nullptr, gw.data(), nullptr,
                       ws.data());
  EXPECT_EQ(gw, std::vector<float>(gw.size(), 0.f));
}

// Below AVX-512 a 3x3 layer with padding beyond 2 (which winograd.cpp does not take) runs the direct
// kernel with Winograd on, bitwise as with it off, and the listing says so.
TEST(Conv2dWinograd, PaddingBeyondTwoRunsTheDirectKernelBelowAvx512) {
  WinogradScope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  if (cpu::dnnl_info().find("ISA avx512") != std::string::npos) GTEST_SKIP() << "oneDNN's own Winograd kernels here";
  Generator gen(67);
  expect_unchanged_by_winograd(gen, {2, 32, 6, 6}, {32, 32, 3, 3}, params(1, 1, 3, 3));
  const auto choices = cpu::dnnl_conv_choices();
  EXPECT_TRUE(std::any_of(choices.begin(), choices.end(), [](const std::string& s) {
    return s.rfind("fwd x[2, 32, 6, 6]", 0) == 0 && s.find("direct (no winograd kernel)") != std::string::npos;
  }));
}

// With Winograd on, each direction of an eligible convolution (3x3, stride 1, >= 32 channels) runs
// a Winograd kernel, oneDNN's or ours (the listing says so) and stays within a normwise bound of the F64
// convolution, while differing from the direct F32 result (so another algorithm really ran).
TEST(Conv2dWinograd, EachDirectionIsCloseToF64AndRunsTheWinogradKernel) {
  WinogradScope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  Generator gen(47);
  const Shape xs{4, 32, 12, 12}, wsh{48, 32, 3, 3};
  const Conv2dParams p = params(1, 1, 1, 1);
  const Shape ys = out_shape(xs, wsh, p);
  const Tensor x = Tensor::randn(xs, gen), w = Tensor::randn(wsh, gen), gy = Tensor::randn(ys, gen);
  const Tensor bias = Tensor::randn({wsh[0]}, gen);
  for (int dir : {0, 1, 2}) {
    const auto wino = conv_direction(dir, x, w, gy, bias, p);
    set_cpu_conv_winograd(false);
    const auto direct = conv_direction(dir, x, w, gy, bias, p);
    set_cpu_conv_winograd(true);
    const auto ref = conv_direction(dir, x, w, gy, bias, p, DType::F64);
    double scale = 0, wino_err = 0, direct_err = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      scale = std::max(scale, std::abs(ref[i]));
      wino_err = std::max(wino_err, std::abs(wino[i] - ref[i]));
      direct_err = std::max(direct_err, std::abs(direct[i] - ref[i]));
    }
    // Measured: oneDNN's jit_wino_4x3 (AVX-512) 0.9-1.3e-6 of the largest output, winograd.cpp's
    // (below AVX-512) 3.0-4.9e-6, the direct kernel's 0.3-0.7e-6.
    EXPECT_LE(wino_err, 1e-5 * scale) << "direction " << dir << ": direct kernel's error " << direct_err;
    EXPECT_NE(wino, direct) << "direction " << dir << ": bitwise the direct kernel's result";
  }
  const auto choices = cpu::dnnl_conv_choices();
  for (const char* prefix : {"fwd x[4, 32, 12, 12]", "bwd-data x[4, 32, 12, 12]", "bwd-weight x[4, 32, 12, 12]"}) {
    const auto it = std::find_if(choices.begin(), choices.end(), [&](const std::string& s) {
      return s.rfind(prefix, 0) == 0 && s.find(" winograd (") != std::string::npos && s.find("wino") < s.find(" winograd (");
    });
    EXPECT_NE(it, choices.end()) << prefix << " is not listed as a Winograd kernel";
    // oneDNN's own Winograd kernels on AVX-512, winograd.cpp's below.
    if (it != choices.end() && cpu::dnnl_info().find("ISA avx512") == std::string::npos) {
      EXPECT_NE(it->find("retort_wino_4x3"), std::string::npos) << *it;
    }
  }
  EXPECT_NE(cpu::dnnl_info().find("f32 winograd"), std::string::npos) << cpu::dnnl_info();
}

// The inference conv + eval BN + ReLU runs the Winograd kernel too, with the BN folded into the weights
// and bias (oneDNN's Winograd kernels take no per-channel post-ops), and equals the Winograd
// convolution followed by the batch norm and ReLU.
TEST(Conv2dWinograd, FusedInferenceConvBnReluFoldsTheBatchNorm) {
  WinogradScope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  Generator gen(59);
  const Tensor x = Tensor::randn({2, 32, 12, 12}, gen), w = Tensor::randn({40, 32, 3, 3}, gen);
  const Tensor cb = Tensor::randn({40}, gen);
  const Tensor bn_w = Tensor::randn({40}, gen), bn_b = Tensor::randn({40}, gen), mean = Tensor::randn({40}, gen);
  const Tensor var = Tensor::rand({40}, gen, DType::F32, 0.5, 1.5);
  const Conv2dParams p = params(1, 1, 1, 1);
  for (const bool relu : {true, false}) {
    const Tensor fused = conv2d_bn_eval(x, w, cb, p, bn_w, bn_b, mean, var, 1e-5, relu);
    const Tensor conv = conv2d(x, w, cb, 1, 1);
    const auto c = conv.to_vector(), f = fused.to_vector(), g = bn_w.to_vector(), b = bn_b.to_vector(),
               m = mean.to_vector(), v = var.to_vector();
    const int64_t plane = 12 * 12;
    // Both sides round like a Winograd convolution (a few 1e-6 of the largest output, scaled by the
    // BN), each its own way: the folded weights are not the convolution's.
    double largest = 0;
    for (double e : c) largest = std::max(largest, std::abs(e));
    for (size_t i = 0; i < c.size(); ++i) {
      const size_t ch = static_cast<size_t>(static_cast<int64_t>(i) / plane % 40);
      const double k = g[ch] / std::sqrt(v[ch] + 1e-5);
      double want = (c[i] - m[ch]) * k + b[ch];
      if (relu) want = std::max(0.0, want);
      ASSERT_NEAR(f[i], want, 2e-5 * largest * std::abs(k) + 1e-6 * (1 + std::abs(want))) << "relu " << relu << ", element " << i;
    }
    const auto choices = cpu::dnnl_conv_choices();
    const std::string prefix = relu ? "fwd+bn+relu x[2, 32, 12, 12]" : "fwd+bn x[2, 32, 12, 12]";
    EXPECT_TRUE(std::any_of(choices.begin(), choices.end(), [&](const std::string& s) {
      return s.rfind(prefix, 0) == 0 && s.find(" winograd (") != std::string::npos;
    })) << prefix << " did not run the Winograd kernel";
  }
}

// Shapes Winograd is not used for — fewer than 32 channels, stride 2, 1x1, grouped — give bitwise the
// result they give with Winograd off.
TEST(Conv2dWinograd, OtherShapesRunTheDirectKernelUnchanged) {
  WinogradScope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  Generator gen(53);
  struct Case { Shape x, w; int64_t stride, pad, groups; };
  for (const Case& c : {Case{{2, 16, 10, 10}, {16, 16, 3, 3}, 1, 1, 1}, Case{{2, 32, 10, 10}, {32, 32, 3, 3}, 2, 1, 1},
                        Case{{2, 32, 8, 8}, {48, 32, 1, 1}, 1, 0, 1}, Case{{2, 64, 8, 8}, {64, 32, 3, 3}, 1, 1, 2}}) {
    expect_unchanged_by_winograd(gen, c.x, c.w, params(c.stride, c.stride, c.pad, c.pad, 1, 1, c.groups));
  }
}

// bf16 and Winograd are exclusive (oneDNN's Winograd kernels are F32): turning one on while the other
// is on is refused, naming both, and changes nothing.
TEST(Conv2dWinograd, ExclusiveWithBf16) {
  WinogradScope scope;
  if (!scope.unsupported.empty()) GTEST_SKIP() << scope.unsupported;
  try {
    set_cpu_conv_bf16(true);
    ADD_FAILURE() << "bf16 came on while Winograd was on";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Winograd"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(cpu_conv_bf16());
  EXPECT_TRUE(cpu_conv_winograd());
  set_cpu_conv_winograd(false);
  Bf16Scope bf16;
  if (!bf16.unsupported.empty()) return;
  EXPECT_THROW(set_cpu_conv_winograd(true), Error);
  EXPECT_FALSE(cpu_conv_winograd());
}

