// Feature distillation nodes (AT, CWD, HCL), conv_transpose2d and the connectors (ConvReg,
// Adapter1x1, ABF): the identities of methods.md §6, values computed by hand, the layer choices of
// ConvReg, errors, and golden values from the reference formulas in PyTorch
// (tools/gen_golden_distill_feature.py) in f64 and f32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>

#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "distill/strategy.h"
#include "tests/common/distill_fixtures.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::close_to;
using retort::testing::expect_error;
using retort::testing::GoldenFile;

namespace {

Tensor randn(const Shape& s, Generator& g, DType dt = DType::F64) { return Tensor::randn(s, g, dt); }

bool has_node(const Tensor& t, const std::string& name) {
  const auto names = graph_node_names(t);
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::map<std::string, Shape> state_shapes(const Module& m) {
  std::map<std::string, Shape> out;
  for (const auto& [k, t] : m.state_dict()) out[k] = t.shape();
  return out;
}

}  // namespace

// ---- AT ----------------------------------------------------------------------------------------------

TEST(AttentionMap, MatchesHandComputedNormalisedChannelMean) {
  Generator gen(1);
  const Tensor f = randn({2, 3, 2, 3}, gen);
  const Tensor q = attention_map(f);
  ASSERT_EQ(q.shape(), (Shape{2, 6}));
  for (int64_t b = 0; b < 2; ++b) {
    double a[6] = {}, norm = 0;
    for (int64_t i = 0; i < 6; ++i) {
      for (int64_t c = 0; c < 3; ++c) a[i] += std::pow(f.at((b * 3 + c) * 6 + i), 2) / 3.0;
      norm += a[i] * a[i];
    }
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < 6; ++i) EXPECT_NEAR(q.at(b * 6 + i), a[i] / norm, 1e-14);
  }
}

TEST(AttentionMap, AllZeroFeaturesStayZeroWithFiniteGradient) {
  Tensor f = Tensor::zeros({1, 2, 2, 2}, DType::F64).set_requires_grad();
  const Tensor q = attention_map(f);
  for (double v : q.to_vector()) EXPECT_EQ(v, 0.0);
  sum(q).backward();
  for (double v : f.grad().to_vector()) EXPECT_TRUE(std::isfinite(v));
}

TEST(AtLoss, InvariantToPositiveScalingOfEitherFeature) {
  Generator gen(2);
  const Tensor fs = randn({3, 4, 6, 6}, gen), ft = randn({3, 5, 6, 6}, gen);
  const double base = at_loss(fs, ft).item();
  ASSERT_GT(base, 1e-4);  // a nonzero loss, so the equalities below say something
  EXPECT_NEAR(at_loss(affine(fs, 3.7, 0.0), ft).item(), base, 1e-12 * base);
  EXPECT_NEAR(at_loss(fs, affine(ft, 0.02, 0.0)).item(), base, 1e-12 * base);
  // p = 3 as well: q is homogeneous of degree 0 for every p.
  const double base3 = at_loss(fs, ft, 3.0).item();
  EXPECT_NEAR(at_loss(affine(fs, 5.0, 0.0), ft, 3.0).item(), base3, 1e-12 * base3);
}

TEST(AtLoss, DifferentSizesEqualExplicitPooling) {
  Generator gen(3);
  const Tensor big = randn({2, 3, 8, 8}, gen), small = randn({2, 6, 4, 4}, gen);
  const Tensor pooled = adaptive_avg_pool2d(big, 4, 4);
  EXPECT_NEAR(at_loss(big, small).item(), at_loss(pooled, small).item(), 1e-15);
  EXPECT_NEAR(at_loss(small, big).item(), at_loss(small, pooled).item(), 1e-15);
  // Uneven bins (7 -> 3) follow adaptive pooling too.
  const Tensor odd = randn({2, 3, 7, 7}, gen), three = randn({2, 3, 3, 3}, gen);
  EXPECT_NEAR(at_loss(odd, three).item(), at_loss(adaptive_avg_pool2d(odd, 3, 3), three).item(), 1e-15);
  // and it is the mean of squared differences of the maps, not a sum
  const Tensor qs = attention_map(pooled), qt = attention_map(small);
  double acc = 0;
  for (int64_t i = 0; i < qs.numel(); ++i) acc += std::pow(qs.at(i) - qt.at(i), 2);
  EXPECT_NEAR(at_loss(big, small).item(), acc / static_cast<double>(qs.numel()), 1e-15);
}

