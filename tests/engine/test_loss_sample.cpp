// Forward values of the softmax family, the losses, dropout, affine_grid and grid_sample against
// hand-computed results, the autograd node each records, and their input validation. Gradients are
// covered by the gradchecks (engine/functions/loss_checks.cpp, sample_checks.cpp).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;

namespace {
Tensor t64(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s, DType::F64); }
void expect_near(const Tensor& t, const std::vector<double>& want, double tol = 1e-9) {
  const auto got = t.to_vector();
  ASSERT_EQ(got.size(), want.size()) << t.meta_str();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}
Tensor identity_theta(int64_t n = 1) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.insert(v.end(), {1, 0, 0, 0, 1, 0});
  return t64(v, {n, 2, 3});
}
}  // namespace

// ---- softmax family --------------------------------------------------------------------------------

TEST(Softmax, RowsMatchExpOverSum) {
  Tensor x = t64({1, 2, 3, 0, 0, 0}, {2, 3});
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  Tensor y = softmax(x, 1);
  expect_near(y, {std::exp(1.0) / z, std::exp(2.0) / z, std::exp(3.0) / z, 1.0 / 3, 1.0 / 3, 1.0 / 3});
  expect_near(sum(y, {1}), {1, 1});
  expect_near(softmax(x, -1), y.to_vector());
  // over dim 0: each column of two elements
  const double a = 1 / (1 + std::exp(-1.0));
  expect_near(softmax(x, 0), {a, 1 / (1 + std::exp(-2.0)), 1 / (1 + std::exp(-3.0)), 1 - a,
                              1 - 1 / (1 + std::exp(-2.0)), 1 - 1 / (1 + std::exp(-3.0))});
}

TEST(Softmax, MiddleDimensionOf4D) {
  // [1, 2, 1, 2]: softmax over the channel pairs (x[0,0,0,w], x[0,1,0,w]) for w = 0, 1.
  Tensor x = t64({0, 1, 2, 1}, {1, 2, 1, 2});
  const double s = 1 / (1 + std::exp(2.0));  // exp(0) / (exp(0) + exp(2))
  expect_near(softmax(x, 1), {s, 0.5, 1 - s, 0.5});
  expect_near(log_softmax(x, 1), {std::log(s), std::log(0.5), std::log(1 - s), std::log(0.5)});
}

TEST(Softmax, LogSoftmaxIsStableForLargeLogits) {
  const double l1 = std::log1p(std::exp(-1.0));  // log(1 + e^-1)
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor x = Tensor::from_vector({1000, 1001, -1000, -1001}, {2, 2}, dt);
    const double tol = dt == DType::F64 ? 1e-9 : 1e-4;
    expect_near(log_softmax(x, 1), {-1 - l1, -l1, -l1, -1 - l1}, tol);
    const double p = 1 / (1 + std::exp(1.0));
    expect_near(softmax(x, 1), {p, 1 - p, 1 - p, p}, tol);
  }
}

TEST(Softmax, ZeroDimensionalInputIsOne) {
  expect_near(softmax(Tensor::scalar(3.0, DType::F64), 0), {1});
  expect_near(log_softmax(Tensor::scalar(3.0, DType::F64), -1), {0});
}

// ---- cross entropy ---------------------------------------------------------------------------------

TEST(CrossEntropy, MatchesHandComputedValue) {
  Tensor logits = t64({1, 2, 3, 1, 1, 1}, {2, 3});
  Tensor targets = Tensor::from_int64({2, 0}, {2});
  const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double lp0[3] = {1 - lse0, 2 - lse0, 3 - lse0}, lp1 = -std::log(3.0);
  expect_near(cross_entropy(logits, targets), {(-lp0[2] - lp1) / 2});

  // label smoothing s: q = (1 - s) onehot + s / C
  const double s = 0.2, off = s / 3;
  const double row0 = -((1 - s + off) * lp0[2] + off * lp0[0] + off * lp0[1]);
  const double row1 = -((1 - s + off) * lp1 + 2 * off * lp1);  // uniform logits: every lp is -log 3
  expect_near(cross_entropy(logits, targets, s), {(row0 + row1) / 2});
  EXPECT_EQ(cross_entropy(logits, targets).shape(), Shape{});

  // f32 agrees with f64
  expect_near(cross_entropy(logits.to(DType::F32), targets, s), {(row0 + row1) / 2}, 1e-5);
}

TEST(CrossEntropy, StableForLargeLogits) {
  Tensor logits = t64({1000, 1001}, {1, 2});
  expect_near(cross_entropy(logits, Tensor::from_int64({1}, {1})), {std::log1p(std::exp(-1.0))});
}

