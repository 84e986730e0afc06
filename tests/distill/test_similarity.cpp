// distill/similarity.h: minibatch linear CKA against the reference formula (PyTorch fixtures from
// tools/gen_golden_similarity.py), its invariances, the default taps of each family, and two networks
// compared end to end on a loader.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "data/loader.h"
#include "distill/similarity.h"
#include "engine/functions.h"
#include "models/registry.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::expect_error;
using retort::testing::GoldenFile;

namespace {

double scalar(const Tensor& t) { return t.to_vector().at(0); }

double cka_of(const std::vector<std::pair<Tensor, Tensor>>& batches) {
  CkaAccumulator acc(1, 1);
  for (const auto& [x, y] : batches) acc.add({gram_stats(x)}, {gram_stats(y)});
  return acc.cka()[0][0];
}

}  // namespace

TEST(GoldenSimilarity, MinibatchCkaMatchesTheReferenceFormula) {
  const GoldenFile g("golden_similarity.safetensors");
  for (const std::string c : {"related", "unrelated", "rank_one"}) {
    SCOPED_TRACE(c);
    std::vector<std::pair<Tensor, Tensor>> f64, f32;
    for (int b = 0; g.has(c + "/x" + std::to_string(b)); ++b) {
      const std::string s = std::to_string(b);
      const Tensor x = g[c + "/x" + s], y = g[c + "/y" + s];
      const GramStats kx = gram_stats(x), ky = gram_stats(y);
      EXPECT_NEAR(unbiased_hsic(kx, ky), scalar(g[c + "/hsic_xy" + s]), 1e-11 * std::abs(scalar(g[c + "/hsic_xy" + s])) + 1e-12);
      EXPECT_NEAR(unbiased_hsic(kx, kx), scalar(g[c + "/hsic_xx" + s]), 1e-11 * scalar(g[c + "/hsic_xx" + s]));
      EXPECT_NEAR(unbiased_hsic(ky, ky), scalar(g[c + "/hsic_yy" + s]), 1e-11 * scalar(g[c + "/hsic_yy" + s]));
      f64.emplace_back(x, y);
      f32.emplace_back(x.to(DType::F32), y.to(DType::F32));
    }
    ASSERT_GE(f64.size(), 1u);
    const double want = scalar(g[c + "/cka"]);
    EXPECT_NEAR(cka_of(f64), want, 1e-12);
    EXPECT_NEAR(cka_of(f32), want, 1e-5);  // F32 features, Gram formed in F64
  }
}

TEST(Similarity, CkaIsOneForTheSameRepresentationUpToRotationScaleAndShift) {
  Generator gen(3);
  const Tensor x = Tensor::randn({20, 6}, gen, DType::F64);
  // An orthogonal Q: a Householder reflection I - 2 v vᵀ / vᵀv.
  const std::vector<double> v = Tensor::randn({6}, gen, DType::F64).to_vector();
  double vv = 0;
  for (double e : v) vv += e * e;
  std::vector<double> qv(36);
  for (size_t i = 0; i < 6; ++i)
    for (size_t j = 0; j < 6; ++j) qv[i * 6 + j] = (i == j ? 1.0 : 0.0) - 2 * v[i] * v[j] / vv;
  const Tensor q = Tensor::from_vector(qv, {6, 6}, DType::F64);
  const Tensor y = add(mul(matmul(x, q), Tensor::scalar(-3.5, DType::F64)), Tensor::scalar(7.0, DType::F64));
  EXPECT_NEAR(cka_of({{x, x}}), 1.0, 1e-12);
  EXPECT_NEAR(cka_of({{x, y}}), 1.0, 1e-12);
  // A different representation of the same samples is not 1.
  const Tensor z = Tensor::randn({20, 6}, gen, DType::F64);
  EXPECT_LT(std::abs(cka_of({{x, z}})), 0.5);
}

