// Forward values of the functions against hand-computed results (gradients are covered by the
// gradchecks; PyTorch golden values come with the [models] fixtures).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/functions.h"

using namespace retort;

namespace {
Tensor t64(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s, DType::F64); }
void expect_near(const Tensor& t, const std::vector<double>& want, double tol = 1e-6) {
  const auto got = t.to_vector();
  ASSERT_EQ(got.size(), want.size()) << t.meta_str();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}
}  // namespace

TEST(Functions, BroadcastingArithmetic) {
  Tensor a = t64({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_near(add(a, t64({10, 20, 30}, {3})), {11, 22, 33, 14, 25, 36});
  expect_near(sub(a, t64({1, 2}, {2, 1})), {0, 1, 2, 2, 3, 4});
  expect_near(mul(a, Tensor::scalar(2, DType::F64)), {2, 4, 6, 8, 10, 12});
  expect_near(div(t64({1}, {1}), a), {1, 0.5, 1.0 / 3, 0.25, 0.2, 1.0 / 6});
  EXPECT_EQ(add(Tensor::zeros({3, 1, 5}), Tensor::zeros({4, 1})).shape(), (Shape{3, 4, 5}));
  expect_near(a * 2.0 + 1.0, {3, 5, 7, 9, 11, 13});
  expect_near(maximum(a, t64({3.5}, {1})), {3.5, 3.5, 3.5, 4, 5, 6});
  expect_near(xlogy(t64({0, 2}, {2}), t64({0, std::exp(1.0)}, {2})), {0, 2});
}

TEST(Functions, Unary) {
  Tensor x = t64({-2, -0.5, 0.5, 2}, {4});
  expect_near(relu(x), {0, 0, 0.5, 2});
  expect_near(leaky_relu(x, 0.1), {-0.2, -0.05, 0.5, 2});
  expect_near(leaky_relu(x), {-0.02, -0.005, 0.5, 2});  // PyTorch's default slope 0.01
  expect_near(abs(x), {2, 0.5, 0.5, 2});
  expect_near(clamp(x, -1, 1), {-1, -0.5, 0.5, 1});
  expect_near(sigmoid(x), {1 / (1 + std::exp(2.0)), 1 / (1 + std::exp(0.5)), 1 / (1 + std::exp(-0.5)), 1 / (1 + std::exp(-2.0))});
  expect_near(tanh(x), {std::tanh(-2.0), std::tanh(-0.5), std::tanh(0.5), std::tanh(2.0)});
  expect_near(pow(abs(x), 3.0), {8, 0.125, 0.125, 8});
  expect_near(exp(log(abs(x))), {2, 0.5, 0.5, 2});
  expect_near(sqrt(t64({4, 9}, {2})), {2, 3});
  expect_near(sign(x), {-1, -1, 1, 1});
}

TEST(Functions, Reductions) {
  Tensor x = t64({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_near(sum(x), {21});
  expect_near(sum(x, {0}), {5, 7, 9});
  expect_near(sum(x, {1}, true), {6, 15});
  EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(sum(x, {1}).shape(), (Shape{2}));
  expect_near(mean(x, {-1}), {2, 5});
  expect_near(max(x, {0}), {4, 5, 6});
  expect_near(min(x, {1}), {1, 4});
  expect_near(var(x, {1}), {1, 1});                       // unbiased
  expect_near(var(x, {1}, false), {2.0 / 3, 2.0 / 3});    // biased
  expect_near(stddev(x), {std::sqrt(17.5 / 5)});
  // non-contiguous set of dims on a 4-D tensor (batch-norm style)
  Tensor y = Tensor::arange(0, 24, 1, DType::F64);
  expect_near(sum(reshape(y, {2, 3, 2, 2}), {0, 2, 3}), {0 + 1 + 2 + 3 + 12 + 13 + 14 + 15, 4 + 5 + 6 + 7 + 16 + 17 + 18 + 19,
                                                         8 + 9 + 10 + 11 + 20 + 21 + 22 + 23});
}

TEST(Functions, F32SumsAccumulateInDouble) {
  Tensor x = Tensor::full({1 << 24}, 1.0f);
  EXPECT_EQ(sum(x).item(), static_cast<double>(1 << 24));  // naive float accumulation stalls at 2^24
  Tensor y = Tensor::full({3}, 0.1f);
  EXPECT_FLOAT_EQ(static_cast<float>(sum(y).item()), 0.3f);
}

TEST(Functions, ShapeOps) {
  Tensor x = t64({0, 1, 2, 3, 4, 5}, {2, 3});
  expect_near(transpose(x, 0, 1), {0, 3, 1, 4, 2, 5});
  expect_near(slice(x, 1, 1, 3), {1, 2, 4, 5});
  expect_near(slice(x, 1, 0, 3, 2), {0, 2, 3, 5});
  expect_near(cat({x, x}, 0), {0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5});
  expect_near(cat({x, slice(x, 1, 0, 1)}, 1), {0, 1, 2, 0, 3, 4, 5, 3});
  expect_near(pad(x, {1, 0}), {0, 0, 1, 2, 0, 3, 4, 5});
  expect_near(pad(x, {0, 0, 1, 0}, -1), {-1, -1, -1, 0, 1, 2, 3, 4, 5});
  expect_near(pad(x, {-1, 0}), {1, 2, 4, 5});
  expect_near(expand(t64({1, 2}, {2, 1}), {2, 3}), {1, 1, 1, 2, 2, 2});
  Tensor r = reshape(x, {3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_TRUE(r.shares_storage(x));
  EXPECT_EQ(flatten(Tensor::zeros({2, 3, 4, 5}), 1).shape(), (Shape{2, 60}));
  EXPECT_EQ(permute(Tensor::zeros({2, 3, 4}), {2, 0, 1}).shape(), (Shape{4, 2, 3}));
  expect_near(permute(reshape(Tensor::arange(0, 6, 1, DType::F64), {1, 2, 3}), {2, 1, 0}), {0, 3, 1, 4, 2, 5});
}

TEST(Functions, MatmulAndLinear) {
  Tensor a = t64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = t64({1, 0, 0, 1, 1, 1}, {3, 2});
  expect_near(matmul(a, b), {4, 5, 10, 11});
  expect_near(matmul(t64({1, 1, 1}, {3}), b), {2, 2});
  Tensor batched = matmul(reshape(cat({a, a}, 0), {2, 2, 3}), b);
  EXPECT_EQ(batched.shape(), (Shape{2, 2, 2}));
  expect_near(batched, {4, 5, 10, 11, 4, 5, 10, 11});
  // linear: x @ W^T + b
  expect_near(linear(a, t64({1, 1, 1, 0, 0, 1}, {2, 3}), t64({10, 20}, {2})), {16, 23, 25, 26});
  // f32 through OpenBLAS sgemm
  expect_near(matmul(a.to(DType::F32), b.to(DType::F32)), {4, 5, 10, 11});
}

TEST(Functions, GatherAndScatterRows) {
  Tensor table = t64({0, 1, 10, 11, 20, 21, 30, 31}, {4, 2});
  // Any index shape; repeats are fine for a gather.
  const Tensor g = gather_rows(table, Tensor::from_int64({3, 0, 3, 1, 2, 2}, {2, 3}));
  EXPECT_EQ(g.shape(), (Shape{2, 3, 2}));
  expect_near(g, {30, 31, 0, 1, 30, 31, 10, 11, 20, 21, 20, 21});
  // Rows of higher rank, f32.
  Tensor maps = Tensor::arange(24, DType::F32).view_as_shape({3, 2, 4});
  expect_near(gather_rows(maps, Tensor::from_int64({2}, {1})), {16, 17, 18, 19, 20, 21, 22, 23});
  scatter_rows_(table, Tensor::from_int64({2, 0}, {2}), t64({-1, -2, -3, -4}, {2, 2}));
  expect_near(table, {-3, -4, 10, 11, -1, -2, 30, 31});
}

TEST(Functions, GatherAndScatterRowsErrors) {
  Tensor table = Tensor::zeros({4, 3}, DType::F64);
  auto expect_error = [](const std::function<void()>& f, std::vector<std::string> needles) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing " << needles[0];
    } catch (const Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  };
  expect_error([&] { gather_rows(table, Tensor::from_int64({1, 4}, {2})); },
               {"gather_rows", "index 4 at position 1", "4 rows"});
  expect_error([&] { gather_rows(table, Tensor::from_int64({-1}, {1})); }, {"index -1"});
  expect_error([&] { gather_rows(table, Tensor::from_vector({1}, {1}, DType::F64)); }, {"i64 tensor on the host"});
  expect_error([&] { scatter_rows_(table, Tensor::from_int64({1, 1}, {2}), Tensor::zeros({2, 3}, DType::F64)); },
               {"index 1 appears twice"});
  expect_error([&] { scatter_rows_(table, Tensor::from_int64({1, 2}, {2}), Tensor::zeros({2, 4}, DType::F64)); },
               {"rows must be [2, 3]"});
  expect_error([&] { scatter_rows_(table, Tensor::from_int64({1}, {1}), Tensor::zeros({1, 3}, DType::F32)); },
               {"dtype mismatch"});
  Tensor param = Tensor::zeros({4, 3}, DType::F64).set_requires_grad();
  expect_error([&] { gather_rows(param, Tensor::from_int64({0}, {1})); }, {"requires grad", "buffer"});
}

// eigh's gap_eps damps 1/(l_j - l_i) to d / (d² + ε²): for well separated eigenvalues the gradient is
// the exact one up to (ε/d)²; at a repeated eigenvalue the exact gradient through the tied vectors
// is not finite, the damped one is.
TEST(Functions, EighGapEpsDampsOnlyNearTies) {
  // A = Q diag(values) Q^T with Q the eigenvectors of a random symmetric matrix.
  Generator gen(3);
  const Tensor r = Tensor::randn({4, 4}, gen, DType::F64);
  const Tensor q = eigh(r).vectors;
  const auto build = [&](std::vector<double> values) {
    return matmul(mul(q, Tensor::from_vector(values, {1, 4}, DType::F64)), transpose(q, 0, 1));
  };
  const Tensor w = Tensor::randn({4, 4}, gen, DType::F64);
  const auto grad = [&](const Tensor& a0, double gap_eps) {
    Tensor a = a0.detach().clone();
    a.set_requires_grad();
    sum(mul(eigh(a, gap_eps).vectors, w)).backward();
    return a.grad().to_vector();
  };
  const Tensor separated = build({1.0, 2.0, 3.5, 5.0});  // gaps >= 1, eps = 1e-3 * 5
  const auto exact = grad(separated, 0.0), damped = grad(separated, 1e-3);
  double scale = 0;
  for (double g : exact) scale = std::max(scale, std::abs(g));
  for (size_t i = 0; i < exact.size(); ++i) EXPECT_NEAR(damped[i], exact[i], 1e-4 * scale) << i;
  EXPECT_GT(scale, 0.1);
  // A tie between the two smallest eigenvalues, whose vectors the loss uses: the exact gradient is
  // not finite or, as here where rounding separates them by ~1e-16, enormous; the damped one is
  // bounded by ~1/(2ε) (and nonzero).
  const Tensor tied = build({1.0, 1.0, 3.5, 5.0});
  double exact_max = 0, damped_max = 0;
  for (double g : grad(tied, 0.0)) exact_max = std::max(exact_max, std::isfinite(g) ? std::abs(g) : 1e300);
  for (double g : grad(tied, 1e-3)) {
    ASSERT_TRUE(std::isfinite(g));
    damped_max = std::max(damped_max, std::abs(g));
  }
  EXPECT_GT(exact_max, 1e10);
  EXPECT_GT(damped_max, 0.0);
  EXPECT_LT(damped_max, 1e3);
  EXPECT_THROW(eigh(tied, -1.0), Error);
}

// A NaN or inf anywhere in a matrix is refused, naming the matrix: LAPACK returns finite eigenvalues
// for some NaN inputs (±2.83 for [[1, 2], [2, NaN]]), which would be silently wrong.
TEST(Functions, EighRefusesNonFiniteMatrices) {
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    const Tensor a = Tensor::from_vector({1, 0, 0, 1, 1, 2, 2, bad}, {2, 2, 2}, DType::F32);
    try {
      eigh(a);
      FAIL() << "expected an error for " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("symeig: matrix 1 of f32[2, 2, 2]"), std::string::npos) << msg;
      EXPECT_NE(msg.find("has non-finite entries (NaN or inf)"), std::string::npos) << msg;
    }
  }
  EXPECT_NO_THROW(eigh(Tensor::from_vector({1, 0, 0, 1}, {2, 2}, DType::F64)));
}

// Max, min and sign keep NaN as PyTorch's maximum / amax / max_pool2d / sign do: a NaN on either side of
// maximum(a, b), anywhere in a max/min reduction (first, middle, last; the inner == 1 and strided loops),
// or in a pooling window gives NaN; ties and ordinary values are unchanged.
TEST(NaN, MaxMinSignReductionsAndPoolingKeepIt) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType dt : {DType::F32, DType::F64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor a = Tensor::from_vector({nan, 1.0, 3.0, 2.0}, {4}, DType::F64).to(dt);
    const Tensor b = Tensor::from_vector({0.0, nan, 2.0, 2.0}, {4}, DType::F64).to(dt);
    for (const Tensor& r : {maximum(a, b), minimum(a, b)}) {
      const std::vector<double> v = r.to_vector();
      EXPECT_TRUE(std::isnan(v[0]) && std::isnan(v[1]));
      EXPECT_EQ(v[3], 2.0);
    }
    EXPECT_EQ(maximum(a, b).to_vector()[2], 3.0);
    EXPECT_EQ(minimum(a, b).to_vector()[2], 2.0);
    const std::vector<double> sg = sign(Tensor::from_vector({nan, -2.0, 0.0, 5.0}, {4}, DType::F64).to(dt)).to_vector();
    EXPECT_TRUE(std::isnan(sg[0]));
    EXPECT_EQ(sg[1], -1.0);
    EXPECT_EQ(sg[2], 0.0);
    EXPECT_EQ(sg[3], 1.0);
    for (int64_t at : {0, 2, 4}) {  // the NaN first, in the middle, last of row 1 of a [3, 5] matrix
      std::vector<double> m(15);
      for (int i = 0; i < 15; ++i) m[static_cast<size_t>(i)] = i % 7 - 3.0;
      m[static_cast<size_t>(5 + at)] = nan;
      const Tensor x = Tensor::from_vector(m, {3, 5}, DType::F64).to(dt);
      for (const Tensor& r : {max(x, {1}), min(x, {1})}) {  // inner == 1
        const std::vector<double> v = r.to_vector();
        EXPECT_FALSE(std::isnan(v[0]));
        EXPECT_TRUE(std::isnan(v[1])) << at;
        EXPECT_FALSE(std::isnan(v[2]));
      }
      for (const Tensor& r : {max(x, {0}), min(x, {0})}) {  // strided: only column `at` is NaN
        const std::vector<double> v = r.to_vector();
        for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(std::isnan(v[static_cast<size_t>(j)]), j == at) << at << " " << j;
      }
      EXPECT_TRUE(std::isnan(max(x).item()));
      EXPECT_TRUE(std::isnan(min(x).item()));
    }
    std::vector<double> img(16, 1.0);
    img[5] = nan;  // in the top-left 2x2 window of a 4x4 image
    const std::vector<double> p = max_pool2d(Tensor::from_vector(img, {1, 1, 4, 4}, DType::F64).to(dt), 2).to_vector();
    EXPECT_TRUE(std::isnan(p[0]));
    EXPECT_EQ(p[1], 1.0);
  }
}

// A NaN that reaches a ReLU stays NaN, as in PyTorch: max(x, 0) written as "x > 0 ? x : 0" turns it
// into 0, and a network with a NaN weight then gives finite logits and losses — the non-finite-loss
// stop never fires and retort-eval reports a plausible accuracy. Every ReLU path: the op, add+ReLU,
// batch norm + ReLU (training and eval, row-major and, through a convolution's output, oneDNN's blocked
// layout), the inference convolution with BN and ReLU as its epilogue.
TEST(Relu, NaNStaysNaNOnEveryPath) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor x = Tensor::from_vector({nan, -1.0, 2.0, -0.0}, {4}, DType::F64).to(dt);
    const std::vector<double> r = relu(x).to_vector();
    EXPECT_TRUE(std::isnan(r[0])) << dtype_name(dt);
    EXPECT_EQ(r[1], 0.0);
    EXPECT_EQ(r[2], 2.0);
    EXPECT_EQ(r[3], 0.0);
    EXPECT_TRUE(std::isnan(add_relu(x, Tensor::ones({4}, dt)).to_vector()[0])) << dtype_name(dt);
    EXPECT_EQ(add_relu(x, Tensor::ones({4}, dt)).to_vector()[1], 0.0);
  }
  Generator gen(3);
  auto with_nan = [](Tensor t) {  // one NaN in channel 1
    t.data<float>()[t.size(2) * t.size(3) + 5] = std::numeric_limits<float>::quiet_NaN();
    t.bump_version();
    return t;
  };
  auto nan_count = [](const Tensor& t) {
    int n = 0;
    for (double v : t.to_vector()) n += std::isnan(v) ? 1 : 0;
    return n;
  };
  const int64_t C = 16;
  const Tensor rm = Tensor::zeros({C}), rv = Tensor::ones({C}), w = Tensor::ones({C}), b = Tensor::zeros({C});
  {
    NoGradGuard ng;
    const Tensor x = with_nan(Tensor::randn({2, C, 4, 4}, gen));
    EXPECT_GE(nan_count(batch_norm_relu(x, rm, rv, w, b, false)), 1) << "eval, row-major";
    EXPECT_GE(nan_count(batch_norm_relu(x, rm.clone(), rv.clone(), w, b, true)), 1) << "training, row-major";
    // A convolution's output (oneDNN's blocked layout where it keeps one) with a NaN in one input pixel.
    const Tensor xin = with_nan(Tensor::randn({2, C, 8, 8}, gen)), k = Tensor::randn({C, C, 3, 3}, gen);
    const Tensor y = conv2d(xin, k, Tensor(), 1, 1);
    EXPECT_GE(nan_count(batch_norm_relu(y, rm, rv, w, b, false)), 1) << "eval, after a convolution";
    EXPECT_GE(nan_count(batch_norm_relu(y, rm.clone(), rv.clone(), w, b, true)), 1) << "training, after a convolution";
    Conv2dParams p;
    p.pad_h = p.pad_w = 1;
    EXPECT_GE(nan_count(conv2d_bn_eval(xin, k, Tensor(), p, w, b, rm, rv, 1e-5, true)), 1) << "conv+BN+ReLU";
  }
}
