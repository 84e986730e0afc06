// MTKD-SSR's stage-wise nodes (distill/nodes/stage.h) and its auxiliary classifier (connectors.h):
// the review's pairs, stop-gradient on every target (a teacher stage's logits never get a gradient
// from the loss they teach in), values equal to the kd_loss sums they are defined as, the channel
// distillation against hand-computed channel means, the classifier's blocks and shapes, and errors.
#include <gtest/gtest.h>

#include <cmath>

#include "distill/connectors.h"
#include "distill/nodes/logit.h"
#include "distill/nodes/stage.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::close_to;
using retort::testing::expect_error;

namespace {
Tensor leaf(Generator& g, const Shape& s, double std = 1.0) {
  return Tensor::randn(s, g, DType::F64, 0.0, std).set_requires_grad();
}
using Pairs = std::vector<std::pair<int, int>>;
}  // namespace

TEST(ReviewPairs, DeepTeachesShallowByDefaultAdjacentAndReversed) {
  EXPECT_EQ(review_pairs(3, false, true), (Pairs{{0, 1}, {0, 2}, {1, 2}}));
  EXPECT_EQ(review_pairs(3, true, true), (Pairs{{0, 1}, {1, 2}}));
  EXPECT_EQ(review_pairs(3, false, false), (Pairs{{1, 0}, {2, 0}, {2, 1}}));
  EXPECT_EQ(review_pairs(4, true, false), (Pairs{{1, 0}, {2, 1}, {3, 2}}));
  EXPECT_TRUE(review_pairs(1, false, true).empty());
  expect_error([] { review_pairs(0, false, true); }, {"review_pairs", "got 0"});
}

// The student's own stage logits as learners and teachers (MTKD-SSR passes the list twice): the value is
// the sum of the pairs' KD losses and each stage's gradient is only its share as a learner, so the
// deepest stage — a teacher in every pair — gets none.
TEST(CrossStageReview, SumsPairKDAndStopsGradientAtTheTeachers) {
  Generator g(3);
  std::vector<Tensor> z = {leaf(g, {5, 7}, 2.0), leaf(g, {5, 7}, 2.0), leaf(g, {5, 7}, 2.0)};
  const Pairs pairs = review_pairs(3, false, true);
  const Tensor l = cross_stage_review_loss(z, z, pairs, 4.0);
  double want = 0;
  for (auto [j, k] : pairs) want += kd_loss(z[j].detach(), z[k].detach(), 4.0).item();
  EXPECT_NEAR(l.item(), want, 1e-12);
  l.backward();
  EXPECT_FALSE(z[2].grad().defined()) << "the deepest stage teaches in every pair; it must get no gradient";
  // Stage 0 learns from stages 1 and 2: its gradient is the sum of two KD student gradients.
  std::vector<Tensor> z0 = {z[0].detach().clone().set_requires_grad()};
  add(kd_loss(z0[0], z[1].detach(), 4.0), kd_loss(z0[0], z[2].detach(), 4.0)).backward();
  EXPECT_TRUE(close_to("stage 0 gradient", z[0].grad(), z0[0].grad(), 1e-14, 1e-12));

  expect_error([&] { cross_stage_review_loss({z[0]}, {z[0]}, review_pairs(1, false, true), 4.0); },
               {"cross_stage_review_loss", "at least two stages", "got 1"});
  expect_error([&] { cross_stage_review_loss(z, {z[0], z[1]}, pairs, 4.0); },
               {"cross_stage_review_loss", "3 learner logits for 2 teacher logits"});
  expect_error([&] { cross_stage_review_loss(z, z, Pairs{{0, 3}}, 4.0); }, {"pair (0, 3)", "of 3"});
}

TEST(StageResponse, SumsStageKDAndNeverTrainsTheTeacherHeads) {
  Generator g(4);
  std::vector<Tensor> zs = {leaf(g, {4, 6}), leaf(g, {4, 6})}, zt = {leaf(g, {4, 6}), leaf(g, {4, 6})};
  const Tensor l = stage_response_loss(zs, zt, 2.0);
  EXPECT_NEAR(l.item(),
              kd_loss(zs[0].detach(), zt[0].detach(), 2.0).item() + kd_loss(zs[1].detach(), zt[1].detach(), 2.0).item(),
              1e-12);
  l.backward();
  EXPECT_TRUE(zs[0].grad().defined() && zs[1].grad().defined());
  EXPECT_FALSE(zt[0].grad().defined() || zt[1].grad().defined()) << "a teacher head got a gradient from SRD";
  expect_error([&] { stage_response_loss(zs, {zt[0]}, 2.0); }, {"stage_response_loss", "2 student", "1 teacher"});
}

TEST(ChannelDistill, IsTheMSEOfChannelMeans) {
  Generator g(5);
  const Tensor fs = leaf(g, {2, 3, 4, 4}), ft = leaf(g, {2, 3, 2, 2});
  double want = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 3; ++c) {
      double ms = 0, mt = 0;
      for (int64_t i = 0; i < 16; ++i) ms += fs.data<double>()[(b * 3 + c) * 16 + i] / 16;
      for (int64_t i = 0; i < 4; ++i) mt += ft.data<double>()[(b * 3 + c) * 4 + i] / 4;
      want += (ms - mt) * (ms - mt) / 6;
    }
  EXPECT_NEAR(channel_distill_loss(fs, ft).item(), want, 1e-14);
  expect_error([&] { channel_distill_loss(fs, Tensor::zeros({2, 4, 2, 2}, DType::F64)); },
               {"channel_distill_loss", "f64[2, 3, 4, 4]", "f64[2, 4, 2, 2]", "adapter"});
}

TEST(AuxClassifier, StridedBlocksToTheFinalStageThenPoolAndLinear) {
  Generator g(6);
  // resnet8x4's layer1 [N, 64, 32, 32] -> layer3's 256 x 8 x 8: two stride-2 blocks, 64 -> 128 -> 256.
  AuxClassifier head({2, 64, 32, 32}, 256, 8, 8, 10, g);
  EXPECT_EQ(head.num_blocks(), 2);
  std::vector<std::string> names;
  for (auto& [n, p] : head.named_parameters()) names.push_back(n + shape_str(p.shape()));
  EXPECT_EQ(names, (std::vector<std::string>{"features.0.weight[128, 64, 3, 3]", "features.1.weight[128]",
                                             "features.1.bias[128]", "features.3.weight[256, 128, 3, 3]",
                                             "features.4.weight[256]", "features.4.bias[256]", "fc.weight[10, 256]",
                                             "fc.bias[10]"}));
  EXPECT_EQ(head(Tensor::randn({3, 64, 32, 32}, g)).shape(), (Shape{3, 10}));
  // A stage already at the final resolution gets one stride-1 block.
  AuxClassifier same({2, 32, 8, 8}, 64, 8, 8, 5, g);
  EXPECT_EQ(same.num_blocks(), 1);
  EXPECT_EQ(same(Tensor::randn({2, 32, 8, 8}, g)).shape(), (Shape{2, 5}));
  expect_error([&] { AuxClassifier({2, 16, 12, 12}, 64, 8, 8, 10, g); }, {"AuxClassifier", "[2, 16, 12, 12]", "8x8"});
  expect_error([&] { AuxClassifier({2, 16, 16, 8}, 64, 8, 8, 10, g); }, {"AuxClassifier", "[2, 16, 16, 8]"});
}
