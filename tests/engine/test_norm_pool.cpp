// Forward values of batch_norm, pooling and nearest resizing against hand-computed results (the
// gradients are covered by the gradchecks), and their input validation. Expected values are worked out
// in the comments so a failure can be checked by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;

namespace {

Tensor t64(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s, DType::F64); }

void expect_near(const Tensor& t, const std::vector<double>& want, double tol = 1e-6) {
  const auto got = t.to_vector();
  ASSERT_EQ(got.size(), want.size()) << t.meta_str();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

Pool2dParams params(int64_t kernel, int64_t stride, int64_t pad, bool count_include_pad = true) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = kernel;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.count_include_pad = count_include_pad;
  return p;
}

// Per-channel mean and biased variance of an [N, C, S] tensor, by a naive double loop.
void channel_stats(const Tensor& t, int64_t c, double& mean, double& var) {
  const auto v = t.to_vector();
  const int64_t n = t.shape()[0], ch = t.shape()[1], s = t.numel() / (n * ch);
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) sum += v[(i * ch + c) * s + j];
  mean = sum / static_cast<double>(n * s);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) sq += (v[(i * ch + c) * s + j] - mean) * (v[(i * ch + c) * s + j] - mean);
  var = sq / static_cast<double>(n * s);
}

class BatchNormDtype : public ::testing::TestWithParam<DType> {};

}  // namespace

// ---- batch norm ------------------------------------------------------------------------------------

TEST_P(BatchNormDtype, TrainingNormalisesEachChannel) {
  const DType dt = GetParam();
  Generator gen(7);
  // Channels with very different scales and offsets.
  Tensor x = Tensor::randn({4, 3, 5, 5}, gen, dt) * 3.0 + 10.0;
  Tensor y = batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), /*training=*/true);
  ASSERT_EQ(y.shape(), x.shape());
  ASSERT_EQ(y.dtype(), dt);
  for (int64_t c = 0; c < 3; ++c) {
    double m, v;
    channel_stats(y, c, m, v);
    EXPECT_NEAR(m, 0.0, 1e-5) << "channel " << c;
    EXPECT_NEAR(v, 1.0, 1e-4) << "channel " << c;  // v / (v + eps) for the default eps 1e-5
  }
  // The affine transform applies per channel after normalising.
  Tensor w = Tensor::from_vector({2, -1, 0.5}, {3}, dt), b = Tensor::from_vector({1, 0, -3}, {3}, dt);
  Tensor ya = batch_norm(x, Tensor(), Tensor(), w, b, true);
  const auto yv = y.to_vector(), yav = ya.to_vector();
  const double wv[] = {2, -1, 0.5}, bv[] = {1, 0, -3};
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 25) % 3;
    ASSERT_NEAR(yav[i], yv[i] * wv[c] + bv[c], 1e-4) << "element " << i;
  }
}

TEST_P(BatchNormDtype, TrainingUpdatesRunningStatsInPlace) {
  const DType dt = GetParam();
  // [N=3, C=2]: channel 0 = {1, 3, 5} (mean 3, unbiased var 4), channel 1 = {10, 20, 60}
  // (mean 30, unbiased var (400 + 100 + 900) / 2 = 700).
  Tensor x = Tensor::from_vector({1, 10, 3, 20, 5, 60}, {3, 2}, dt);
  Tensor rm = Tensor::from_vector({1, 2}, {2}, dt), rv = Tensor::from_vector({1, 2}, {2}, dt);
  Tensor rm_alias = rm;
  Tensor y = batch_norm(x, rm, rv, Tensor(), Tensor(), true, /*momentum=*/0.1, /*eps=*/1e-5);
  // 0.9 * old + 0.1 * batch statistic.
  expect_near(rm, {0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 30}, 1e-5);
  expect_near(rv, {0.9 * 1 + 0.1 * 4, 0.9 * 2 + 0.1 * 700}, dt == DType::F32 ? 1e-4 : 1e-9);
  EXPECT_TRUE(rm_alias.shares_storage(rm));
  expect_near(rm_alias, {1.2, 4.8}, 1e-5);
  // Normalisation used the biased batch variance, not the running statistics: channel 0 is
  // (x - 3) / sqrt(8/3 + eps).
  const double s0 = 1 / std::sqrt(8.0 / 3 + 1e-5);
  expect_near(slice(y, 1, 0, 1), {-2 * s0, 0, 2 * s0}, 1e-5);
}

