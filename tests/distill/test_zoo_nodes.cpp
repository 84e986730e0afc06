// VID, NST, CC, OFD, AB, FSP and FT nodes (distill/nodes/feature.h vid_loss / nst_loss / ofd_loss /
// ofd_margin / ab_loss / fsp_matrix / fsp_loss / ft_loss, relation.h cc_loss) and FT's Paraphraser and
// Translator (distill/connectors.h): values computed by hand, the invariances NST and FT are built to
// have (a positive scale per channel map, the order of the channels), dead channels, OFD's regions, the
// graph's node names, errors, and golden values from RepDistiller's VID.py, NST.py, CC.py, AB.py, FSP.py,
// FT.py and models/util.py and mdistiller's OFD.py in PyTorch (tools/gen_golden_distill_zoo.py) in f64
// and f32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "distill/connectors.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/kdsvd.h"
#include "distill/nodes/relation.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::expect_error;
using retort::testing::GoldenFile;

namespace {

Tensor randn(const Shape& s, Generator& g, DType dt = DType::F64) { return Tensor::randn(s, g, dt); }
Tensor vec(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s, DType::F64); }

bool has_node(const Tensor& t, const std::string& name) {
  const auto names = graph_node_names(t);
  return std::find(names.begin(), names.end(), name) != names.end();
}

double softplus(double x) { return std::log1p(std::exp(x)); }

}  // namespace

TEST(VidLoss, MatchesHandComputedNegativeLogLikelihood) {
  Generator gen(1);
  const Tensor mu = randn({2, 2, 1, 3}, gen), t = randn({2, 2, 1, 3}, gen);
  const Tensor s = vec({-1.0, 2.0}, {2});
  const double eps = 1e-5;
  double want = 0;
  for (int64_t i = 0; i < 12; ++i) {
    const int64_t c = (i / 3) % 2;  // [n, c, 0, w] with 3 positions per channel
    const double v = softplus(s.at(c)) + eps, d = mu.at(i) - t.at(i);
    want += 0.5 * (d * d / v + std::log(v));
  }
  EXPECT_NEAR(vid_loss(mu, t, s, eps).item(), want / 12.0, 1e-14);
}

TEST(VidLoss, VarianceStartsAtInitPredVarAndNeverOverflows) {
  const double init = std::log(std::exp(5.0 - 1e-5) - 1.0);  // VIDLoss's log_scale initialisation
  EXPECT_NEAR(vid_variance(vec({init}, {1})).item(), 5.0, 1e-12);
  // softplus(100) = 100 and softplus(-100) ≈ 0, also in f32 where exp(100) overflows.
  const Tensor v = vid_variance(Tensor::from_vector({100.0, -100.0}, {2}, DType::F32), 1e-5);
  EXPECT_NEAR(v.at(0), 100.0, 1e-4);
  EXPECT_NEAR(v.at(1), 1e-5, 1e-9);
}

TEST(VidLoss, GradientShrinksTheVarianceTowardsTheError) {
  // With a perfect prediction the best variance is as small as possible: d loss / d log_scale > 0;
  // with errors of variance 4 and v = 1 it must grow: < 0.
  Generator gen(2);
  const Tensor mu = randn({4, 1, 4, 4}, gen);
  for (const auto& [target, sign] : {std::pair{mu, 1.0}, std::pair{add(mu, affine(randn({4, 1, 4, 4}, gen), 2.0, 0.0)), -1.0}}) {
    Tensor s = vec({std::log(std::exp(1.0) - 1.0)}, {1}).set_requires_grad();
    vid_loss(mu, target, s, 0.0).backward();
    EXPECT_GT(sign * s.grad().item(), 0.0);
  }
}