TEST(AtLoss, GradientMatchesExplicitPoolingAndReachesBoth) {
  Generator gen(4);
  Tensor a = randn({2, 3, 8, 8}, gen).set_requires_grad();
  Tensor b = a.detach().clone().set_requires_grad();
  const Tensor t = randn({2, 4, 4, 4}, gen);
  at_loss(a, t).backward();
  mse_loss(attention_map(adaptive_avg_pool2d(b, 4, 4)), attention_map(t)).backward();
  EXPECT_TRUE(close_to("at grad", a.grad(), b.grad(), 1e-15, 1e-12));
}

TEST(AtLoss, RecordsAttentionMapNodes) {
  Generator gen(5);
  Tensor fs = randn({2, 3, 4, 4}, gen).set_requires_grad();
  EXPECT_EQ(attention_map(fs).grad_fn()->name(), "AttentionMapBackward");
  const Tensor l = at_loss(fs, randn({2, 2, 4, 4}, gen));
  EXPECT_EQ(l.dim(), 0);
  EXPECT_TRUE(has_node(l, "AttentionMapBackward"));
}

TEST(AtLoss, Errors) {
  Generator gen(6);
  expect_error([&] { at_loss(randn({2, 3, 4, 4}, gen), randn({3, 3, 4, 4}, gen)); },
               {"at_loss", "f64[2, 3, 4, 4]", "f64[3, 3, 4, 4]", "batch"});
  expect_error([&] { at_loss(randn({2, 3, 4}, gen), randn({2, 3, 4, 4}, gen)); },
               {"at_loss", "4-D", "f64[2, 3, 4]", "f64[2, 3, 4, 4]"});
  expect_error([&] { at_loss(randn({2, 3, 4, 4}, gen, DType::F32), randn({2, 3, 4, 4}, gen)); },
               {"at_loss", "f32[2, 3, 4, 4]", "f64[2, 3, 4, 4]"});
  expect_error([&] { attention_map(randn({2, 3, 4, 4}, gen), 0.0); }, {"attention_map", "p"});
  // Below 1 the derivative at 0 is infinite; a fractional power of signed features is no real number:
  // both refused where the references would return NaN or infinity.
  expect_error([&] { attention_map(relu(randn({2, 3, 4, 4}, gen)), 0.5); },
               {"attention_map: p must be a number of at least 1, got 0.5"});
  expect_error([&] { attention_map(randn({2, 3, 4, 4}, gen), 1.5); },
               {"attention_map: p = 1.5 is not a whole number and the features hold negative values", "before its ReLU"});
  const Tensor q = attention_map(relu(randn({2, 3, 4, 4}, gen)), 1.5);  // non-negative features: fine
  EXPECT_TRUE(std::isfinite(sum(q).item()));
  EXPECT_TRUE(std::isfinite(sum(attention_map(randn({2, 3, 4, 4}, gen), 3.0)).item()));  // odd whole p: signed, as the references
}

// ---- CWD ---------------------------------------------------------------------------------------------

// The loss by hand: a spatial softmax per (n, c) (checked to sum to 1), KL(teacher || student),
// times tau^2 / (N * C).
TEST(CwdLoss, MatchesHandComputedSpatialSoftmaxKL) {
  Generator gen(7);
  const int64_t N = 2, C = 3, HW = 6;
  const Tensor fs = randn({N, C, 2, 3}, gen), ft = randn({N, C, 2, 3}, gen);
  for (double tau : {1.0, 4.0}) {
    double total = 0;
    for (int64_t r = 0; r < N * C; ++r) {
      double zs = 0, zt = 0, ps[HW], pt[HW];
      for (int64_t i = 0; i < HW; ++i) {
        ps[i] = std::exp(fs.at(r * HW + i) / tau), pt[i] = std::exp(ft.at(r * HW + i) / tau);
        zs += ps[i], zt += pt[i];
      }
      double ss = 0, st = 0;
      for (int64_t i = 0; i < HW; ++i) ps[i] /= zs, pt[i] /= zt, ss += ps[i], st += pt[i];
      EXPECT_NEAR(ss, 1.0, 1e-14);
      EXPECT_NEAR(st, 1.0, 1e-14);
      for (int64_t i = 0; i < HW; ++i) total += pt[i] * (std::log(pt[i]) - std::log(ps[i]));
    }
    const double expected = total * tau * tau / static_cast<double>(N * C);
    EXPECT_GT(expected, 0.0);
    EXPECT_NEAR(cwd_loss(fs, ft, tau).item(), expected, 1e-13) << "tau " << tau;
  }
}

