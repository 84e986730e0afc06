// Relation distillation nodes (SP, PKT, RKD; distill/nodes/relation.h): values computed by hand, the
// invariances each relation is built to have (scale for SP; per-sample scale for PKT; scale,
// translation and rotation for RKD), zero loss for equal relations, the graph's node names, errors,
// and golden values from RepDistiller's code in PyTorch (tools/gen_golden_distill_relation.py) in f64
// and f32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

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

bool has_node(const Tensor& t, const std::string& name) {
  const auto names = graph_node_names(t);
  return std::find(names.begin(), names.end(), name) != names.end();
}

// A random rotation of R^d (Gram-Schmidt of a Gaussian matrix), [d, d].
Tensor rotation(int64_t d, Generator& g) {
  std::vector<std::vector<double>> q;
  while (static_cast<int64_t>(q.size()) < d) {
    std::vector<double> v(static_cast<size_t>(d));
    for (double& x : v) x = g.normal();
    for (const auto& u : q) {
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += v[i] * u[i];
      for (int64_t i = 0; i < d; ++i) v[i] -= dot * u[i];
    }
    double n = 0;
    for (double x : v) n += x * x;
    for (double& x : v) x /= std::sqrt(n);
    q.push_back(v);
  }
  std::vector<double> flat;
  for (const auto& u : q) flat.insert(flat.end(), u.begin(), u.end());
  return Tensor::from_vector(flat, {d, d}, DType::F64);
}

}  // namespace

TEST(SimilarityMatrix, MatchesHandComputedRowNormalisedGram) {
  Generator gen(1);
  const Tensor f = randn({3, 2, 1, 2}, gen);  // flattened per sample to [3, 4]
  const Tensor g = similarity_matrix(f);
  ASSERT_EQ(g.shape(), (Shape{3, 3}));
  for (int64_t i = 0; i < 3; ++i) {
    double row[3], norm = 0;
    for (int64_t j = 0; j < 3; ++j) {
      row[j] = 0;
      for (int64_t k = 0; k < 4; ++k) row[j] += f.at(i * 4 + k) * f.at(j * 4 + k);
      norm += row[j] * row[j];
    }
    for (int64_t j = 0; j < 3; ++j) EXPECT_NEAR(g.at(i * 3 + j), row[j] / std::sqrt(norm), 1e-14);
  }
}

TEST(SpLoss, ZeroForEqualFeaturesInvariantToScaleAndRotation) {
  Generator gen(2);
  const Tensor fs = randn({5, 6}, gen), ft = randn({5, 3}, gen);
  const double base = sp_loss(fs, ft).item();
  ASSERT_GT(base, 1e-3);
  EXPECT_EQ(sp_loss(fs, fs).item(), 0.0);
  EXPECT_NEAR(sp_loss(affine(fs, 7.5, 0.0), ft).item(), base, 1e-12 * base);
  EXPECT_NEAR(sp_loss(matmul(fs, rotation(6, gen)), ft).item(), base, 1e-12 * base);
  // mse of the two matrices: the mean over the B² entries.
  const Tensor d = sub(similarity_matrix(fs), similarity_matrix(ft));
  EXPECT_NEAR(base, sum(mul(d, d)).item() / 25.0, 1e-15);
}

TEST(PktProbabilities, RowsAreHandComputedDistributions) {
  Generator gen(3);
  const Tensor f = randn({4, 3}, gen);
  const Tensor p = pkt_probabilities(f);
  ASSERT_EQ(p.shape(), (Shape{4, 4}));
  auto unit = [&](int64_t i, int64_t k) {
    double n = 0;
    for (int64_t c = 0; c < 3; ++c) n += f.at(i * 3 + c) * f.at(i * 3 + c);
    return f.at(i * 3 + k) / (std::sqrt(n) + 1e-7);
  };
  for (int64_t i = 0; i < 4; ++i) {
    double s[4], total = 0;
    for (int64_t j = 0; j < 4; ++j) {
      double c = 0;
      for (int64_t k = 0; k < 3; ++k) c += unit(i, k) * unit(j, k);
      s[j] = (c + 1) / 2, total += s[j];
    }
    for (int64_t j = 0; j < 4; ++j) EXPECT_NEAR(p.at(i * 4 + j), s[j] / total, 1e-14);
  }
}