TEST(NstLoss, HandComputedKernelDiscrepancy) {
  // One channel each over two positions: ŝ = (1, 0), t̂ = (0, 1): K(s,s) = K(t,t) = 1, K(s,t) = 0.
  EXPECT_NEAR(nst_loss(vec({3, 0}, {1, 1, 1, 2}), vec({0, 2}, {1, 1, 1, 2})).item(), 2.0, 1e-15);
  // ŝ = (1, 1)/√2, t̂ = (1, 0): K(s,t) = ½, so 1 + 1 − 2·½.
  EXPECT_NEAR(nst_loss(vec({1, 1}, {1, 1, 1, 2}), vec({5, 0}, {1, 1, 1, 2})).item(), 1.0, 1e-15);
}

TEST(NstLoss, ZeroForEqualMapsAndBlindToChannelScaleAndOrder) {
  Generator gen(3);
  const Tensor fs = randn({2, 3, 4, 4}, gen), ft = randn({2, 5, 4, 4}, gen);
  const double base = nst_loss(fs, ft).item();
  ASSERT_GT(base, 1e-3);
  EXPECT_NEAR(nst_loss(fs, fs).item(), 0.0, 1e-14);
  // Each channel's map is normalised: a positive scale per (sample, channel) changes nothing.
  const Tensor scales = vec({0.5, 2.0, 9.0, 1.0, 3.0, 0.1}, {2, 3, 1, 1});
  EXPECT_NEAR(nst_loss(mul(fs, scales), ft).item(), base, 1e-12);
  // The discrepancy compares the sets of channel maps: their order does not matter.
  const Tensor reordered = cat({slice(fs, 1, 2, 3), slice(fs, 1, 0, 2)}, 1);
  EXPECT_NEAR(nst_loss(reordered, ft).item(), base, 1e-12);
  // The teacher's larger map is pooled to the student's: the same as pooling it first.
  const Tensor big = randn({2, 2, 8, 8}, gen);
  EXPECT_NEAR(nst_loss(fs, big).item(), nst_loss(fs, adaptive_avg_pool2d(big, 4, 4)).item(), 1e-15);
}

TEST(NstLoss, ADeadChannelGivesFiniteValuesAndGradients) {
  // A channel that is 0 everywhere (common after a ReLU) stays 0 after F.normalize's clamp.
  Generator gen(4);
  Tensor fs = relu(randn({2, 3, 2, 2}, gen));
  std::vector<double> v = fs.to_vector();
  for (int i = 4; i < 8; ++i) v[i] = 0.0;  // sample 0, channel 1
  fs = vec(v, {2, 3, 2, 2}).set_requires_grad();
  const Tensor l = nst_loss(fs, relu(randn({2, 4, 2, 2}, gen)));
  EXPECT_TRUE(std::isfinite(l.item()));
  l.backward();
  for (double g : fs.grad().to_vector()) EXPECT_TRUE(std::isfinite(g));
}

TEST(CcLoss, HandComputedOverConsecutivePairs) {
  // δ = |s − t| = rows (1, 2), (3, 0), (1, 1): pairs (0,1) 3 + 0, (1,2) 3 + 0: mean 3.
  const Tensor s = vec({2, 2, 3, 5, 0, 1}, {3, 2}), t = vec({1, 0, 0, 5, 1, 0}, {3, 2});
  EXPECT_NEAR(cc_loss(s, t).item(), 3.0, 1e-15);
  EXPECT_EQ(cc_loss(s, s).item(), 0.0);
  Generator gen(5);
  Tensor one = randn({1, 4}, gen).set_requires_grad();
  const Tensor l = cc_loss(one, randn({1, 4}, gen));
  EXPECT_EQ(l.item(), 0.0);  // no pair (the reference: the mean of nothing, NaN)
  l.backward();
  for (double g : one.grad().to_vector()) EXPECT_EQ(g, 0.0);
}