TEST(CwdLoss, ZeroForEqualFeaturesAndInvariantToPerChannelShift) {
  Generator gen(8);
  const Tensor f = randn({2, 4, 3, 3}, gen), g = randn({2, 4, 3, 3}, gen);
  EXPECT_EQ(cwd_loss(f, f, 1.0).item(), 0.0);
  EXPECT_EQ(cwd_loss(f, f, 4.0).item(), 0.0);
  // The softmax normalises each (n, c) over space: a constant per (n, c) changes nothing.
  const Tensor shift = randn({2, 4, 1, 1}, gen);
  EXPECT_NEAR(cwd_loss(add(f, shift), g, 2.0).item(), cwd_loss(f, g, 2.0).item(), 1e-12);
}

TEST(CwdLoss, StudentGradientSumsToZeroPerChannel) {
  // d/dfs = tau/(N C) (softmax_s - softmax_t): both rows sum to 1, so each (n, c) plane sums to 0.
  Generator gen(9);
  Tensor fs = randn({2, 3, 3, 3}, gen).set_requires_grad();
  const Tensor ft = randn({2, 3, 3, 3}, gen);
  const Tensor l = cwd_loss(fs, ft, 3.0);
  EXPECT_EQ(l.grad_fn()->name(), "CWDLossBackward");
  l.backward();
  const Tensor plane_sums = sum(fs.grad(), {2, 3});
  double largest = 0;
  for (double v : fs.grad().to_vector()) largest = std::max(largest, std::abs(v));
  ASSERT_GT(largest, 1e-4);
  for (double v : plane_sums.to_vector()) EXPECT_NEAR(v, 0.0, 1e-15);
}

TEST(CwdLoss, Errors) {
  Generator gen(10);
  expect_error([&] { cwd_loss(randn({2, 3, 4, 4}, gen), randn({2, 5, 4, 4}, gen), 1.0); },
               {"cwd_loss", "f64[2, 3, 4, 4]", "f64[2, 5, 4, 4]", "same shape"});
  expect_error([&] { cwd_loss(randn({2, 3, 4, 4}, gen), randn({2, 3, 4, 4}, gen), 0.0); }, {"cwd_loss", "tau"});
}

// ---- HCL ---------------------------------------------------------------------------------------------

TEST(HclLoss, H8WeightsAreOneHalfQuarterEighthOver1875) {
  Generator gen(11);
  Tensor fs = randn({2, 3, 8, 8}, gen).set_requires_grad();
  const Tensor ft = randn({2, 3, 8, 8}, gen);
  auto level = [&](int64_t l) { return mse_loss(adaptive_avg_pool2d(fs, l, l), adaptive_avg_pool2d(ft, l, l)); };
  const Tensor weighted = add(add(add(mse_loss(fs, ft), affine(level(4), 0.5, 0.0)), affine(level(2), 0.25, 0.0)),
                              affine(level(1), 0.125, 0.0));
  const Tensor by_hand = affine(weighted, 1.0 / 1.875, 0.0);
  const Tensor l = hcl_loss(fs, ft);
  EXPECT_EQ(l.grad_fn()->name(), "HCLLossBackward");
  EXPECT_NEAR(l.item(), by_hand.item(), 1e-14);
  // and the weights matter: plain MSE is a different number
  EXPECT_GT(std::abs(l.item() - mse_loss(fs, ft).item()), 1e-3);
  by_hand.backward();
  const Tensor expected_grad = fs.grad().clone();
  fs.zero_grad();
  l.backward();
  EXPECT_TRUE(close_to("hcl grad", fs.grad(), expected_grad, 1e-15, 1e-12));
}