TEST(CrossEntropy, GradientIsSoftmaxMinusTargetOverN) {
  Tensor logits = t64({1, 2, 3, 1, 1, 1}, {2, 3}).set_requires_grad();
  cross_entropy(logits, Tensor::from_int64({2, 0}, {2})).backward();
  const std::vector<double> p = softmax(logits.detach(), 1).to_vector();
  expect_near(logits.grad(), {p[0] / 2, p[1] / 2, (p[2] - 1) / 2, (p[3] - 1) / 2, p[4] / 2, p[5] / 2});
}

// ---- kl_div and mse --------------------------------------------------------------------------------

TEST(KLDiv, MatchesHandComputedValue) {
  // batchmean: the sum over all elements divided by N = 2
  Tensor input = t64({std::log(0.5), std::log(0.5), std::log(0.9), std::log(0.1)}, {2, 2});
  Tensor target = t64({0.25, 0.75, 1.0, 0.0}, {2, 2});
  const double want = (0.25 * std::log(0.25 / 0.5) + 0.75 * std::log(0.75 / 0.5) + 1.0 * std::log(1.0 / 0.9)) / 2;
  expect_near(kl_div(input, target), {want});
}

TEST(KLDiv, ZeroWhenTargetEqualsExpInput) {
  Tensor input = log_softmax(t64({0.3, -1.2, 2.0, 0.1, 0.1, 0.5}, {2, 3}), 1);
  expect_near(kl_div(input, exp(input)), {0}, 1e-12);
}

TEST(MseLoss, MeanOfSquaredDifferences) {
  expect_near(mse_loss(t64({1, 2, 3, 4}, {2, 2}), t64({1, 0, 0, 5}, {2, 2})), {(0 + 4 + 9 + 1) / 4.0});
  Tensor a = t64({1, 2}, {2}).set_requires_grad(), b = t64({0, 4}, {2}).set_requires_grad();
  mse_loss(a, b).backward();
  expect_near(a.grad(), {1, -2});  // 2 (a - b) / n
  expect_near(b.grad(), {-1, 2});
}

TEST(SmoothL1Loss, BothBranchesAndTheirGradients) {
  // beta 1: d = 0.5 -> 0.125, d = -2 -> 1.5, d = 1 -> 0.5 (both branches meet), d = 0 -> 0.
  expect_near(smooth_l1_loss(t64({0.5, -2, 1, 3}, {4}), t64({0, 0, 0, 3}, {4})), {(0.125 + 1.5 + 0.5 + 0) / 4});
  // beta 0.5: d = 0.25 -> 0.0625, d = 2 -> 1.75.
  expect_near(smooth_l1_loss(t64({0.25, 2}, {2}), t64({0, 0}, {2}), 0.5), {(0.0625 + 1.75) / 2});
  Tensor a = t64({0.5, -2, 0.1}, {3}).set_requires_grad(), b = t64({0, 0, 0}, {3}).set_requires_grad();
  smooth_l1_loss(a, b).backward();
  expect_near(a.grad(), {0.5 / 3, -1.0 / 3, 0.1 / 3});  // clamp(d, -1, 1) / n
  expect_near(b.grad(), {-0.5 / 3, 1.0 / 3, -0.1 / 3});
  expect_error([] { smooth_l1_loss(t64({1}, {1}), t64({1}, {1}), 0.0); }, {"smooth_l1_loss", "beta", "positive"});
  expect_error([] { smooth_l1_loss(t64({1, 2}, {2}), t64({1}, {1})); }, {"smooth_l1_loss"});
}

// ---- dropout ---------------------------------------------------------------------------------------

TEST(Dropout, IdentityWhenNotTrainingOrPZero) {
  Generator gen(1);
  Tensor x = t64({1, 2, 3}, {3});
  EXPECT_TRUE(dropout(x, 0.0, true, gen).shares_storage(x));
  EXPECT_TRUE(dropout(x, 0.5, false, gen).shares_storage(x));
  expect_near(dropout(x, 0.5, false, gen), {1, 2, 3});
}

TEST(Dropout, DropsAboutPAndScalesTheRest) {
  const int64_t n = 200000;
  const double p = 0.3;
  Generator gen(123);
  const auto y = dropout(Tensor::ones({n}, DType::F64), p, true, gen).to_vector();
  int64_t dropped = 0;
  for (double v : y) {
    if (v == 0) ++dropped;
    else EXPECT_DOUBLE_EQ(v, 1 / (1 - p));
  }
  // Binomial std is sqrt(n p (1-p)) ~ 205 elements: 0.005 n is more than 4 standard deviations.
  EXPECT_NEAR(static_cast<double>(dropped) / n, p, 0.005);
}