TEST(OfdLoss, EachRegionOfThePartialL2) {
  // One channel, margin −1; five positions: (s, t) =
  //   (0.5, −2)  teacher below the margin, student above it: (s − m)² = 2.25
  //   (−3, −2)   teacher below the margin, student below it too: 0
  //   (0, −0.5)  teacher between the margin and 0, student above it: (s − t)² = 0.25
  //   (−0.8, −0.5) the same teacher, student below it: 0
  //   (−1, 2)    teacher above 0: (s − t)² = 9
  const Tensor s = vec({0.5, -3, 0, -0.8, -1}, {1, 1, 1, 5}), t = vec({-2, -2, -0.5, -0.5, 2}, {1, 1, 1, 5});
  EXPECT_NEAR(ofd_loss(s, t, vec({-1}, {1})).item(), 11.5, 1e-14);
  // The sum over channels and positions, the mean over the batch.
  EXPECT_NEAR(ofd_loss(cat({s, s}, 0), cat({t, t}, 0), vec({-1}, {1})).item(), 11.5, 1e-14);
}

TEST(OfdMargin, IsTheMeanOfTheNegativePartOfTheBnsGaussian) {
  // weight 1, bias 0: E[x | x < 0] for N(0, 1) = −φ(0) / Φ(0) = −√(2/π); a negative weight counts as its size.
  const Tensor m = ofd_margin(vec({1.0, -1.0, 0.5, 0.0, 0.0}, {5}), vec({0.0, 0.0, 10.0, -0.3, 0.3}, {5}));
  EXPECT_NEAR(m.at(0), -std::sqrt(2.0 / M_PI), 1e-15);
  EXPECT_NEAR(m.at(1), -std::sqrt(2.0 / M_PI), 1e-15);
  EXPECT_NEAR(m.at(2), -1.5, 1e-15);  // almost never negative: −3 |γ|
  EXPECT_EQ(m.at(3), -0.3);           // constant channels: their value, or 0 when it is positive
  EXPECT_EQ(m.at(4), 0.0);
}

TEST(AbLoss, PushesTheStudentPastTheMarginOnTheTeachersSide) {
  // Margin 1; (s, t) = (0.5, −2): teacher off, student above −1: (s + 1)² = 2.25; (−3, −2): already
  // below −1: 0; (0.5, 3): teacher on, student below 1: (s − 1)² = 0.25; (2, 3): past 1: 0;
  // (−1, 0): t = 0 counts as off, s = −1 is not above −1: 0.
  const Tensor s = vec({0.5, -3, 0.5, 2, -1}, {1, 1, 1, 5}), t = vec({-2, -2, 3, 3, 0}, {1, 1, 1, 5});
  EXPECT_NEAR(ab_loss(s, t).item(), 2.5, 1e-14);
  // Margin 0: only the sign counts — the first student is on where the teacher is off: 0.5².
  EXPECT_NEAR(ab_loss(s, t, 0.0).item(), 0.25, 1e-14);
  // The mean over the batch of the per-sample sums; no gradient reaches the teacher.
  Tensor s2 = cat({s, s}, 0).set_requires_grad();
  Tensor t2 = cat({t, t}, 0).set_requires_grad();
  const Tensor l = ab_loss(s2, t2);
  EXPECT_NEAR(l.item(), 2.5, 1e-14);
  l.backward();
  EXPECT_NEAR(s2.grad().at(0), 2 * 1.5 / 2, 1e-14);  // 2 (s + 1) / B
  EXPECT_FALSE(t2.grad().defined());
}

TEST(FspMatrix, MeanOverPositionsOfTopTimesBot) {
  // bot: 2 channels over 2 positions, top: 1 channel. G[0, i] = mean_p top[p] · bot[i, p].
  const Tensor bot = vec({1, 2, 3, 4}, {1, 2, 1, 2}), top = vec({5, -1}, {1, 1, 1, 2});
  const Tensor g = fsp_matrix(bot, top);
  ASSERT_EQ(g.shape(), (Shape{1, 1, 2}));
  EXPECT_NEAR(g.at(0), (5 * 1 - 1 * 2) / 2.0, 1e-15);
  EXPECT_NEAR(g.at(1), (5 * 3 - 1 * 4) / 2.0, 1e-15);
  // A top map twice the bot's size is pooled first: the same as giving it pooled.
  Generator gen(7);
  const Tensor b2 = randn({2, 3, 2, 2}, gen), t2 = randn({2, 4, 4, 4}, gen);
  EXPECT_TRUE(retort::testing::close_to("pooled", fsp_matrix(b2, t2), fsp_matrix(b2, adaptive_avg_pool2d(t2, 2, 2)),
                                        1e-15, 0));
}

