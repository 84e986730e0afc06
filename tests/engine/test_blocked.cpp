// Blocked activations (engine/cpu/blocked.cpp, Storage::block): the in-place rewrite to row-major, views,
// batch norm and elementwise kernels in nChw8c / nChw16c against the row-major kernels, mixed layouts,
// and convolutions that leave their outputs blocked against the same convolutions with the switch off.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/functions.h"

using namespace retort;

namespace {

// Sets cpu_blocked_activations() for a scope.
struct BlockedSwitch {
  bool old;
  explicit BlockedSwitch(bool on) : old(cpu_blocked_activations()) { set_cpu_blocked_activations(on); }
  ~BlockedSwitch() { set_cpu_blocked_activations(old); }
};

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double rtol, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0, worst = 0;
  for (double v : b) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  EXPECT_LE(worst, rtol * std::max(scale, 1e-30)) << what << ": largest difference " << worst << " of scale " << scale;
}

Tensor randn(const Shape& s, uint64_t seed, double mean = 0.0) {
  Generator gen(seed);
  return Tensor::randn(s, gen, DType::F32, mean);
}

}  // namespace

TEST(BlockedLayout, CopyIsBlockedAndReadsBackRowMajor) {
  for (int b : {8, 16}) {
    const Tensor x = randn({3, 32, 5, 7}, 1);
    const std::vector<double> plain = x.to_vector();
    const Tensor y = cpu::in_block_layout(x, b);
    ASSERT_EQ(y.layout_block(), b);
    EXPECT_EQ(x.layout_block(), 0);
    // Element (n, c, s) sits at ((n * C/B + c/B) * S + s) * B + c % B.
    const float* raw = static_cast<const float*>(y.raw_data_any_layout());
    const int64_t C = 32, S = 35;
    for (int64_t n : {0, 2})
      for (int64_t c : {0, 5, 17, 31})
        for (int64_t s : {0, 13, 34})
          EXPECT_EQ(raw[((n * (C / b) + c / b) * S + s) * b + c % b], static_cast<float>(plain[(n * C + c) * S + s]));
    const Tensor view = y.view_as_shape({3, 32 * 35});  // another shape reads row-major
    EXPECT_EQ(view.layout_block(), 0);
    EXPECT_EQ(view.to_vector(), plain);  // the read rewrote the storage in place...
    EXPECT_EQ(y.layout_block(), 0);      // ...for every view of it
    EXPECT_EQ(y.to_vector(), plain);
  }
}

TEST(BlockedLayout, OnlyWholeFourDimensionalF32TensorsWithChannelsInBlocks) {
  EXPECT_THROW(Tensor::zeros({2, 12, 3, 3}).set_layout_block(8), Error);
  EXPECT_THROW(Tensor::zeros({2, 16, 9}).set_layout_block(8), Error);
  EXPECT_THROW(Tensor::zeros({2, 16, 3, 3}, DType::F64).set_layout_block(8), Error);
  EXPECT_THROW(Tensor::zeros({2, 16, 3, 3}).set_layout_block(4), Error);
  const Tensor a = cpu::in_block_layout(randn({2, 16, 3, 3}, 2), 8), b = randn({2, 16, 3, 3}, 3);
  EXPECT_EQ(cpu::common_block({&a, &b}), 8);
  const Tensor c = randn({2, 16, 3, 4}, 4);
  EXPECT_EQ(cpu::common_block({&a, &c}), 0);  // shapes differ: row-major
  const Tensor d = cpu::in_block_layout(randn({2, 16, 3, 3}, 5), 16);
  EXPECT_EQ(cpu::common_block({&a, &d}), 0);  // two block sizes: row-major
}