TEST(Dropout, SameSeedSameMaskAndGradientUsesIt) {
  Generator g1(99), g2(99);
  Tensor x = Tensor::ones({64}, DType::F32).set_requires_grad();
  Tensor a = dropout(x, 0.4, true, g1), b = dropout(x, 0.4, true, g2);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  Generator g3(100);
  EXPECT_NE(a.to_vector(), dropout(x, 0.4, true, g3).to_vector());
  a.backward(Tensor::ones({64}));
  EXPECT_EQ(x.grad().to_vector(), a.to_vector());  // x is all ones, so y is the scaled mask
}

// ---- affine_grid and grid_sample -------------------------------------------------------------------

TEST(AffineGrid, IdentityGivesPixelCentres) {
  // align_corners=false: centres at (2j + 1) / W - 1
  Tensor g = affine_grid(identity_theta(), 2, 3);
  EXPECT_EQ(g.shape(), (Shape{1, 2, 3, 2}));
  const double x0 = -2.0 / 3, y0 = -0.5;
  expect_near(g, {x0, y0, 0, y0, -x0, y0, x0, -y0, 0, -y0, -x0, -y0});
  // a general theta: grid = theta @ (x, y, 1)
  Tensor t = t64({0.5, -1, 0.25, 2, 0, -0.5}, {1, 2, 3});
  const auto v = affine_grid(t, 1, 2).to_vector();  // (x, y) = (-0.5, 0) and (0.5, 0)
  expect_near(t64(v, {4}), {0.5 * -0.5 + 0.25, 2 * -0.5 - 0.5, 0.5 * 0.5 + 0.25, 2 * 0.5 - 0.5});
}

TEST(GridSample, IdentityGridReproducesTheInput) {
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor x = Tensor::arange(0, 24, 1, dt).view_as_shape({2, 1, 3, 4});
    Tensor y = grid_sample(x, affine_grid(identity_theta(2).to(dt), 3, 4));
    EXPECT_EQ(y.shape(), x.shape());
    expect_near(y, x.to_vector(), dt == DType::F64 ? 1e-12 : 1e-5);
  }
}

TEST(GridSample, ShiftByOnePixelPadsWithZeros) {
  // x translation of 2/W moves every sample one pixel right: y[.., j] = x[.., j + 1], 0 past the edge.
  Tensor x = t64({1, 2, 3, 4, 5, 6, 7, 8}, {1, 1, 2, 4});
  Tensor theta = t64({1, 0, 2.0 / 4, 0, 1, 0}, {1, 2, 3});
  expect_near(grid_sample(x, affine_grid(theta, 2, 4)), {2, 3, 4, 0, 6, 7, 8, 0}, 1e-12);
  // and one pixel down (2/H): the last row samples the padding
  Tensor down = t64({1, 0, 0, 0, 1, 2.0 / 2}, {1, 2, 3});
  expect_near(grid_sample(x, affine_grid(down, 2, 4)), {5, 6, 7, 8, 0, 0, 0, 0}, 1e-12);
}

TEST(GridSample, ZeroPaddingOutsideAndHalfAtTheEdge) {
  Tensor x = t64({1, 2, 3, 4}, {1, 1, 2, 2});
  // far outside -> 0; x = 1 is the right edge of the last pixel (ix = W - 0.5): half pixel, half
  // padding; (0, 0) is the centre of the image: the mean of all four pixels.
  Tensor grid = t64({5, 5, -3, 0.2, 1, -0.5, 0, 0}, {1, 1, 4, 2});
  expect_near(grid_sample(x, grid), {0, 0, 0.5 * 2, 2.5}, 1e-12);
}

TEST(GridSample, BilinearBlend) {
  Tensor x = t64({0, 10, 20, 30}, {1, 1, 2, 2});
  // pixel coordinate (ix, iy) = (0.25, 0.75): ((g + 1) * 2 - 1) / 2 = p  =>  g = p - 0.5
  Tensor grid = t64({0.25 - 0.5, 0.75 - 0.5}, {1, 1, 1, 2});
  const double want = (0 * 0.75 + 10 * 0.25) * 0.25 + (20 * 0.75 + 30 * 0.25) * 0.75;
  expect_near(grid_sample(x, grid), {want}, 1e-12);
}

// ---- recorded nodes --------------------------------------------------------------------------------