TEST(FspLoss, ZeroForTheSameFlowAtAnotherSpatialSize) {
  // A teacher whose maps are the student's repeated 2x2 (nearest upsampling) has the same flow matrices.
  Generator gen(8);
  const Tensor sb = randn({2, 3, 2, 2}, gen), st = randn({2, 4, 2, 2}, gen);
  EXPECT_NEAR(fsp_loss(sb, st, interpolate_nearest(sb, 4, 4), interpolate_nearest(st, 4, 4)).item(), 0.0, 1e-15);
  // Doubling the teacher's bot doubles its flow: the loss is then the mean of G_s².
  const Tensor gs = fsp_matrix(sb, st);
  EXPECT_NEAR(fsp_loss(sb, st, affine(interpolate_nearest(sb, 4, 4), 2.0, 0.0), interpolate_nearest(st, 4, 4)).item(),
              mean(mul(gs, gs)).item(), 1e-14);
}

TEST(FtLoss, MeanAbsoluteDifferenceOfNormalisedFactorMaps) {
  // Factor maps mean_c f² over 2 positions: student (1, 0) -> q = (1, 0); teacher (3, 4) -> q = (0.6, 0.8).
  const Tensor fs = vec({1, 0}, {1, 1, 1, 2}), ft = vec({std::sqrt(3.0), 2, std::sqrt(3.0), 0}, {1, 2, 1, 2});
  // teacher: mean over 2 channels of f² = ((3 + 3) / 2, (4 + 0) / 2) = (3, 2) -> q = (3, 2) / √13
  const double q0 = 3 / std::sqrt(13.0), q1 = 2 / std::sqrt(13.0);
  EXPECT_NEAR(ft_loss(fs, ft).item(), (std::abs(1 - q0) + std::abs(0 - q1)) / 2, 1e-15);
  EXPECT_NEAR(ft_loss(fs, ft, 2.0, 2.0).item(), ((1 - q0) * (1 - q0) + q1 * q1) / 2, 1e-15);
  // Blind to a positive scale of the factor and to the order of its channels.
  Generator gen(9);
  const Tensor f = randn({2, 3, 3, 3}, gen);
  EXPECT_NEAR(ft_loss(f, affine(cat({slice(f, 1, 1, 3), slice(f, 1, 0, 1)}, 1), 3.0, 0.0)).item(), 0.0, 1e-15);
}

TEST(FtModules, ParameterNamesAreRepDistillers) {
  Generator gen(10);
  Paraphraser p(6, 0.5, false, gen);
  std::vector<std::string> names;
  for (auto& [n, t] : p.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"encoder.0.weight", "encoder.0.bias", "encoder.3.weight", "encoder.3.bias",
                                             "encoder.6.weight", "encoder.6.bias", "decoder.0.weight", "decoder.0.bias",
                                             "decoder.3.weight", "decoder.3.bias", "decoder.6.weight", "decoder.6.bias"}));
  EXPECT_EQ(p.named_parameters()[4].second.shape(), (Shape{3, 3, 3, 3}));  // int(6 * 0.5) factor channels
  EXPECT_EQ(p.named_parameters()[8].second.shape(), (Shape{3, 6, 3, 3}));  // ConvTranspose2d: [in, out, k, k]
  Translator t(4, 3, true, gen);
  names.clear();
  for (auto& [n, v] : t.state_dict()) names.push_back(n);
  EXPECT_EQ(names.size(), 3u * 2 + 3u * 5);  // 3 convs (weight, bias) + 3 BNs (weight, bias, 3 buffers)
  EXPECT_EQ(names[2], "encoder.1.weight");
  EXPECT_EQ(names.back(), "encoder.7.num_batches_tracked");
  expect_error([&] { Paraphraser(1, 0.5, false, gen); }, {"rate 0.5 leaves no factor channel", "1"});
}