TEST(PktLoss, ZeroForEqualFeaturesInvariantToPerSampleScale) {
  Generator gen(4);
  const Tensor fs = randn({5, 4}, gen), ft = randn({5, 7}, gen);
  const double base = pkt_loss(fs, ft).item();
  ASSERT_GT(base, 1e-4);
  EXPECT_EQ(pkt_loss(fs, fs).item(), 0.0);
  // Cosines do not see a positive scale per sample (up to the 1e-7 added to the norm).
  const Tensor scales = Tensor::from_vector({0.5, 3.0, 10.0, 1.0, 2.5}, {5, 1}, DType::F64);
  EXPECT_NEAR(pkt_loss(mul(fs, scales), ft).item(), base, 1e-6 * base);
  EXPECT_GT(std::abs(pkt_loss(add(fs, Tensor::scalar(1.0, DType::F64)), ft).item() - base), 1e-3 * base);  // not shift
}

TEST(RkdDistances, HandComputedAndNormalisedByTheOffDiagonalMean) {
  // Three points on a line at 0, 1, 3: distances 1, 3, 2 (each twice), mean 2.
  const Tensor f = Tensor::from_vector({0, 0, 1, 0, 3, 0}, {3, 2}, DType::F64);
  const std::vector<double> want{0, 0.5, 1.5, 0.5, 0, 1, 1.5, 1, 0};
  const std::vector<double> got = rkd_distances(f).to_vector();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-7) << i;  // sqrt(1e-12) floors
}

TEST(RkdAngles, RightAngleAndDiagonalZeros) {
  // Anchor 0 at the origin, 1 on the x axis, 2 on the y axis: e_01 ⟂ e_02.
  const Tensor f = Tensor::from_vector({0, 0, 2, 0, 0, 5}, {3, 2}, DType::F64);
  const Tensor a = rkd_angles(f);
  ASSERT_EQ(a.shape(), (Shape{3, 3, 3}));
  auto at = [&](int64_t i, int64_t j, int64_t k) { return a.at((i * 3 + j) * 3 + k); };
  EXPECT_NEAR(at(0, 1, 2), 0.0, 1e-15);
  EXPECT_NEAR(at(0, 1, 1), 1.0, 1e-15);
  // At anchor 1: e_10 = (−1, 0), e_12 = (−2, 5)/√29: cos = 2/√29.
  EXPECT_NEAR(at(1, 0, 2), 2.0 / std::sqrt(29.0), 1e-15);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j) {
      EXPECT_EQ(at(i, i, j), 0.0);
      EXPECT_EQ(at(i, j, i), 0.0);
    }
}

TEST(RkdLoss, InvariantToScaleTranslationAndRotationOfEitherSide) {
  Generator gen(5);
  const Tensor fs = randn({6, 4}, gen), ft = randn({6, 3}, gen);
  const double base = rkd_loss(fs, ft).item();
  ASSERT_GT(base, 1e-2);
  const Tensor shift = randn({1, 4}, gen);
  const Tensor moved = add(affine(matmul(fs, rotation(4, gen)), 3.0, 0.0), shift);
  EXPECT_NEAR(rkd_loss(moved, ft).item(), base, 1e-10 * base);
  EXPECT_NEAR(rkd_loss(fs, fs).item(), 0.0, 1e-14);
  // The two parts add with their weights.
  EXPECT_NEAR(base, rkd_loss(fs, ft, 25.0, 0.0).item() + rkd_loss(fs, ft, 0.0, 50.0).item(), 1e-12 * base);
}

TEST(RkdLoss, DuplicateSamplesGetFiniteGradients) {
  // Two identical student embeddings: their pair's direction is undefined; it gets no gradient
  // (relation.h) instead of 1e12 × the upstream.
  Generator gen(6);
  Tensor fs = Tensor::from_vector({1, 2, 1, 2, 0, 1, 3, -1}, {4, 2}, DType::F64).set_requires_grad();
  const Tensor ft = randn({4, 3}, gen);
  rkd_loss(fs, ft).backward();
  for (double v : fs.grad().to_vector()) {
    EXPECT_TRUE(std::isfinite(v));
    EXPECT_LT(std::abs(v), 1e3);
  }
}

TEST(RelationNodes, ASingleSampleBatchHasZeroLossAndGradient) {
  Generator gen(9);
  Tensor fs = randn({1, 3, 2, 2}, gen).set_requires_grad();
  const Tensor ft = randn({1, 5}, gen);
  for (const Tensor& l : {sp_loss(fs, ft), pkt_loss(fs, ft), rkd_loss(fs, ft)}) {
    EXPECT_EQ(l.item(), 0.0);
    fs.zero_grad();
    l.backward();
    for (double v : fs.grad().to_vector()) EXPECT_EQ(v, 0.0);
  }
}