TEST(LossSampleGraph, EachFunctionRecordsItsNode) {
  Generator gen(3);
  Tensor x = Tensor::randn({2, 3}, gen, DType::F64).set_requires_grad();
  Tensor t = Tensor::rand({2, 3}, gen, DType::F64, 0.1, 0.9);
  EXPECT_EQ(softmax(x, 1).grad_fn()->name(), "SoftmaxBackward");
  EXPECT_EQ(log_softmax(x, 1).grad_fn()->name(), "LogSoftmaxBackward");
  EXPECT_EQ(cross_entropy(x, Tensor::from_int64({0, 2}, {2})).grad_fn()->name(), "CrossEntropyBackward");
  EXPECT_EQ(kl_div(x, t).grad_fn()->name(), "KLDivBackward");
  EXPECT_EQ(mse_loss(x, t).grad_fn()->name(), "MseLossBackward");
  EXPECT_EQ(dropout(x, 0.5, true, gen).grad_fn()->name(), "DropoutBackward");
  Tensor theta = identity_theta().set_requires_grad();
  EXPECT_EQ(affine_grid(theta, 2, 2).grad_fn()->name(), "AffineGridBackward");
  Tensor img = Tensor::randn({1, 1, 2, 2}, gen, DType::F64);
  EXPECT_EQ(grid_sample(img, affine_grid(theta, 2, 2)).grad_fn()->name(), "GridSampleBackward");
  NoGradGuard ng;
  EXPECT_EQ(softmax(x, 1).grad_fn(), nullptr);
}

// ---- errors ----------------------------------------------------------------------------------------

TEST(LossSampleErrors, CrossEntropyTargets) {
  Tensor logits = Tensor::zeros({3, 4});
  expect_error([&] { cross_entropy(logits, Tensor::from_int64({0, 4, 1}, {3})); },
               {"cross_entropy", "target 4", "index 1", "[0, 4)"});
  expect_error([&] { cross_entropy(logits, Tensor::from_int64({0, 1, -1}, {3})); },
               {"cross_entropy", "target -1", "index 2"});
  expect_error([&] { cross_entropy(logits, Tensor::from_int64({0, 1}, {2})); }, {"cross_entropy", "[2]", "[3, 4]"});
  expect_error([&] { cross_entropy(logits, Tensor::zeros({3})); }, {"cross_entropy", "i64", "f32[3]"});
  expect_error([&] { cross_entropy(Tensor::zeros({3, 4, 1}), Tensor::from_int64({0, 0, 0}, {3})); },
               {"cross_entropy", "[3, 4, 1]"});
  expect_error([&] { cross_entropy(logits, Tensor::from_int64({0, 0, 0}, {3}), 1.5); },
               {"cross_entropy", "label_smoothing", "1.5"});
}

TEST(LossSampleErrors, ShapeAndDtypeMismatches) {
  expect_error([] { kl_div(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})); }, {"kl_div", "[2, 3]", "[3, 2]"});
  expect_error([] { mse_loss(Tensor::zeros({4}), Tensor::zeros({2, 2})); }, {"mse_loss", "[4]", "[2, 2]"});
  expect_error([] { mse_loss(Tensor::zeros({4}), Tensor::zeros({4}, DType::F64)); },
               {"mse_loss", "dtype", "f32[4]", "f64[4]"});
  expect_error([] { softmax(Tensor::zeros({2, 3}), 2); }, {"softmax", "dimension 2"});
  expect_error([] { log_softmax(Tensor::zeros({2}, DType::I64), 0); }, {"log_softmax", "i64"});
}

TEST(LossSampleErrors, DropoutProbability) {
  Generator gen(0);
  expect_error([&] { dropout(Tensor::zeros({2}), 1.0, true, gen); }, {"dropout", "[0, 1)", "1"});
  expect_error([&] { dropout(Tensor::zeros({2}), -0.1, true, gen); }, {"dropout", "-0.1"});
}

TEST(LossSampleErrors, GridSampleAndAffineGrid) {
  Tensor x = Tensor::zeros({2, 3, 4, 5});
  expect_error([&] { grid_sample(x, Tensor::zeros({2, 4, 4, 3})); }, {"grid_sample", "[2, 3, 4, 5]", "[2, 4, 4, 3]"});
  expect_error([&] { grid_sample(x, Tensor::zeros({1, 4, 4, 2})); }, {"grid_sample", "[2, 3, 4, 5]", "[1, 4, 4, 2]"});
  expect_error([&] { grid_sample(Tensor::zeros({3, 4, 5}), Tensor::zeros({3, 4, 4, 2})); },
               {"grid_sample", "[3, 4, 5]", "[3, 4, 4, 2]"});
  expect_error([&] { grid_sample(x, Tensor::zeros({2, 4, 4, 2}, DType::F64)); },
               {"grid_sample", "dtype", "f32[2, 3, 4, 5]", "f64[2, 4, 4, 2]"});
  expect_error([] { affine_grid(Tensor::zeros({1, 3, 3}), 4, 4); }, {"affine_grid", "[N, 2, 3]", "[1, 3, 3]"});
  expect_error([] { affine_grid(Tensor::zeros({1, 2, 3}), 0, 4); }, {"affine_grid", "H=0"});
}