TEST(ZooNodes, GraphNodesAndErrors) {
  Generator gen(6);
  const Tensor a = randn({2, 3, 4, 4}, gen).set_requires_grad(), b = randn({2, 3, 4, 4}, gen);
  EXPECT_TRUE(has_node(vid_loss(a, b, randn({3}, gen)), "VIDLossBackward"));
  EXPECT_TRUE(has_node(nst_loss(a, b), "NSTLossBackward"));
  EXPECT_TRUE(has_node(nst_loss(a, randn({2, 3, 2, 2}, gen)), "AdaptiveAvgPool2dBackward"));
  expect_error([&] { vid_loss(a, randn({2, 4, 4, 4}, gen), randn({3}, gen)); },
               {"vid_loss", "f64[2, 3, 4, 4]", "f64[2, 4, 4, 4]", "same shape"});
  expect_error([&] { vid_loss(a, b, randn({4}, gen)); }, {"vid_loss", "log_scale must be [3]", "f64[4]"});
  expect_error([&] { vid_loss(a, b, randn({3}, gen), -1.0); }, {"vid_loss", "eps must be >= 0"});
  expect_error([&] { nst_loss(a, randn({3, 3, 4, 4}, gen)); }, {"nst_loss", "different batch sizes"});
  expect_error([&] { nst_loss(randn({2, 12}, gen), b); }, {"nst_loss", "4-D"});
  expect_error([&] { cc_loss(randn({3, 4}, gen), randn({3, 5}, gen)); }, {"cc_loss", "same shape", "feat_dim"});
  EXPECT_TRUE(has_node(ofd_loss(a, b, randn({3}, gen)), "OFDLossBackward"));
  expect_error([&] { ofd_loss(a, randn({2, 3, 2, 2}, gen), randn({3}, gen)); }, {"ofd_loss", "same shape", "pooled"});
  expect_error([&] { ofd_loss(a, b, randn({2}, gen)); }, {"ofd_loss", "margin must be [3]"});
  expect_error([&] { ofd_margin(randn({3}, gen), randn({4}, gen)); }, {"ofd_margin", "[C] alike"});
  EXPECT_TRUE(has_node(ab_loss(a, b), "ABLossBackward"));
  expect_error([&] { ab_loss(a, b, -1.0); }, {"ab_loss", "margin must be >= 0"});
  expect_error([&] { ab_loss(a, randn({2, 3, 4, 2}, gen)); }, {"ab_loss", "same shape"});
  expect_error([&] { fsp_matrix(a, randn({3, 3, 4, 4}, gen)); }, {"fsp_matrix", "different batch sizes"});
  expect_error([&] { fsp_loss(a, b, randn({2, 5, 4, 4}, gen), b); },
               {"fsp_loss", "same channels", "student f64[2, 3, 4, 4] cpu -> f64[2, 3, 4, 4] cpu", "teacher f64[2, 5, 4, 4]"});
  EXPECT_TRUE(has_node(ft_loss(a, b), "AttentionMapBackward"));
  expect_error([&] { ft_loss(a, b, 2.0, 0.5); }, {"ft_loss", "p2 must be >= 1"});
  expect_error([&] { ft_loss(a, b, 0.0); }, {"ft_loss", "p1 must be >= 1, got 0"});
}

// ---- golden values (PyTorch, RepDistiller's code) --------------------------------------------------

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_distill_zoo.safetensors");
  return g;
}

void check_case(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& fn, DType dtype) {
  retort::testing::check_golden_case(golden(), name, fn, dtype);
}