TEST_P(BatchNormDtype, EvalUsesRunningStats) {
  const DType dt = GetParam();
  // [N=2, C=2, L=2]
  Tensor x = Tensor::from_vector({1, 3, 0, 1, 5, -1, 2, 0.5}, {2, 2, 2}, dt);
  Tensor rm = Tensor::from_vector({1, -1}, {2}, dt), rv = Tensor::from_vector({4, 0.25}, {2}, dt);
  Tensor w = Tensor::from_vector({2, 1}, {2}, dt), b = Tensor::from_vector({0.5, 0}, {2}, dt);
  Tensor y = batch_norm(x, rm, rv, w, b, /*training=*/false, 0.1, /*eps=*/0.0);
  // channel 0: (x - 1) / 2 * 2 + 0.5 = x - 0.5; channel 1: (x + 1) / 0.5 = 2x + 2
  expect_near(y, {0.5, 2.5, 2, 4, 4.5, -1.5, 6, 3}, 1e-6);
  expect_near(rm, {1, -1});  // untouched in eval mode
  expect_near(rv, {4, 0.25});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BatchNormDtype, ::testing::Values(DType::F32, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(BatchNorm, RecordsOneNodeAndOnlyRequestedGradients) {
  Generator gen(3);
  Tensor x = Tensor::randn({4, 2, 3}, gen, DType::F64).set_requires_grad();
  Tensor w = Tensor::ones({2}, DType::F64), b = Tensor::zeros({2}, DType::F64).set_requires_grad();
  Tensor y = batch_norm(x, Tensor(), Tensor(), w, b, true);
  EXPECT_EQ(y.grad_fn()->name(), "BatchNormBackward");
  sum(y).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  // d sum(y) / d bias = number of values per channel; d/dx = 0 (the mean absorbs a uniform shift).
  expect_near(b.grad(), {12, 12});
  for (double v : x.grad().to_vector()) EXPECT_NEAR(v, 0.0, 1e-9);
}

// Large enough (> kParallelGrain elements) to take the OpenMP paths, forward and backward.
TEST(BatchNorm, F32MatchesF64) {
  Generator gen(5);
  const Shape shape{8, 4, 33, 32};
  Tensor x = Tensor::randn(shape, gen, DType::F64, 1.0, 2.0), gy = Tensor::randn(shape, gen, DType::F64);
  Tensor w = Tensor::rand({4}, gen, DType::F64, 0.5, 1.5), b = Tensor::randn({4}, gen, DType::F64);
  std::vector<std::vector<double>> got[2];
  for (int k = 0; k < 2; ++k) {
    const DType dt = k == 0 ? DType::F64 : DType::F32;
    // to() may return the same handle when the dtype already matches: detach so x itself is never marked.
    Tensor xs = x.to(dt).detach().set_requires_grad(), ws = w.to(dt).detach().set_requires_grad(),
           bs = b.to(dt).detach().set_requires_grad();
    Tensor y = batch_norm(xs, Tensor(), Tensor(), ws, bs, true);
    y.backward(gy.to(dt));
    got[k] = {y.to_vector(), xs.grad().to_vector(), ws.grad().to_vector(), bs.grad().to_vector()};
  }
  for (size_t t = 0; t < got[0].size(); ++t)
    for (size_t i = 0; i < got[0][t].size(); ++i)
      ASSERT_NEAR(got[1][t][i], got[0][t][i], 1e-4 * (1 + std::abs(got[0][t][i]))) << "output " << t << " element " << i;
}

// Naive double-precision batch norm (training statistics), optionally followed by a ReLU, and its
// backward for upstream gradient gy: the reference for the kernels' two sweeps (per-row on planes of
// 64+ values, channel blocks below that).
struct NaiveBn {
  std::vector<double> y, gx, gw, gb;
};
NaiveBn naive_bn(const std::vector<double>& x, const std::vector<double>& gy, const std::vector<double>& w,
                 const std::vector<double>& b, int64_t n, int64_t c, int64_t s, bool relu, double eps = 1e-5) {
  NaiveBn r{std::vector<double>(x.size()), std::vector<double>(x.size()), std::vector<double>(c),
            std::vector<double>(c)};
  const double m_count = static_cast<double>(n * s);
  for (int64_t ch = 0; ch < c; ++ch) {
    auto at = [&](int64_t i, int64_t j) { return static_cast<size_t>((i * c + ch) * s + j); };
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) mean += x[at(i, j)];
    mean /= m_count;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) var += (x[at(i, j)] - mean) * (x[at(i, j)] - mean);
    const double is = 1 / std::sqrt(var / m_count + eps);
    // g = dL/d(bn output): gy masked where the ReLU clipped.
    std::vector<double> g(static_cast<size_t>(n * s)), xhat(g.size());
    double sg = 0, sgx = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) {
        const size_t k = static_cast<size_t>(i * s + j);
        xhat[k] = (x[at(i, j)] - mean) * is;
        const double v = xhat[k] * w[ch] + b[ch];
        r.y[at(i, j)] = relu ? std::max(v, 0.0) : v;
        g[k] = relu && v <= 0 ? 0.0 : gy[at(i, j)];
        sg += g[k];
        sgx += g[k] * xhat[k];
      }
    r.gb[ch] = sg;
    r.gw[ch] = sgx;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) {
        const size_t k = static_cast<size_t>(i * s + j);
        r.gx[at(i, j)] = w[ch] * is * (g[k] - sg / m_count - xhat[k] * sgx / m_count);
      }
  }
  return r;
}