TEST(RelationNodes, AgreementIsTheCorrelationOffTheDiagonal) {
  // Off the diagonal the student's entries are 2x + 1 of the teacher's: r = 1; the diagonal differs and
  // must not count.
  const Tensor t = Tensor::from_vector({9, 1, 2, 3, -9, 5, 4, 7, 9}, {3, 3}, DType::F64);
  const Tensor s = Tensor::from_vector({0, 3, 5, 7, 0, 11, 9, 15, 0}, {3, 3}, DType::F64);
  EXPECT_EQ(relation_agreement(s, t), "r 1.000 over 6 pairs");
  EXPECT_EQ(relation_agreement(neg(s), t), "r -1.000 over 6 pairs");
  Generator gen(10);
  const Tensor f = randn({4, 3}, gen);
  EXPECT_EQ(relation_agreement(rkd_angles(f), rkd_angles(f)), "r 1.000 over 24 triplets");  // 4·3·2
  expect_error([&] { relation_agreement(s, randn({3, 4}, gen)); }, {"relation_agreement", "f64[3, 3]", "f64[3, 4]"});
}

TEST(RelationNodes, GraphShowsOneNodePerRelationMap) {
  Generator gen(7);
  const Tensor fs = randn({4, 3}, gen).set_requires_grad(), ft = randn({4, 5}, gen);
  EXPECT_TRUE(has_node(sp_loss(fs, ft), "SimilarityMatrixBackward"));
  EXPECT_TRUE(has_node(sp_loss(fs, ft), "MseLossBackward"));
  EXPECT_TRUE(has_node(pkt_loss(fs, ft), "PKTProbabilitiesBackward"));
  const Tensor r = rkd_loss(fs, ft);
  EXPECT_TRUE(has_node(r, "RKDDistancesBackward"));
  EXPECT_TRUE(has_node(r, "RKDAnglesBackward"));
  EXPECT_TRUE(has_node(r, "SmoothL1LossBackward"));
  EXPECT_FALSE(has_node(rkd_loss(fs, ft, 1.0, 0.0), "RKDAnglesBackward"));
}

TEST(RelationNodes, Errors) {
  Generator gen(8);
  const Tensor a = randn({4, 3}, gen);
  expect_error([&] { similarity_matrix(randn({1, 3}, gen)); }, {"similarity_matrix", "at least 2 samples"});
  expect_error([&] { pkt_loss(a, randn({5, 3}, gen)); }, {"pkt_loss", "same batch size", "f64[4, 3]", "f64[5, 3]"});
  expect_error([&] { rkd_loss(a, randn({4, 3}, gen, DType::F32)); }, {"rkd_loss"});
  expect_error([&] { rkd_distances(randn({4}, gen)); }, {"rkd_distances", "at least 2 dimensions"});
  expect_error([&] { rkd_loss(a, a, 0.0, 0.0); }, {"rkd_loss", "not both 0"});
  expect_error([&] { rkd_loss(a, a, -1.0, 1.0); }, {"rkd_loss", ">= 0"});
  expect_error([&] { rkd_angles(Tensor::from_int64({1, 2, 3, 4}, {2, 2})); }, {"rkd_angles"});
}

// ---- golden values (PyTorch, RepDistiller's code) --------------------------------------------------

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_distill_relation.safetensors");
  return g;
}

void check_case(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& fn, DType dtype) {
  retort::testing::check_golden_case(golden(), name, fn, dtype);
}

class GoldenRelation : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(GoldenRelation, SimilarityPreserving) {
  for (const char* c : {"sp_maps", "sp_embeddings"})
    check_case(c, [](const auto& in) { return sp_loss(in[0], in[1]); }, GetParam());
}

TEST_P(GoldenRelation, ProbabilisticKnowledgeTransfer) {
  for (const char* c : {"pkt_pooled", "pkt_signed"})
    check_case(c, [](const auto& in) { return pkt_loss(in[0], in[1]); }, GetParam());
}

TEST_P(GoldenRelation, RelationalKnowledgeDistillation) {
  for (const char* c : {"rkd_defaults", "rkd_maps"})
    check_case(c, [](const auto& in) { return rkd_loss(in[0], in[1]); }, GetParam());
  check_case("rkd_distance_only", [](const auto& in) { return rkd_loss(in[0], in[1], 1.0, 0.0); }, GetParam());
  check_case("rkd_angle_only", [](const auto& in) { return rkd_loss(in[0], in[1], 0.0, 1.0); }, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GoldenRelation, ::testing::Values(DType::F64, DType::F32),
                         [](const auto& info) { return std::string(info.param == DType::F64 ? "f64" : "f32"); });