TEST(Similarity, SmallBatchesAreSkippedAndConstantFeaturesGiveNaN) {
  Generator gen(4);
  CkaAccumulator acc(1, 2);
  const Tensor x = Tensor::randn({3, 5}, gen, DType::F64), y = Tensor::randn({3, 5}, gen, DType::F64);
  acc.add({gram_stats(x)}, {gram_stats(y), gram_stats(x)});
  EXPECT_EQ(acc.samples_used(), 0);
  EXPECT_EQ(acc.samples_skipped(), 3);
  EXPECT_TRUE(std::isnan(acc.cka()[0][0]));  // nothing measured
  const Tensor a = Tensor::randn({8, 5}, gen, DType::F64);
  acc.add({gram_stats(a)}, {gram_stats(Tensor::zeros({8, 5}, DType::F64)), gram_stats(a)});
  EXPECT_EQ(acc.samples_used(), 8);
  EXPECT_TRUE(std::isnan(acc.cka()[0][0]));  // a constant (dead) feature: HSIC(L, L) = 0
  EXPECT_NEAR(acc.cka()[0][1], 1.0, 1e-12);
  expect_error([&] { acc.add({gram_stats(a)}, {gram_stats(a)}); }, {"1 x 1 Gram matrices for a 1 x 2"});
  expect_error([&] { acc.add({gram_stats(a)}, {gram_stats(x), gram_stats(a)}); }, {"differ in size (3 and 8)"});
  expect_error([] { gram_stats(Tensor::from_int64({1, 2}, {2})); }, {"F32 or F64", "i64"});
}

TEST(Similarity, DefaultTapsAreTheStagesThenPooledAndLogits) {
  Generator gen(0);
  const ModelOptions mo{10, 1, 28};
  auto taps = [&](const std::string& arch) { return default_similarity_taps(*create_model(arch, mo, gen)); };
  using V = std::vector<std::string>;
  EXPECT_EQ(taps("resnet8"), (V{"layer1", "layer2", "layer3", ":pooled", "logits"}));
  EXPECT_EQ(taps("wrn_16_2"), (V{"block1", "block2", "block3", ":pooled", "logits"}));
  EXPECT_EQ(taps("ResNet50"), (V{"layer1", "layer2", "layer3", "layer4", ":pooled", "logits"}));
  EXPECT_EQ(taps("vgg8"), (V{"block1", "block2", "block3", "block4", ":pooled", "logits"}));  // block0: the stem
  EXPECT_EQ(taps("MobileNetV2"), (V{"blocks.1", "blocks.2", "blocks.4", "blocks.6", ":pooled", "logits"}));
  EXPECT_EQ(taps("ShuffleV1"), (V{"layer1", "layer2", "layer3", ":pooled", "logits"}));
  EXPECT_EQ(taps("ShuffleV2"), (V{"layer1", "layer2", "layer3", ":pooled", "logits"}));
}

TEST(Similarity, TwoNetworksOnALoader) {
  const ModelOptions mo{4, 1, 12};
  Generator g1(1), g2(1), g3(2);
  auto a = create_model("resnet8", mo, g1), same = create_model("resnet8", mo, g2), other = create_model("resnet8", mo, g3);
  // 22 samples in batches of 8: 8, 8, 6 — all used.
  auto ds = std::make_shared<SyntheticDataset>(22, Shape{1, 12, 12}, 4, 7);
  DataLoader loader(ds, LoaderOptions{8, false, false, 0, 0});
  const std::vector<std::string> taps = default_similarity_taps(*a);
  const SimilarityResult r = representation_similarity(*a, taps, *same, taps, loader);
  EXPECT_EQ(r.samples, 22);
  EXPECT_EQ(r.samples_skipped, 0);
  ASSERT_EQ(r.cka.size(), taps.size());
  for (size_t i = 0; i < taps.size(); ++i) {
    ASSERT_EQ(r.cka[i].size(), taps.size());
    EXPECT_NEAR(r.cka[i][i], 1.0, 1e-9) << taps[i];  // the same weights: identical features
  }
  // A network with other weights: the same input's stem-near features stay alike, the rest less so;
  // every value a CKA. The matrix is not symmetric in general, but its diagonal is.
  const SimilarityResult o = representation_similarity(*a, {"layer1", "logits"}, *other, {"layer1", "layer3", "logits"}, loader);
  ASSERT_EQ(o.cka.size(), 2u);
  ASSERT_EQ(o.cka[0].size(), 3u);
  for (const auto& row : o.cka)
    for (double c : row) {
      EXPECT_LT(c, 1.0 - 1e-6);
      EXPECT_GT(c, -1.0);
    }
  // Taps are removed afterwards, also after a bad spec; the networks keep their modes.
  a->train();
  expect_error([&] { representation_similarity(*a, {"layer1"}, *other, {"layer9"}, loader); },
               {"other tap \"layer9\""});
  EXPECT_TRUE(a->is_training());
  const SimilarityResult again = representation_similarity(*a, {"layer1"}, *same, {"layer1"}, loader);
  EXPECT_NEAR(again.cka[0][0], 1.0, 1e-9);
  EXPECT_TRUE(a->is_training());
}