// Plane sizes on both sides of the kernels' small-plane switch (S = 1 is BatchNorm1d; 4 and 16 are
// mobile_half's 2x2 and 4x4 maps), channel counts that leave a partial last block, batches above the
// 64 rows a slot sums before going to double, and sizes on both sides of the OpenMP threshold.
TEST(BatchNorm, EveryPlaneSizeMatchesANaiveReference) {
  struct Case {
    Shape shape;
    bool relu;
  };
  const std::vector<Case> cases = {{{70, 130, 2, 2}, true}, {{70, 130, 2, 2}, false}, {{9, 37, 4, 4}, true},
                                   {{130, 600}, false},       {{3, 5, 1, 3}, true},      {{66, 33, 8, 8}, true},
                                   {{5, 3, 7, 9}, false},     {{2, 700, 1, 1}, false}};
  for (const Case& cs : cases) {
    const int64_t n = cs.shape[0], c = cs.shape[1], s = shape_numel(cs.shape) / (n * c);
    Generator gen(11);
    Tensor x = Tensor::randn(cs.shape, gen, DType::F64, 0.5, 2.0), gy = Tensor::randn(cs.shape, gen, DType::F64);
    Tensor w = Tensor::rand({c}, gen, DType::F64, 0.5, 1.5), b = Tensor::randn({c}, gen, DType::F64);
    const NaiveBn want = naive_bn(x.to_vector(), gy.to_vector(), w.to_vector(), b.to_vector(), n, c, s, cs.relu);
    for (DType dt : {DType::F64, DType::F32}) {
      const double tol = dt == DType::F64 ? 1e-10 : 2e-4;
      Tensor xs = x.to(dt).detach().set_requires_grad(), ws = w.to(dt).detach().set_requires_grad(),
             bs = b.to(dt).detach().set_requires_grad();
      Tensor y = cs.relu ? batch_norm_relu(xs, Tensor(), Tensor(), ws, bs, true)
                         : batch_norm(xs, Tensor(), Tensor(), ws, bs, true);
      y.backward(gy.to(dt));
      const std::vector<double>* ref[] = {&want.y, &want.gx, &want.gw, &want.gb};
      const std::vector<double> got[] = {y.to_vector(), xs.grad().to_vector(), ws.grad().to_vector(),
                                         bs.grad().to_vector()};
      const char* what[] = {"y", "grad x", "grad weight", "grad bias"};
      for (int t = 0; t < 4; ++t) {
        ASSERT_EQ(got[t].size(), ref[t]->size());
        double scale = 1;  // the sums (grad weight / bias) grow with N*S: compare relative to their size
        for (double v : *ref[t]) scale = std::max(scale, std::abs(v));
        for (size_t i = 0; i < got[t].size(); ++i)
          ASSERT_NEAR(got[t][i], (*ref[t])[i], tol * scale)
              << what[t] << " element " << i << ", x " << shape_str(cs.shape) << " " << dtype_name(dt)
              << (cs.relu ? " relu" : "");
      }
    }
  }
}