class GoldenZoo : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(GoldenZoo, VariationalInformationDistillation) {
  for (const char* c : {"vid_initial_scale", "vid_learned_scale"})
    check_case(c, [](const auto& in) { return vid_loss(in[0], in[1], in[2]); }, GetParam());
  // The whole VIDLoss: the student's map pooled to the teacher's, the 1x1 regressor, the loss.
  check_case("vid_module",
             [](const auto& in) {
               const auto [s, t] = pool_to_common_size(in[0], in[1]);
               const Tensor mu = conv2d(relu(conv2d(relu(conv2d(s, in[2])), in[3])), in[4]);
               return vid_loss(mu, t, in[5]);
             },
             GetParam());
}

TEST_P(GoldenZoo, NeuronSelectivityTransfer) {
  for (const char* c : {"nst_channels_differ", "nst_student_pooled", "nst_teacher_pooled"})
    check_case(c, [](const auto& in) { return nst_loss(in[0], in[1]); }, GetParam());
}

TEST_P(GoldenZoo, CorrelationCongruence) {
  for (const char* c : {"cc_embeddings", "cc_batch2"})
    check_case(c, [](const auto& in) { return cc_loss(in[0], in[1]); }, GetParam());
}

TEST_P(GoldenZoo, OverhaulOfFeatureDistillation) {
  check_case("ofd_regions", [](const auto& in) { return ofd_loss(in[0], in[1], in[2]); }, GetParam());
  const Tensor m = ofd_margin(golden()["ofd_margin/in0"].to(GetParam()), golden()["ofd_margin/in1"].to(GetParam()));
  EXPECT_TRUE(retort::testing::close_to("ofd_margin", m, golden()["ofd_margin/out"], GetParam() == DType::F32 ? 1e-6 : 1e-14,
                                        GetParam() == DType::F32 ? 1e-6 : 1e-13));
}

TEST_P(GoldenZoo, ActivationBoundaries) {
  check_case("ab_stage", [](const auto& in) { return ab_loss(in[0], in[1]); }, GetParam());
  check_case("ab_stage_margin0_5", [](const auto& in) { return ab_loss(in[0], in[1], 0.5); }, GetParam());
  // ABLoss over three stages: weights 2^(i − n + 1) · 3 / 1000, as the strategy applies them.
  check_case("ab_three_stages",
             [](const auto& in) {
               Tensor total;
               for (int i = 0; i < 3; ++i) {
                 const Tensor l = affine(ab_loss(in[2 * i], in[2 * i + 1]), std::ldexp(1.0, i - 2) * 3.0 / 1000.0, 0.0);
                 total = total.defined() ? add(total, l) : l;
               }
               return total;
             },
             GetParam());
}

TEST_P(GoldenZoo, FlowOfSolutionProcedure) {
  for (const char* c : {"fsp_matrix_same_size", "fsp_matrix_bot_pooled"})
    check_case(c, [](const auto& in) { return fsp_matrix(in[0], in[1]); }, GetParam());
  // RepDistiller's FSP over four taps (three pairs), the student at half the teacher's size.
  check_case("fsp_three_pairs",
             [](const auto& in) {
               Tensor total;
               for (int i = 0; i < 3; ++i) {
                 const Tensor l = fsp_loss(in[i], in[i + 1], in[4 + i], in[5 + i]);
                 total = total.defined() ? add(total, l) : l;
               }
               return total;
             },
             GetParam());
}

