// The kernel profiler behind `retort-bench --profile`: while enabled, every backend kernel call is
// counted and timed under its name, convolutions also under their shape with their FLOP count; while
// disabled nothing is recorded.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/profile.h"

using namespace retort;

TEST(Profiling, CountsKernelsAndConvolutionFlopsOnlyWhileEnabled) {
  Generator gen(3);
  Tensor x = Tensor::randn({2, 4, 6, 6}, gen).set_requires_grad();
  Tensor w = Tensor::randn({8, 4, 3, 3}, gen).set_requires_grad();
  profiling::reset();
  profiling::enable(true);
  Tensor y = relu(conv2d(x, w, Tensor(), 1, 1));
  sum(y).backward();
  profiling::enable(false);
  const profiling::Table t = profiling::snapshot();
  // The forward, both backwards, and ReLU's forward and fused backward, each called once.
  for (const char* k : {"conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "unary:relu",
                        "binary:mask_positive"}) {
    ASSERT_TRUE(t.by_kernel.count(k)) << k;
    EXPECT_EQ(t.by_kernel.at(k).calls, 1) << k;
    EXPECT_GE(t.by_kernel.at(k).seconds, 0.0) << k;
  }
  // 2 * N * O * OH * OW * C * KH * KW = 2 * 2 * 8 * 6 * 6 * 4 * 3 * 3 for each pass.
  const double flops = 2.0 * 2 * 8 * 6 * 6 * 4 * 3 * 3;
  EXPECT_DOUBLE_EQ(t.by_kernel.at("conv2d_forward").flops, flops);
  EXPECT_DOUBLE_EQ(t.by_kernel.at("conv2d_backward_weight").flops, flops);
  ASSERT_TRUE(t.by_conv_shape.count("fwd x[2, 4, 6, 6] w[8, 4, 3, 3] s1 p1"));
  EXPECT_EQ(t.by_conv_shape.size(), 3u);

  // Disabled: the next convolution leaves the table as it was.
  conv2d(x, w, Tensor(), 1, 1);
  EXPECT_EQ(profiling::snapshot().by_kernel.at("conv2d_forward").calls, 1);
  profiling::reset();
  EXPECT_TRUE(profiling::snapshot().by_kernel.empty());
}

// The oneDNN convolutions report the reorders between NCHW and their blocked layouts as part of their
// call (Stat::layout_seconds, retort-bench's "reorder %"): more than nothing, less than the call. A
// kernel that converts nothing reports none, and a call outside profiling adds nothing to the next one.
TEST(Profiling, ConvolutionsReportTheirLayoutReorders) {
  Generator gen(5);
  const Tensor x = Tensor::randn({8, 32, 16, 16}, gen), w = Tensor::randn({32, 32, 3, 3}, gen);
  conv2d(x, w, Tensor(), 1, 1);  // builds the oneDNN primitive outside the timed call
  profiling::reset();
  profiling::enable(true);
  conv2d(x, w, Tensor(), 1, 1);
  relu(x);
  profiling::enable(false);
  const profiling::Table t = profiling::snapshot();
  const profiling::Stat& conv = t.by_conv_shape.at("fwd x[8, 32, 16, 16] w[32, 32, 3, 3] s1 p1");
  EXPECT_GT(conv.layout_seconds, 0.0);
  EXPECT_LT(conv.layout_seconds, conv.seconds);
  EXPECT_EQ(t.by_kernel.at("conv2d_forward").layout_seconds, conv.layout_seconds);
  EXPECT_EQ(t.by_kernel.at("unary:relu").layout_seconds, 0.0);
  profiling::reset();
}

// A blocked activation rewritten to NCHW by library code reading its data while no kernel call is timed
// is counted apart (Table::layout_seconds_outside_kernels, retort-bench's "outside any kernel"), not
// dropped or charged to the next kernel.
TEST(Profiling, LayoutRewritesOutsideKernelsAreCountedApart) {
  if (!cpu_blocked_activations()) GTEST_SKIP() << "blocked activations are off (RETORT_CPU_BLOCKED=0)";
  Generator gen(5);
  const Tensor x = Tensor::randn({8, 32, 16, 16}, gen), w = Tensor::randn({32, 32, 3, 3}, gen);
  conv2d(x, w, Tensor(), 1, 1);  // builds the oneDNN primitive outside the timed call
  profiling::reset();
  profiling::enable(true);
  const Tensor y = conv2d(x, w, Tensor(), 1, 1);
  const bool blocked = y.layout_block() != 0;
  const float first = y.data<float>()[0];  // library code reading the data: rewritten to NCHW here
  relu(x);
  profiling::enable(false);
  const profiling::Table t = profiling::snapshot();
  profiling::reset();
  if (!blocked) GTEST_SKIP() << "oneDNN left this convolution's output row-major on this CPU";
  EXPECT_TRUE(std::isfinite(first));
  EXPECT_EQ(y.layout_block(), 0);
  EXPECT_GT(t.layout_seconds_outside_kernels, 0.0);
  EXPECT_EQ(t.by_kernel.at("unary:relu").layout_seconds, 0.0);
}