// Eval mode on a small plane (the channel-block sweep) against y = (x - rm) / sqrt(rv + eps) * w + b.
TEST(BatchNorm, EvalSmallPlaneMatchesFormula) {
  Generator gen(12);
  const int64_t n = 67, c = 200, s = 4;
  Tensor x = Tensor::randn({n, c, 2, 2}, gen, DType::F64), w = Tensor::randn({c}, gen, DType::F64),
         b = Tensor::randn({c}, gen, DType::F64), rm = Tensor::randn({c}, gen, DType::F64),
         rv = Tensor::rand({c}, gen, DType::F64, 0.2, 3.0);
  const auto xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), mv = rm.to_vector(), vv = rv.to_vector();
  for (bool relu : {false, true}) {
    Tensor y = relu ? batch_norm_relu(x, rm, rv, w, b, false) : batch_norm(x, rm, rv, w, b, false);
    const auto yv = y.to_vector();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t ch = (i / s) % c;
      const double v = (xv[i] - mv[ch]) / std::sqrt(vv[ch] + 1e-5) * wv[ch] + bv[ch];
      ASSERT_NEAR(yv[i], relu ? std::max(v, 0.0) : v, 1e-12) << "element " << i << (relu ? " relu" : "");
    }
  }
}

// ---- pooling ---------------------------------------------------------------------------------------

TEST(Pool, MaxPoolValuesAndIndices) {
  Tensor x = t64({1, 5, 2, 0,
                  3, 4, 8, 7,
                  9, 6, 1, 2,
                  0, 2, 3, 11}, {1, 1, 4, 4});
  // 2x2 windows: max 5 at (0,1), 8 at (1,2), 9 at (2,0), 11 at (3,3).
  Tensor y = Tensor::empty({1, 1, 2, 2}, DType::F64), idx = Tensor::empty({1, 1, 2, 2}, DType::I64);
  backend_for(x).max_pool2d_forward(x, params(2, 2, 0), y, idx);
  expect_near(y, {5, 8, 9, 11});
  EXPECT_EQ(idx.to_vector(), (std::vector<double>{1, 6, 8, 15}));
  expect_near(max_pool2d(x, 2), {5, 8, 9, 11});

  // The gradient goes to the argmax of each window only.
  Tensor xg = x.clone().detach().set_requires_grad();
  Tensor yg = max_pool2d(xg, 2);
  EXPECT_EQ(yg.grad_fn()->name(), "MaxPool2dBackward");
  yg.backward(t64({1, 2, 3, 4}, {1, 1, 2, 2}));
  expect_near(xg.grad(), {0, 1, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 4});
}

TEST(Pool, MaxPoolNeverPicksPadding) {
  // All negative: a padding value of 0 would win every window.
  Tensor x = t64({-1, -2, -3, -4, -5, -6, -7, -8, -9}, {1, 1, 3, 3});
  Tensor y = Tensor::empty({1, 1, 2, 2}, DType::F64), idx = Tensor::empty({1, 1, 2, 2}, DType::I64);
  backend_for(x).max_pool2d_forward(x, params(3, 2, 1), y, idx);
  // windows cover rows/cols {0,1} or {1,2}
  expect_near(y, {-1, -2, -4, -5});
  EXPECT_EQ(idx.to_vector(), (std::vector<double>{0, 1, 3, 4}));
  expect_near(max_pool2d(x, 3, 2, 1), {-1, -2, -4, -5});
}