TEST(HclLoss, H4UsesLevels2And1) {
  Generator gen(12);
  const Tensor fs = randn({2, 3, 4, 4}, gen), ft = randn({2, 3, 4, 4}, gen);
  auto level = [&](int64_t l) { return mse_loss(adaptive_avg_pool2d(fs, l, l), adaptive_avg_pool2d(ft, l, l)).item(); };
  EXPECT_NEAR(hcl_loss(fs, ft).item(), (mse_loss(fs, ft).item() + 0.5 * level(2) + 0.25 * level(1)) / 1.75, 1e-14);
}

TEST(HclLoss, H1IsPlainMse) {
  Generator gen(13);
  const Tensor fs = randn({4, 6, 1, 1}, gen), ft = randn({4, 6, 1, 1}, gen);
  EXPECT_NEAR(hcl_loss(fs, ft).item(), mse_loss(fs, ft).item(), 1e-15);
}

TEST(HclLoss, Errors) {
  Generator gen(14);
  expect_error([&] { hcl_loss(randn({2, 3, 4, 4}, gen), randn({2, 3, 8, 8}, gen)); },
               {"hcl_loss", "f64[2, 3, 4, 4]", "f64[2, 3, 8, 8]", "same shape"});
}

// ---- conv_transpose2d ----------------------------------------------------------------------------

TEST(ConvTranspose2d, IsTheAdjointOfConv2d) {
  // <conv_transpose2d(x, w), y> == <x, conv2d(y, w)> for the same weight and settings.
  Generator gen(15);
  const Tensor x = randn({2, 3, 4, 5}, gen), w = randn({3, 4, 3, 3}, gen);
  const Tensor up = conv_transpose2d(x, w, Tensor(), 2, 1, 1);
  ASSERT_EQ(up.shape(), (Shape{2, 4, 8, 10}));
  const Tensor y = randn(up.shape(), gen);
  EXPECT_NEAR(sum(mul(up, y)).item(), sum(mul(x, conv2d(y, w, Tensor(), 2, 1))).item(), 1e-11);
}

TEST(ConvTranspose2d, ModuleNamesAndErrors) {
  Generator gen(16);
  ConvTranspose2d m(3, 5, 4, gen, ConvTranspose2dOptions{.stride = 2, .padding = 1});
  EXPECT_EQ(state_shapes(m), (std::map<std::string, Shape>{{"weight", {3, 5, 4, 4}}, {"bias", {5}}}));
  EXPECT_EQ(m.extra_repr(), "3, 5, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)");
  EXPECT_EQ(m(Tensor::zeros({1, 3, 4, 4})).shape(), (Shape{1, 5, 8, 8}));
  expect_error([&] { conv_transpose2d(Tensor::zeros({1, 2, 4, 4}), Tensor::zeros({3, 5, 4, 4})); },
               {"conv_transpose2d", "f32[1, 2, 4, 4]", "f32[3, 5, 4, 4]"});
  expect_error([&] { conv_transpose2d(Tensor::zeros({1, 3, 4, 4}), Tensor::zeros({3, 5, 4, 4}), Tensor(), 2, 1, 2); },
               {"conv_transpose2d", "output_padding"});
}

// ---- ConvReg -------------------------------------------------------------------------------------

TEST(ConvReg, PicksTheReferenceLayerForEachSizePair) {
  Generator gen(17);
  struct Case {
    Shape s, t;
    ConvReg::Kind kind;
    Shape weight;
  };
  const Case cases[] = {
      {{2, 8, 16, 16}, {2, 32, 16, 16}, ConvReg::Kind::Kernel, {32, 8, 1, 1}},      // equal: 1x1
      {{2, 8, 16, 16}, {2, 32, 8, 8}, ConvReg::Kind::Stride2, {32, 8, 3, 3}},       // student twice as large
      {{2, 8, 8, 8}, {2, 32, 16, 16}, ConvReg::Kind::Transposed, {8, 32, 4, 4}},    // student half the size
      {{2, 8, 6, 7}, {2, 32, 4, 4}, ConvReg::Kind::Kernel, {32, 8, 3, 4}},          // (1 + sH - tH, 1 + sW - tW)
  };
  for (const Case& c : cases) {
    ConvReg reg(c.s, c.t, gen);
    EXPECT_EQ(reg.kind(), c.kind);
    const int64_t tc = c.t[1];
    EXPECT_EQ(state_shapes(reg), (std::map<std::string, Shape>{{"conv.weight", c.weight},
                                                               {"conv.bias", {tc}},
                                                               {"bn.weight", {tc}},
                                                               {"bn.bias", {tc}},
                                                               {"bn.running_mean", {tc}},
                                                               {"bn.running_var", {tc}},
                                                               {"bn.num_batches_tracked", {}}}))
        << shape_str(c.s) << " -> " << shape_str(c.t);
    Tensor x = Tensor::randn(c.s, gen).set_requires_grad();
    const Tensor y = reg(x);
    EXPECT_EQ(y.shape(), c.t);
    for (double v : y.to_vector()) ASSERT_GE(v, 0.0);  // ends in ReLU
    mse_loss(y, Tensor::randn(c.t, gen)).backward();
    for (const auto& [name, p] : reg.named_parameters()) EXPECT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(x.grad().defined());
  }
  // The module types are the reference's.
  EXPECT_EQ(ConvReg({2, 8, 8, 8}, {2, 4, 16, 16}, gen).find("conv").type_name(), "ConvTranspose2d");
  EXPECT_EQ(ConvReg({2, 8, 8, 8}, {2, 4, 4, 4}, gen).find("conv").type_name(), "Conv2d");
}