TEST(BlockedLayout, BatchNormMatchesTheRowMajorKernels) {
  // N = 3 and 19: one sample chunk and several (a partial one last); with and without the ReLU and
  // the affine parameters; training and eval; the backward with its operands in mixed layouts.
  for (int b : {8, 16})
    for (int64_t n : {3, 19})
      for (bool relu : {false, true})
        for (bool affine : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "block " << b << " n " << n << " relu " << relu << " affine " << affine);
          const Shape s{n, 32, 6, 5};
          const Tensor x = randn(s, 10, 0.5), gy = randn(s, 11);
          Tensor w, bias;
          if (affine) {
            w = randn({32}, 12, 1.0).set_requires_grad();
            bias = randn({32}, 13).set_requires_grad();
          }
          Tensor rm = Tensor::zeros({32}), rv = Tensor::ones({32}), rm2 = rm.clone(), rv2 = rv.clone();
          auto run = [&](const Tensor& in, const Tensor& g, Tensor& m, Tensor& v, bool training) {
            Tensor xin = in.detach().set_requires_grad();
            Tensor wi = affine ? w.detach().set_requires_grad() : Tensor();
            Tensor bi = affine ? bias.detach().set_requires_grad() : Tensor();
            const Tensor y = relu ? batch_norm_relu(xin, m, v, wi, bi, training) : batch_norm(xin, m, v, wi, bi, training);
            const int yb = y.layout_block();
            y.backward(g);
            std::vector<std::vector<double>> out{y.to_vector(), xin.grad().to_vector(), m.to_vector(), v.to_vector()};
            if (affine) {
              out.push_back(wi.grad().to_vector());
              out.push_back(bi.grad().to_vector());
            }
            return std::make_pair(out, yb);
          };
          for (bool training : {true, false}) {
            const auto [ref, rb] = run(x, gy, rm, rv, training);
            EXPECT_EQ(rb, 0);
            const auto [got, gb] = run(cpu::in_block_layout(x, b), gy, rm2, rv2, training);  // gy row-major
            EXPECT_EQ(gb, b);
            for (size_t i = 0; i < ref.size(); ++i) expect_close(got[i], ref[i], 2e-6, "output/gradient/statistic");
          }
        }
}

TEST(BlockedLayout, ElementwiseKeepsTheLayoutAndMixesWithRowMajor) {
  const Tensor a = randn({2, 16, 4, 4}, 20), b = randn({2, 16, 4, 4}, 21);
  const Tensor ab = cpu::in_block_layout(a, 8);
  for (const auto& [got, want] : std::vector<std::pair<Tensor, Tensor>>{
           {ab + b, a + b}, {b * ab, b * a}, {add_relu(ab, b), add_relu(a, b)}, {relu(ab), relu(a)},
           {exp(ab), exp(a)}, {ab - 1.5, a - 1.5}}) {
    EXPECT_EQ(got.layout_block(), 8);
    EXPECT_EQ(got.to_vector(), want.to_vector());
  }
  // Broadcasting reads row-major.
  const Tensor per_channel = randn({1, 16, 1, 1}, 22);
  const Tensor ab2 = cpu::in_block_layout(a, 8);
  EXPECT_EQ((ab2 * per_channel).to_vector(), (a * per_channel).to_vector());
}

TEST(BlockedLayout, ConvolutionChainsMatchTheSwitchOff) {
  // conv -> BN+ReLU -> conv -> BN -> + x -> ReLU -> mean, forward and backward: with the switch on the
  // convolutions' outputs stay blocked (where oneDNN's kernel writes a blocked layout) and every
  // gradient equals the NCHW run's up to the batch norm's summation order.
  if (cpu::conv_impl() == cpu::ConvImpl::Im2col) GTEST_SKIP() << "RETORT_CPU_CONV=im2col: no oneDNN convolutions";
  auto run = [](bool on, int& blocked_seen) {
    BlockedSwitch sw(on);
    const Tensor x = randn({4, 32, 10, 10}, 30).set_requires_grad();
    const Tensor w1 = (randn({32, 32, 3, 3}, 31) * 0.1).detach().set_requires_grad();
    const Tensor w2 = (randn({32, 32, 3, 3}, 32) * 0.1).detach().set_requires_grad();
    const Tensor g1 = randn({32}, 33, 1.0).set_requires_grad(), b1 = randn({32}, 34).set_requires_grad();
    const Tensor rm = Tensor::zeros({32}), rv = Tensor::ones({32});
    const Tensor h1 = conv2d(x, w1, Tensor(), 1, 1);
    blocked_seen = h1.layout_block();
    const Tensor h2 = batch_norm_relu(h1, rm, rv, g1, b1, true);
    const Tensor h3 = batch_norm(conv2d(h2, w2, Tensor(), 1, 1), Tensor(), Tensor(), Tensor(), Tensor(), true);
    const Tensor out = add_relu(h3, x);
    const Tensor loss = sum(mul(out, randn({4, 32, 10, 10}, 35)));
    loss.backward();
    return std::vector<std::vector<double>>{out.to_vector(),      x.grad().to_vector(),  w1.grad().to_vector(),
                                            w2.grad().to_vector(), g1.grad().to_vector(), b1.grad().to_vector(),
                                            rm.to_vector(),        rv.to_vector()};
  };
  int on_block = -1, off_block = -1;
  const auto got = run(true, on_block), want = run(false, off_block);
  EXPECT_EQ(off_block, 0);
  EXPECT_TRUE(on_block == 8 || on_block == 16) << on_block;
  const char* names[] = {"out", "x.grad", "w1.grad", "w2.grad", "g1.grad", "b1.grad", "running_mean", "running_var"};
  for (size_t i = 0; i < got.size(); ++i) expect_close(got[i], want[i], 1e-5, names[i]);
}