TEST(Pool, AvgPoolCountIncludePad) {
  Tensor x = t64({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  // kernel 3, stride 2, padding 1: every window holds 4 real elements (sums 12, 16, 24, 28) of a
  // 3x3 window that lies inside the padded input.
  expect_near(avg_pool2d(x, params(3, 2, 1, true)), {12.0 / 9, 16.0 / 9, 24.0 / 9, 28.0 / 9});
  expect_near(avg_pool2d(x, params(3, 2, 1, false)), {3, 4, 6, 7});
  expect_near(avg_pool2d(x, 3, 2, 1), {12.0 / 9, 16.0 / 9, 24.0 / 9, 28.0 / 9});  // PyTorch default: include

  // kernel 2, stride 1, padding 1 over [[1, 2], [3, 4]]: corner windows see one real element,
  // edge windows two, the centre all four.
  Tensor s = t64({1, 2, 3, 4}, {1, 1, 2, 2});
  expect_near(avg_pool2d(s, params(2, 1, 1, true)), {0.25, 0.75, 0.5, 1, 2.5, 1.5, 0.75, 1.75, 1});
  expect_near(avg_pool2d(s, params(2, 1, 1, false)), {1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});

  Tensor sg = s.clone().detach().set_requires_grad();
  Tensor y = avg_pool2d(sg, params(2, 1, 1, false));
  EXPECT_EQ(y.grad_fn()->name(), "AvgPool2dBackward");
  sum(y).backward();
  // Element (0,0) is in 4 windows of real sizes 1, 2, 2, 4: 1 + 1/2 + 1/2 + 1/4.
  expect_near(sg.grad(), {2.25, 2.25, 2.25, 2.25});
}

// The backend's average pool (run separably: row spans times column spans) against the definition, a
// loop over each 2-D window, forward and backward, on rectangular kernels, strides larger than the
// kernel, both divisors and planes where windows are clipped on every side.
TEST(Pool, AvgPoolMatchesTheWindowDefinition) {
  struct Cfg {
    int64_t kh, kw, sh, sw, ph, pw;
    bool include;
  };
  Generator gen(5);
  for (const Cfg& c : {Cfg{3, 3, 2, 2, 1, 1, true}, Cfg{3, 3, 2, 2, 1, 1, false}, Cfg{2, 3, 3, 4, 1, 1, false},
                       Cfg{3, 2, 1, 2, 1, 0, true}, Cfg{1, 1, 3, 2, 0, 0, false}, Cfg{4, 4, 1, 1, 2, 2, false}}) {
    Pool2dParams p;
    p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw, p.pad_h = c.ph, p.pad_w = c.pw;
    p.count_include_pad = c.include;
    const int64_t N = 2, C = 3, H = 9, W = 11;
    const int64_t OH = (H + 2 * c.ph - c.kh) / c.sh + 1, OW = (W + 2 * c.pw - c.kw) / c.sw + 1;
    const Tensor x = Tensor::randn({N, C, H, W}, gen, DType::F64), gy = Tensor::randn({N, C, OH, OW}, gen, DType::F64);
    Tensor y = Tensor::empty({N, C, OH, OW}, DType::F64), gx = Tensor::empty(x.shape(), DType::F64);
    backend_for(x).avg_pool2d_forward(x, p, y);
    backend_for(x).avg_pool2d_backward(gy, p, gx);
    const auto xv = x.to_vector(), gyv = gy.to_vector(), yv = y.to_vector(), gxv = gx.to_vector();
    std::vector<double> want_y(yv.size()), want_gx(xv.size(), 0.0);
    for (int64_t pl = 0; pl < N * C; ++pl)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t h0 = oh * c.sh - c.ph, w0 = ow * c.sw - c.pw;
          const int64_t h1 = std::min(h0 + c.kh, H + c.ph), w1 = std::min(w0 + c.kw, W + c.pw);
          const int64_t padded = (h1 - h0) * (w1 - w0);
          double sum = 0;
          int64_t real = 0;
          for (int64_t h = std::max<int64_t>(h0, 0); h < std::min(h1, H); ++h)
            for (int64_t w = std::max<int64_t>(w0, 0); w < std::min(w1, W); ++w) sum += xv[(pl * H + h) * W + w], ++real;
          const double div = static_cast<double>(c.include ? padded : real);
          const size_t o = static_cast<size_t>((pl * OH + oh) * OW + ow);
          want_y[o] = sum / div;
          for (int64_t h = std::max<int64_t>(h0, 0); h < std::min(h1, H); ++h)
            for (int64_t w = std::max<int64_t>(w0, 0); w < std::min(w1, W); ++w)
              want_gx[static_cast<size_t>((pl * H + h) * W + w)] += gyv[o] / div;
        }
    for (size_t i = 0; i < yv.size(); ++i) EXPECT_NEAR(yv[i], want_y[i], 1e-12) << "forward " << i << " k" << c.kh << "x" << c.kw;
    for (size_t i = 0; i < gxv.size(); ++i) EXPECT_NEAR(gxv[i], want_gx[i], 1e-12) << "backward " << i << " k" << c.kh << "x" << c.kw;
  }
}

TEST(Pool, AvgPoolNoPaddingAndOutputShape) {
  Tensor x = Tensor::arange(0, 2 * 5 * 7, 1, DType::F64).view_as_shape({1, 2, 5, 7});
  Tensor y = avg_pool2d(x, 2);  // floor: 5x7 -> 2x3
  EXPECT_EQ(y.shape(), (Shape{1, 2, 2, 3}));
  // window (0,0) of channel 0 = {0, 1, 7, 8}
  EXPECT_NEAR(y.at(0), 4.0, 1e-12);
  EXPECT_EQ(max_pool2d(Tensor::zeros({2, 3, 7, 7}), 3, 2, 1).shape(), (Shape{2, 3, 4, 4}));
}

TEST(Pool, AdaptiveAvgPoolBins) {
  // 5 -> 3 uses windows [0,2), [1,4), [3,5).
  expect_near(adaptive_avg_pool2d(t64({1, 2, 3, 4, 5}, {1, 1, 1, 5}), 1, 3), {1.5, 3, 4.5});
  // 2 -> 3 (upsampling bins overlap): [0,1), [0,2), [1,2).
  expect_near(adaptive_avg_pool2d(t64({1, 3}, {1, 1, 1, 2}), 1, 3), {1, 2, 3});
  // On a 5x5 plane with value 5r + c the bin mean is 5 * (row-bin mean) + (col-bin mean).
  Tensor x = Tensor::arange(0, 25, 1, DType::F64).view_as_shape({1, 1, 5, 5});
  const double m[] = {0.5, 2, 3.5};
  std::vector<double> want;
  for (double r : m)
    for (double c : m) want.push_back(5 * r + c);
  expect_near(adaptive_avg_pool2d(x, 3, 3), want);
  expect_near(adaptive_avg_pool2d(x, 1, 1), {12});

  Tensor xg = x.clone().detach().set_requires_grad();
  Tensor y = adaptive_avg_pool2d(xg, 3, 3);
  EXPECT_EQ(y.grad_fn()->name(), "AdaptiveAvgPool2dBackward");
  sum(y).backward();
  // Row/col 1 belongs to bins of sizes 2 and 3, row/col 0 to one bin of size 2: element (0,0) gets
  // 1/4, element (1,1) gets (1/2 + 1/3)^2.
  EXPECT_NEAR(xg.grad().at(0), 0.25, 1e-12);
  EXPECT_NEAR(xg.grad().at(6), (0.5 + 1.0 / 3) * (0.5 + 1.0 / 3), 1e-12);
}

TEST(Pool, NearestInterpolation) {
  Tensor x = t64({1, 2, 3, 4}, {1, 1, 2, 2});
  expect_near(interpolate_nearest(x, 4, 4), {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  Tensor r = t64({10, 20, 30}, {1, 1, 1, 3});
  expect_near(interpolate_nearest(r, 1, 5), {10, 10, 20, 20, 30});  // floor(d * 0.6) = 0, 0, 1, 1, 2
  expect_near(interpolate_nearest(r, 1, 4), {10, 10, 20, 30});      // floor(d * 0.75) = 0, 0, 1, 2
  Tensor d = t64({0, 1, 2, 3, 4, 5}, {1, 1, 1, 6});
  expect_near(interpolate_nearest(d, 1, 4), {0, 1, 3, 4});  // floor(d * 1.5)
  expect_near(interpolate_nearest(d, 1, 2), {0, 3});
  // PyTorch computes the scale and the product in float: for 26 -> 22, dst 11 maps to
  // floor(11 * (26f / 22)) = 12, where exact arithmetic gives 13.
  Tensor wide = Tensor::arange(0, 26, 1, DType::F64).view_as_shape({1, 1, 1, 26});
  EXPECT_EQ(interpolate_nearest(wide, 1, 22).at(11), 12.0);

  Tensor rg = r.clone().detach().set_requires_grad();
  Tensor y = interpolate_nearest(rg, 1, 5);
  EXPECT_EQ(y.grad_fn()->name(), "UpsampleNearest2dBackward");
  y.backward(t64({1, 2, 3, 4, 5}, {1, 1, 1, 5}));
  expect_near(rg.grad(), {3, 7, 5});
}

// Large enough (> kParallelGrain elements) to take the OpenMP paths.
TEST(Pool, F32MatchesF64) {
  Generator gen(11);
  Tensor x = Tensor::randn({4, 16, 33, 30}, gen, DType::F64);
  Tensor xf = x.to(DType::F32);
  auto close = [](const Tensor& a, const Tensor& b) {
    const auto va = a.to_vector(), vb = b.to_vector();
    ASSERT_EQ(va.size(), vb.size());
    for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], vb[i], 1e-5) << i;
  };
  close(max_pool2d(xf, 3, 2, 1), max_pool2d(x, 3, 2, 1));
  close(avg_pool2d(xf, params(3, 2, 1, false)), avg_pool2d(x, params(3, 2, 1, false)));
  close(adaptive_avg_pool2d(xf, 3, 4), adaptive_avg_pool2d(x, 3, 4));
  close(interpolate_nearest(xf, 5, 9), interpolate_nearest(x, 5, 9));
}

// ---- validation ------------------------------------------------------------------------------------

TEST(NormPoolErrors, BatchNorm) {
  const Tensor x = Tensor::zeros({2, 3});
  const Tensor c3 = Tensor::ones({3});
  expect_error([] { batch_norm(Tensor::zeros({4}), Tensor(), Tensor(), Tensor(), Tensor(), true); },
               {"batch_norm", "f32[4]"});
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), Tensor::ones({2}), Tensor(), true); },
               {"batch_norm", "weight", "f32[2]", "f32[2, 3]"});
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), Tensor::ones({3}, DType::F64), Tensor(), true); },
               {"batch_norm", "dtype", "f64[3]", "f32[2, 3]"});
  expect_error([&] { batch_norm(x, Tensor::zeros({3, 1}), c3, Tensor(), Tensor(), true); },
               {"batch_norm", "running_mean", "f32[3, 1]"});
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), c3, c3, /*training=*/false); },
               {"batch_norm", "running_mean", "f32[2, 3]"});
  expect_error([&] { batch_norm(Tensor::zeros({1, 3}), Tensor(), Tensor(), c3, c3, true); },
               {"batch_norm", "more than 1 value per channel", "f32[1, 3]"});
  expect_error([] { batch_norm(Tensor::zeros({2, 3}, DType::I64), Tensor(), Tensor(), Tensor(), Tensor(), true); },
               {"batch_norm", "i64[2, 3]"});
}