// KDSVD against the references' kdsvd_loss (their svd with our sign convention for the singular
// vectors): RepDistiller's channels view and mdistiller's width view over three stages, k = 1 and 2,
// the teacher frozen; and the top-2 singular vectors and values of one map in each view.
TEST_P(GoldenZoo, KnowledgeDistillationWithSvd) {
  for (const auto& [view, name] : {std::pair{KdsvdView::Channels, "channels"}, std::pair{KdsvdView::Width, "width"}}) {
    for (int64_t k : {1, 2})
      check_case(std::string("kdsvd_") + name + "_three_stages_k" + std::to_string(k),
                 [k, view](const auto& in) { return kdsvd_loss({in[0], in[1], in[2]}, {in[3], in[4], in[5]}, k, view); },
                 GetParam());
    check_case(std::string("kdsvd_") + name + "_svd_top2",
               [view](const auto& in) {
                 const SvdFeature s = kdsvd_svd(in[0], 2, view);
                 return cat({s.vectors, unsqueeze(s.values, 1)}, 1);
               },
               GetParam());
  }
}

TEST_P(GoldenZoo, FactorTransfer) {
  for (const char* c : {"ft_student_pooled", "ft_teacher_pooled"})
    check_case(c, [](const auto& in) { return ft_loss(in[0], in[1]); }, GetParam());
  check_case("ft_p2_2", [](const auto& in) { return ft_loss(in[0], in[1], 2.0, 2.0); }, GetParam());
}

namespace {

// A module case of gen_golden_distill_zoo.py's module_case: NAME/in0 is the input, NAME/in1.. the
// module's parameters in PyTorch's named_parameters order. Loads them into `m`, runs `run`, backpropagates
// NAME/upstream and compares the output and the gradients of the input and of every parameter.
void check_module_case(const std::string& name, Module& m, const std::function<Tensor(const Tensor&)>& run,
                       DType dtype) {
  const bool f32 = dtype == DType::F32;
  const double atol = f32 ? 2e-5 : 1e-12, rtol = f32 ? 1e-3 : 1e-9;
  m.to(dtype);
  const auto params = m.named_parameters();
  StateDict state;
  for (size_t i = 0; i < params.size(); ++i) state.emplace_back(params[i].first, golden()[name + "/in" + std::to_string(i + 1)]);
  ASSERT_FALSE(golden().has(name + "/in" + std::to_string(params.size() + 1))) << name << ": more parameters in PyTorch";
  const Module::LoadReport report = m.load_state_dict(state, false);  // parameters only: BN buffers keep their init
  EXPECT_TRUE(report.unexpected.empty() && report.mismatched.empty()) << report.str();
  m.zero_grad();
  Tensor x = golden()[name + "/in0"].to(dtype).clone().set_requires_grad();
  const Tensor y = run(x);
  EXPECT_TRUE(retort::testing::close_to(name + "/out", y, golden()[name + "/out"], atol, rtol));
  y.backward(golden()[name + "/upstream"].to(dtype));
  EXPECT_TRUE(retort::testing::close_to(name + "/grad_in0", x.grad(), golden()[name + "/grad_in0"], atol, rtol));
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string key = name + "/grad_in" + std::to_string(i + 1);
    if (!golden().has(key)) {  // unused by this output (the decoder for the factor): no gradient in either
      EXPECT_FALSE(params[i].second.grad().defined()) << key;
      continue;
    }
    ASSERT_TRUE(params[i].second.grad().defined()) << key;
    EXPECT_TRUE(retort::testing::close_to(key + " (" + params[i].first + ")", params[i].second.grad(), golden()[key],
                                          atol, rtol));
  }
}

}  // namespace

TEST_P(GoldenZoo, FactorTransferModules) {
  Generator gen(11);
  Paraphraser para(6, 0.5, false, gen);
  check_module_case("paraphraser_reconstruction", para, [&](const Tensor& x) { return para(x); }, GetParam());
  check_module_case("paraphraser_factor", para, [&](const Tensor& x) { return para.factor(x); }, GetParam());
  Translator tr(4, 3, true, gen);  // training mode: BN with batch statistics, as the golden
  check_module_case("translator", tr, [&](const Tensor& x) { return tr(x); }, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GoldenZoo, ::testing::Values(DType::F64, DType::F32),
                         [](const auto& info) { return std::string(info.param == DType::F64 ? "f64" : "f32"); });