TEST(ConvReg, RefusesPairsNoRuleBridges) {
  Generator gen(18);
  expect_error([&] { ConvReg({2, 8, 4, 4}, {2, 16, 16, 16}, gen); },
               {"ConvReg", "[2, 8, 4, 4]", "[2, 16, 16, 16]", "half"});
  expect_error([&] { ConvReg({2, 8, 6, 6}, {2, 16, 8, 8}, gen); }, {"ConvReg", "[2, 8, 6, 6]", "[2, 16, 8, 8]"});
  expect_error([&] { ConvReg({2, 8, 8, 8}, {4, 16, 8, 8}, gen); },
               {"ConvReg", "[2, 8, 8, 8]", "[4, 16, 8, 8]", "batch"});
  expect_error([&] { ConvReg({2, 8, 8, 4}, {2, 16, 8, 8}, gen); }, {"ConvReg", "[2, 8, 8, 4]", "[2, 16, 8, 8]"});
  ConvReg reg({2, 8, 8, 8}, {2, 16, 8, 8}, gen);
  expect_error([&] { reg(Tensor::zeros({2, 8, 4, 4})); }, {"ConvReg", "f32[2, 8, 4, 4]"});
}

// ---- Adapter1x1 and ABF --------------------------------------------------------------------------

TEST(Adapter1x1, ShapesNamesAndGradients) {
  Generator gen(19);
  for (bool relu : {false, true}) {
    Adapter1x1 a(6, 10, relu, gen);
    EXPECT_EQ(state_shapes(a).at("conv.weight"), (Shape{10, 6, 1, 1}));
    EXPECT_EQ(state_shapes(a).count("conv.bias"), 0u);
    EXPECT_EQ(state_shapes(a).at("bn.weight"), (Shape{10}));
    Tensor x = Tensor::randn({3, 6, 5, 5}, gen).set_requires_grad();
    const Tensor y = a(x);
    EXPECT_EQ(y.shape(), (Shape{3, 10, 5, 5}));
    const auto v = y.to_vector();
    EXPECT_EQ(*std::min_element(v.begin(), v.end()) >= 0.0, relu);
    sum(mul(y, Tensor::randn(y.shape(), gen))).backward();
    for (const auto& [name, p] : a.named_parameters()) EXPECT_TRUE(p.grad().defined()) << name;
  }
}