TEST(NormPoolErrors, Pooling) {
  const Tensor x = Tensor::zeros({1, 1, 4, 4});
  expect_error([] { max_pool2d(Tensor::zeros({1, 4, 4}), 2); }, {"max_pool2d", "4-D", "f32[1, 4, 4]"});
  expect_error([&] { max_pool2d(x, 0); }, {"max_pool2d", "kernel", "f32[1, 1, 4, 4]"});
  expect_error([&] { max_pool2d(x, 2, 0); }, {"max_pool2d", "stride", "f32[1, 1, 4, 4]"});
  expect_error([&] { max_pool2d(x, 3, 1, 2); }, {"max_pool2d", "half the kernel", "f32[1, 1, 4, 4]"});
  expect_error([&] { max_pool2d(x, 5); }, {"max_pool2d", "too small", "f32[1, 1, 4, 4]"});
  expect_error([&] { avg_pool2d(x, 2, 2, 2); }, {"avg_pool2d", "half the kernel", "f32[1, 1, 4, 4]"});
  expect_error([] { avg_pool2d(Tensor::zeros({4, 4}), 2); }, {"avg_pool2d", "f32[4, 4]"});
  expect_error([&] { adaptive_avg_pool2d(x, 0, 3); }, {"adaptive_avg_pool2d", "0x3", "f32[1, 1, 4, 4]"});
  expect_error([] { adaptive_avg_pool2d(Tensor::zeros({1, 1, 0, 4}), 2, 2); },
               {"adaptive_avg_pool2d", "f32[1, 1, 0, 4]"});
  expect_error([&] { interpolate_nearest(x, 3, -1); }, {"interpolate_nearest", "3x-1", "f32[1, 1, 4, 4]"});
  expect_error([] { interpolate_nearest(Tensor::zeros({2, 4}), 3, 3); }, {"interpolate_nearest", "f32[2, 4]"});
}