TEST(ABF, DeepestLevelWithoutFuse) {
  Generator gen(20);
  ABF abf(16, 8, 12, false, gen);
  EXPECT_FALSE(abf.fuses());
  EXPECT_EQ(state_shapes(abf), (std::map<std::string, Shape>{{"conv1.0.weight", {8, 16, 1, 1}},
                                                             {"conv1.1.weight", {8}},
                                                             {"conv1.1.bias", {8}},
                                                             {"conv1.1.running_mean", {8}},
                                                             {"conv1.1.running_var", {8}},
                                                             {"conv1.1.num_batches_tracked", {}},
                                                             {"conv2.0.weight", {12, 8, 3, 3}},
                                                             {"conv2.1.weight", {12}},
                                                             {"conv2.1.bias", {12}},
                                                             {"conv2.1.running_mean", {12}},
                                                             {"conv2.1.running_var", {12}},
                                                             {"conv2.1.num_batches_tracked", {}}}));
  // The pooled vector as [B, C, 1, 1], upsampled to the next level's size, as ReviewKD's first ABF.
  const Tensor x = Tensor::randn({4, 16, 1, 1}, gen);
  const auto [y, mid] = abf.fuse(x, Tensor(), 4);
  EXPECT_EQ(y.shape(), (Shape{4, 12, 4, 4}));
  EXPECT_EQ(mid.shape(), (Shape{4, 8, 4, 4}));
  EXPECT_EQ(abf(Tensor::randn({4, 16, 3, 3}, gen)).shape(), (Shape{4, 12, 3, 3}));
  expect_error([&] { abf.fuse(x, Tensor::zeros({4, 8, 1, 1}), 4); }, {"ABF", "fuse", "f32[4, 8, 1, 1]"});
}

TEST(ABF, FusedLevelShapesGradientsAndInit) {
  Generator gen(21);
  ABF abf(16, 6, 10, true, gen);
  EXPECT_TRUE(abf.fuses());
  const auto shapes = state_shapes(abf);
  EXPECT_EQ(shapes.at("att_conv.0.weight"), (Shape{2, 12, 1, 1}));
  EXPECT_EQ(shapes.at("att_conv.0.bias"), (Shape{2}));
  EXPECT_EQ(abf.find("att_conv.1").type_name(), "Sigmoid");
  // conv1/conv2 re-drawn with kaiming_uniform_(a = 1): bound sqrt(3 / fan_in), above PyTorch's
  // default 1 / sqrt(fan_in), so the default would never reach it.
  const auto w1 = abf.find("conv1.0").named_parameters()[0].second.to_vector();
  double largest = 0;
  for (double v : w1) largest = std::max(largest, std::abs(v));
  EXPECT_LE(largest, std::sqrt(3.0 / 16.0));
  EXPECT_GT(largest, 1.0 / std::sqrt(16.0));

  const Tensor x = Tensor::randn({2, 16, 8, 8}, gen);
  Tensor residual = Tensor::randn({2, 6, 4, 4}, gen).set_requires_grad();
  const auto [y, mid] = abf.fuse(x, residual, 8);
  EXPECT_EQ(y.shape(), (Shape{2, 10, 8, 8}));
  EXPECT_EQ(mid.shape(), (Shape{2, 6, 8, 8}));
  // A different output size resizes the fused feature before conv2 (ShuffleNet students).
  EXPECT_EQ(abf.fuse(x, residual, 16).first.shape(), (Shape{2, 10, 16, 16}));
  add(sum(mul(y, y)), sum(mid)).backward();
  for (const auto& [name, p] : abf.named_parameters()) EXPECT_TRUE(p.grad().defined()) << name;
  EXPECT_TRUE(residual.grad().defined());
  expect_error([&] { abf(x); }, {"ABF", "residual"});
  expect_error([&] { abf.fuse(x, Tensor(), 8); }, {"ABF", "residual", "undefined"});
  expect_error([&] { abf.fuse(x, Tensor::zeros({2, 5, 4, 4}), 8); }, {"ABF", "f32[2, 5, 4, 4]"});
}

// ---- golden values (PyTorch, the reference formulas) ---------------------------------------------

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_distill_feature.safetensors");
  return g;
}

void check_case(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& fn, DType dtype) {
  retort::testing::check_golden_case(golden(), name, fn, dtype);
}

class GoldenFeature : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(GoldenFeature, AttentionTransfer) {
  check_case("attention_map", [](const auto& in) { return attention_map(in[0]); }, GetParam());
  for (const char* c : {"at_same", "at_student_larger", "at_teacher_larger", "at_uneven_pool"})
    check_case(c, [](const auto& in) { return at_loss(in[0], in[1]); }, GetParam());
}

TEST_P(GoldenFeature, ChannelWiseDistillation) {
  check_case("cwd_tau1", [](const auto& in) { return cwd_loss(in[0], in[1], 1.0); }, GetParam());
  check_case("cwd_tau4", [](const auto& in) { return cwd_loss(in[0], in[1], 4.0); }, GetParam());
}

TEST_P(GoldenFeature, HierarchicalContextLoss) {
  for (const char* c : {"hcl_h8", "hcl_h4", "hcl_h5", "hcl_h1"})
    check_case(c, [](const auto& in) { return hcl_loss(in[0], in[1]); }, GetParam());
}

// The whole reviewkd term — its ABF chain from the pooled vector up, the residual fusion, the nearest
// upsampling to the teacher's size and HCL at every level — against the reference's forward in PyTorch
// with the same parameters: the loss, and the gradients of the student's features and of every parameter.
TEST_P(GoldenFeature, ReviewKDWholeTerm) {
  const DType dt = GetParam();
  const bool f32 = dt == DType::F32;
  const double atol = f32 ? 2e-5 : 1e-12, rtol = f32 ? 1e-3 : 1e-9;
  const GoldenFile& g = golden();
  for (const std::string name : {"reviewkd_same_size", "reviewkd_student_half"}) {
    SCOPED_TRACE(name);
    int levels = 0;
    while (g.has(name + "/s" + std::to_string(levels))) ++levels;
    ASSERT_GE(levels, 3);
    Json s_taps = Json::array(), t_taps = Json::array();
    TapShapes shapes;
    std::map<std::string, Tensor> sf, tf;
    for (int i = 0; i < levels; ++i) {
      const std::string si = "s" + std::to_string(i), ti = "t" + std::to_string(i);
      s_taps.push_back(si);
      t_taps.push_back(ti);
      shapes.student[si] = g[name + "/" + si].shape();
      shapes.teacher[ti] = g[name + "/" + ti].shape();
      sf[si] = g[name + "/" + si].to(dt).clone().set_requires_grad();
      tf[ti] = g[name + "/" + ti].to(dt);
    }
    std::shared_ptr<Strategy> term =
        retort::testing::terms_from(Json::array({{{"type", "reviewkd"},
                                                  {"params", {{"student_taps", s_taps}, {"teacher_taps", t_taps}}}}})
                                        .dump())[0]
            .strategy;
    Generator gen(0);
    term->build(shapes, gen);
    term->to(dt);
    StateDict state;
    for (const auto& [k, v] : term->state_dict()) {
      const Tensor& stored = g[name + "/state/" + k];
      state.emplace_back(k, stored.dtype() == DType::I64 ? stored : stored.to(dt));
    }
    term->load_state_dict(state);
    term->train(true);
    const Tensor logits = Tensor::zeros({2, 3}, dt), targets = Tensor::zeros({2}, DType::I64);
    const TrainProgress progress;
    const DistillContext ctx{logits, logits, targets, sf, tf, progress, {}};
    const Tensor loss = term->compute(ctx);
    EXPECT_TRUE(close_to(name + "/out", loss, g[name + "/out"], atol, rtol));
    loss.backward(g[name + "/upstream"].to(dt));
    for (int i = 0; i < levels; ++i) {
      const std::string si = "s" + std::to_string(i);
      ASSERT_TRUE(sf[si].grad().defined()) << si;
      EXPECT_TRUE(close_to(name + "/grad_" + si, sf[si].grad(), g[name + "/grad_" + si], atol, rtol));
    }
    int checked = 0;
    for (const auto& [k, p] : term->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << k;
      EXPECT_TRUE(close_to(name + "/grad/" + k, p.grad(), g[name + "/grad/" + k], atol, rtol));
      ++checked;
    }
    EXPECT_EQ(checked, 6 * levels + 2 * (levels - 1));  // conv1, BN1, conv2, BN2 (+ att_conv weight, bias)
  }
}

TEST_P(GoldenFeature, ConvTranspose2d) {
  check_case("conv_transpose2d_k4s2p1", [](const auto& in) { return conv_transpose2d(in[0], in[1], in[2], 2, 1); },
             GetParam());
  check_case("conv_transpose2d_general",
             [](const auto& in) {
               ConvTranspose2dParams p;
               p.stride_h = 2, p.pad_h = 1, p.output_pad_h = 1, p.dilation_w = 2, p.groups = 2;
               return conv_transpose2d(in[0], in[1], in[2], p);
             },
             GetParam());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GoldenFeature, ::testing::Values(DType::F64, DType::F32),
                         [](const auto& info) { return std::string(info.param == DType::F64 ? "f64" : "f32"); });
