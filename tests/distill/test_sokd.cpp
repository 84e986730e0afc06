// SoKD (distill/nodes/sokd.h, distill/strategies/sokd.h): the feature ops against what they are
// defined to do (identity at magnitude 0.5, an exact integer translation, the cutout box, dropped and
// permuted channels, the noise's spread), the DAM regions on a hand-built example, the masked loss, the
// DAM module, and the strategy: it trains, its policy gets straight-through gradients and an Adam step
// only while searching, and its sampling is a function of the step (so a resumed run draws the same).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "distill/distiller.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/logit.h"
#include "distill/nodes/relax.h"
#include "distill/nodes/sokd.h"
#include "distill/strategies/sokd.h"
#include "distill/trainer.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/functions.h"
#include "models/registry.h"
#include "tests/common/distill_fixtures.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::close_to;
using retort::testing::expect_error;

namespace {
Tensor feature(Generator& g, const Shape& s) { return Tensor::randn(s, g, DType::F64); }
double at(const Tensor& t, int64_t i) { return t.data<double>()[i]; }
}  // namespace

TEST(FeatureOps, SymmetricOpsAreTheIdentityAtMagnitudeHalf) {
  Generator g(1);
  const Tensor f = feature(g, {2, 3, 6, 5});
  for (FeatureOp op : {FeatureOp::ShearX, FeatureOp::ShearY, FeatureOp::TranslateX, FeatureOp::TranslateY,
                       FeatureOp::Rotate}) {
    EXPECT_EQ(feature_op_value(op, 0.5), 0.0) << feature_op_name(op);
    EXPECT_TRUE(close_to(feature_op_name(op), apply_feature_op(f, op, 0.0, g), f, 1e-12, 1e-12));
  }
  EXPECT_DOUBLE_EQ(feature_op_value(FeatureOp::Rotate, 1.0), 30.0);
  EXPECT_DOUBLE_EQ(feature_op_value(FeatureOp::Cutout, 2.0), 0.2);  // magnitudes are clamped to [0, 1]
  EXPECT_DOUBLE_EQ(feature_op_value(FeatureOp::TranslateY, -1.0), -0.45);
}

TEST(FeatureOps, TranslateXShiftsByValueTimesWidth) {
  Generator g(2);
  const Tensor f = feature(g, {1, 2, 3, 8});
  const Tensor out = apply_feature_op(f, FeatureOp::TranslateX, 0.25, g);  // 0.25 * 8 = 2 pixels
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 8; ++x) {
        const int64_t i = (c * 3 + y) * 8 + x;
        const double want = x + 2 < 8 ? at(f, i + 2) : 0.0;
        EXPECT_NEAR(at(out, i), want, 1e-12) << "c " << c << " y " << y << " x " << x;
      }
}

TEST(FeatureOps, CutoutDropAndShuffleActOnWholePlanesOrOneBoxForTheBatch) {
  Generator g(3);
  const Tensor f = add(feature(g, {3, 4, 10, 10}), Tensor::scalar(100.0, DType::F64));  // no value is 0
  // Cutout at v = 0.2: one 2x2 box (inside, or clipped at a border), the same in every sample and channel.
  const Tensor cut = apply_feature_op(f, FeatureOp::Cutout, 0.2, g);
  std::set<int64_t> zeros0;
  for (int64_t p = 0; p < 100; ++p)
    if (at(cut, p) == 0.0) zeros0.insert(p);
  EXPECT_GE(zeros0.size(), 1u);
  EXPECT_LE(zeros0.size(), 4u);
  for (int64_t nc = 0; nc < 12; ++nc)
    for (int64_t p = 0; p < 100; ++p)
      EXPECT_EQ(at(cut, nc * 100 + p) == 0.0, zeros0.count(p) == 1) << "sample-channel " << nc << " position " << p;
  // ChannelDrop at v = 0.5: whole channels zeroed, the same ones in every sample, the rest unscaled.
  const Tensor drop = apply_feature_op(f, FeatureOp::ChannelDrop, 0.5, g);
  for (int64_t c = 0; c < 4; ++c) {
    const bool dropped = at(drop, c * 100) == 0.0;
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t p = 0; p < 100; ++p) {
        const int64_t i = (n * 4 + c) * 100 + p;
        EXPECT_EQ(at(drop, i), dropped ? 0.0 : at(f, i));
      }
  }
  // ChannelShuffle: every output channel is a distinct input channel, one permutation for the batch.
  const Tensor sh = apply_feature_op(f, FeatureOp::ChannelShuffle, 0.0, g);
  std::set<int64_t> sources;
  for (int64_t c = 0; c < 4; ++c) {
    int64_t src = -1;
    for (int64_t s = 0; s < 4; ++s)
      if (at(sh, c * 100) == at(f, s * 100) && at(sh, c * 100 + 57) == at(f, s * 100 + 57)) src = s;
    ASSERT_GE(src, 0) << "output channel " << c << " is no input channel";
    sources.insert(src);
    for (int64_t n = 0; n < 3; ++n) EXPECT_EQ(at(sh, (n * 4 + c) * 100 + 31), at(f, (n * 4 + src) * 100 + 31));
  }
  EXPECT_EQ(sources.size(), 4u);
  expect_error([&] { permute_channels(f, {0, 1, 1, 2}); }, {"permute_channels", "not a permutation"});
  expect_error([&] { permute_channels(f, {0, 1}); }, {"permute_channels", "4 channels", "2 entries"});
}

TEST(FeatureOps, NoiseHasTheValueAsItsStandardDeviation) {
  Generator g(4);
  const Tensor f = feature(g, {4, 8, 16, 16});
  const Tensor d = sub(apply_feature_op(f, FeatureOp::Noise, 0.1, g), f);
  double m = 0, s = 0;
  const int64_t n = d.numel();
  for (int64_t i = 0; i < n; ++i) m += at(d, i) / n;
  for (int64_t i = 0; i < n; ++i) s += (at(d, i) - m) * (at(d, i) - m) / (n - 1);
  EXPECT_NEAR(m, 0.0, 0.005);
  EXPECT_NEAR(std::sqrt(s), 0.1, 0.003);
}

// Channel 0 peaks at (y 1, x 1) with a higher-than-background neighbour at (1, 2) that local-maximum
// suppression removes; channel 1 peaks at (3, 3). With k = 2 those two peaks are the regions.
TEST(SokdNodes, StraightThroughMagnitudeGetsTheUpstreamSum) {
  Generator g(9);
  const Tensor f = feature(g, {2, 3, 4, 4}).set_requires_grad(), s = Tensor::scalar(0.4, DType::F64).set_requires_grad();
  const Tensor up = feature(g, {2, 3, 4, 4});
  const Tensor out = straight_through_magnitude(f, s);
  EXPECT_TRUE(close_to("value", out, f.detach(), 0, 0));
  out.backward(up);
  EXPECT_NEAR(s.grad().item(), sum(up).item(), 1e-12);
  EXPECT_TRUE(close_to("feature gradient", f.grad(), up, 0, 0));
}

TEST(DamRegions, LocalMaximaTopKAndInclusiveBoxesCountingOverlaps) {
  const int64_t h = 5, w = 5, hw = 25;
  std::vector<double> heat(2 * hw, 0.5), wh(2 * hw, 0.0), off(2 * hw, 0.0);
  heat[1 * w + 1] = 0.9;
  heat[1 * w + 2] = 0.85;
  heat[hw + 3 * w + 3] = 0.8;
  wh[1 * w + 1] = 2, wh[hw + 1 * w + 1] = 2, off[1 * w + 1] = 0.5;                  // centre (1.5, 1): box (0, 0)-(2, 2)
  wh[3 * w + 3] = 4, wh[hw + 3 * w + 3] = 2, off[hw + 3 * w + 3] = 0.6;             // centre (3, 3.6): (1, 2)-(4, 4)
  const DamRegions r = dam_regions(Tensor::from_vector(heat, {1, 2, h, w}, DType::F64),
                                   Tensor::from_vector(wh, {1, 2, h, w}, DType::F64),
                                   Tensor::from_vector(off, {1, 2, h, w}, DType::F64), 2);
  const int64_t* box = r.boxes.data<int64_t>();
  EXPECT_EQ((std::vector<int64_t>(box, box + 8)), (std::vector<int64_t>{0, 0, 2, 2, 1, 2, 4, 4}));
  EXPECT_EQ(r.classes.data<int64_t>()[0], 0);
  EXPECT_EQ(r.classes.data<int64_t>()[1], 1);
  EXPECT_DOUBLE_EQ(at(r.scores, 0), 0.9);
  EXPECT_DOUBLE_EQ(at(r.scores, 1), 0.8);
  double total = 0;
  for (int64_t i = 0; i < hw; ++i) total += at(r.mask, i);
  EXPECT_EQ(total, 9 + 12);
  EXPECT_EQ(at(r.mask, 2 * w + 1), 2.0);  // row 2, columns 1..2 are in both boxes
  EXPECT_EQ(at(r.mask, 2 * w + 0), 1.0);
  EXPECT_EQ(at(r.mask, 4 * w + 0), 0.0);
  expect_error([&] { dam_regions(reshape(r.mask, {1, 1, 5, 5}), Tensor::zeros({1, 2, 5, 5}, DType::F64),
                                 Tensor::zeros({1, 2, 5, 5}, DType::F64), 26); },
               {"dam_regions", "k = 26", "[1, 25]"});
  expect_error([&] { dam_regions(reshape(r.mask, {1, 1, 5, 5}), Tensor::zeros({1, 2, 4, 5}, DType::F64),
                                 Tensor::zeros({1, 2, 5, 5}, DType::F64), 2); },
               {"dam_regions", "f64[1, 2, 4, 5]", "[B, 2, H, W]"});
}

// Boxes clamp one side each, as the dev code's area_utils.py (docs/methods/sokd.md): a peak at the right
// edge whose offset pushes the centre past it starts after it ends, so the box is empty, and a sample
// whose boxes are all empty has an all-zero mask and a masked loss of 0.
TEST(DamRegions, ABoxPushedPastTheEdgeIsEmptyAndItsSamplesMaskIsZero) {
  const int64_t h = 5, w = 5, hw = 25;
  std::vector<double> heat(2 * hw, 0.5), wh(2 * hw, 2.0), off(2 * hw, 0.0);
  heat[2 * w + 4] = 0.9;  // peak at (y 2, x 4), the right edge
  off[2 * w + 4] = 3.0;   // centre x 7: x1 = 6, x2 = min(8, 4) = 4
  const DamRegions r = dam_regions(Tensor::from_vector(heat, {1, 2, h, w}, DType::F64),
                                   Tensor::from_vector(wh, {1, 2, h, w}, DType::F64),
                                   Tensor::from_vector(off, {1, 2, h, w}, DType::F64), 1);
  const int64_t* box = r.boxes.data<int64_t>();
  EXPECT_EQ((std::vector<int64_t>(box, box + 4)), (std::vector<int64_t>{6, 1, 4, 3}));
  for (int64_t i = 0; i < hw; ++i) EXPECT_EQ(at(r.mask, i), 0.0) << i;
  Generator gen(3);
  const Tensor fs = Tensor::randn({1, 2, h, w}, gen, DType::F64), ft = Tensor::randn({1, 2, h, w}, gen, DType::F64);
  EXPECT_EQ(masked_feature_mse(fs, ft, r.mask).item(), 0.0);
}

TEST(MaskedFeatureMse, IsTheMseOfMaskedMapsOverEveryElement) {
  Generator g(5);
  const Tensor fs = feature(g, {2, 3, 4, 4}), ft = feature(g, {2, 3, 4, 4});
  EXPECT_EQ(masked_feature_mse(fs, ft, Tensor::zeros({2, 4, 4}, DType::F64)).item(), 0.0);
  EXPECT_NEAR(masked_feature_mse(fs, ft, Tensor::ones({2, 4, 4}, DType::F64)).item(), mse_loss(fs, ft).item(), 1e-14);
  EXPECT_NEAR(masked_feature_mse(fs, ft, Tensor::full({2, 4, 4}, 2.0, DType::F64)).item(),
              4.0 * mse_loss(fs, ft).item(), 1e-13);
  expect_error([&] { masked_feature_mse(fs, ft, Tensor::ones({2, 4, 3}, DType::F64)); },
               {"masked_feature_mse", "[B, H, W]", "f64[2, 4, 3]"});
}

TEST(DistinctiveAreaDetector, HeadsNamesAndRanges) {
  Generator g(6);
  DistinctiveAreaDetector dam(8, 100, true, g);
  std::vector<std::string> names;
  for (auto& [n, p] : dam.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"heatmap_head.0.weight", "heatmap_head.0.bias", "heatmap_head.2.weight",
                                             "heatmap_head.2.bias", "wh_head.0.weight", "wh_head.0.bias",
                                             "wh_head.2.weight", "wh_head.2.bias", "offset_head.0.weight",
                                             "offset_head.0.bias", "offset_head.2.weight", "offset_head.2.bias"}));
  const auto o = dam.heads(Tensor::randn({2, 8, 6, 6}, g));
  EXPECT_EQ(o.heatmap.shape(), (Shape{2, 100, 6, 6}));
  EXPECT_EQ(dam(Tensor::randn({2, 8, 6, 6}, g)).shape(), (Shape{2, 104, 6, 6}));
  for (int64_t i = 0; i < o.heatmap.numel(); ++i) {
    ASSERT_GE(o.heatmap.data<float>()[i], 0.5f);  // sigmoid of a ReLU output
    ASSERT_LT(o.heatmap.data<float>()[i], 1.0f);
  }
  for (int64_t i = 0; i < o.wh.numel(); ++i) ASSERT_GE(o.wh.data<float>()[i], 0.0f);
}

namespace {

struct SokdRun {
  std::shared_ptr<Module> student, teacher;
  std::unique_ptr<Distiller> d;
  SokdStrategy& sokd() { return static_cast<SokdStrategy&>(*d->terms()[0].strategy); }
  Tensor buf(const std::string& name) {
    for (auto& [n, t] : sokd().named_buffers())
      if (n == name) return t;
    return Tensor();
  }
};

SokdRun make_run(const std::string& params) {
  Generator gen(1);
  SokdRun r;
  r.student = create_model("resnet8", retort::testing::kTinyModel, gen);
  r.teacher = create_model("resnet8x4", retort::testing::kTinyModel, gen);
  r.d = std::make_unique<Distiller>(
      r.student, r.teacher,
      retort::testing::terms_from(R"([{"type": "sokd", "params": )" + params + "}]"), DistillerOptions{},
      retort::testing::kTinySample, gen);
  return r;
}

// The error a "sokd" term with these params gives when parsed ("no error" when it parses).
std::string sokd_config_error(const std::string& params) {
  try {
    retort::testing::terms_from(R"([{"type": "sokd", "params": )" + params + "}]");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Sets every op probability and magnitude of the policy to v (ops on, magnitudes away from the identity).
void force_policy(SokdRun& run, float v) {
  for (const char* name : {"policy.probability", "policy.magnitude"}) {
    Tensor t = run.buf(name);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v;
  }
}

// The first step from `prog` on whose sub-policy both ops apply (that step's losses have been computed).
TrainProgress step_applying_both(SokdRun& run, const Batch& batch, TrainProgress prog) {
  Tensor logits;
  for (;; ++prog.step)
    if (run.d->losses(batch, prog, logits), run.sokd().last_applied()[0] && run.sokd().last_applied()[1]) return prog;
}

}  // namespace

// Every policy tensor takes every Adam step: one the step's loss did not reach steps with a zero
// gradient (moments decay, weight decay acts), as the reference's does, rather than being skipped while
// the shared bias correction advances. After one step, m = (1 − β1)(g + wd·p0) for each tensor.
TEST(SokdStrategy, PolicyAdamStepsEveryTensorWithZerosForAnUnreachedOne) {
  SokdRun run = make_run(R"({"heatmap_classes": 10, "area_num": 4, "search_epochs": 1, "policy_weight_decay": 0.01})");
  SokdStrategy& s = run.sokd();
  run.d->train(true);
  const char* names[3] = {"probability", "magnitude", "weight"};
  TrainProgress prog{0, 2, 0, 0, 10};
  for (;; ++prog.step) {
    ASSERT_LT(prog.step, 200) << "no step without an applied op";
    Tensor logits;
    LossTerms terms = run.d->losses(retort::testing::tiny_batch(4, 7), prog, logits);
    if (s.last_applied()[0] || s.last_applied()[1]) continue;
    add(terms[0].second, terms[1].second).backward();
    std::vector<Tensor> p0, g;
    int undefined = 0;
    for (const char* n : names) {
      const Tensor t = run.buf(std::string("policy.") + n);
      p0.push_back(t.clone());
      g.push_back(t.grad().defined() ? t.grad().to(DType::F64) : Tensor::zeros_like(t).to(DType::F64));
      undefined += t.grad().defined() ? 0 : 1;
    }
    EXPECT_GT(undefined, 0) << "the test wants a step whose loss leaves a policy tensor without a gradient";
    run.d->after_step(prog);
    EXPECT_EQ(run.buf("policy.adam_step").data<float>()[0], 1.0f);
    for (int i = 0; i < 3; ++i) {
      const Tensor m = run.buf(std::string("policy.adam_m_") + names[i]);
      const Tensor want = (g[static_cast<size_t>(i)] + p0[static_cast<size_t>(i)].to(DType::F64) * 0.01) * 0.5;
      EXPECT_TRUE(close_to(std::string("adam_m_") + names[i], m.to(DType::F64), want, 1e-6, 1e-9));
    }
    break;
  }
}

TEST(SokdStrategy, PolicyLearnsOnlyWhileSearchingAndSamplingFollowsTheStep) {
  SokdRun run = make_run(R"({"heatmap_classes": 10, "area_num": 4, "search_epochs": 1})");
  SokdStrategy& s = run.sokd();
  EXPECT_EQ(s.sub_policies().size(), 36u);
  run.d->train(true);
  const Tensor m0 = run.buf("policy.magnitude").clone(), p0 = run.buf("policy.probability").clone(),
               w0 = run.buf("policy.weight").clone();
  // Find a searching step whose sub-policy applies at least one op, take it, and step the policy.
  TrainProgress prog{0, 2, 0, 0, 10};
  for (;; ++prog.step) {
    Tensor logits;
    LossTerms terms = run.d->losses(retort::testing::tiny_batch(4, 7), prog, logits);
    ASSERT_EQ(terms.size(), 2u);
    EXPECT_EQ(terms[0].first, "sokd.feat");
    EXPECT_EQ(terms[1].first, "sokd.dam");
    if (!(s.last_applied()[0] || s.last_applied()[1])) continue;
    add(terms[0].second, terms[1].second).backward();
    EXPECT_TRUE(run.buf("policy.magnitude").grad().defined());
    EXPECT_TRUE(run.buf("policy.probability").grad().defined());
    EXPECT_TRUE(run.buf("policy.weight").grad().defined());
    EXPECT_EQ(s.last_regions().mask.shape(), (Shape{4, 8, 8}));  // resnet8x4's layer2 on 16x16 inputs
    run.d->after_step(prog);
    break;
  }
  EXPECT_FALSE(run.buf("policy.magnitude").grad().defined()) << "after_step must clear the policy's gradients";
  const int64_t b = s.last_sub_policy();
  EXPECT_NE(run.buf("policy.weight").data<float>()[b], w0.data<float>()[b]) << "the sampled logit did not move";
  bool moved = false;
  for (int i = 0; i < 2; ++i)
    moved |= run.buf("policy.probability").data<float>()[2 * b + i] != p0.data<float>()[2 * b + i];
  EXPECT_TRUE(moved) << "no op probability of the sampled sub-policy moved";
  EXPECT_EQ(run.buf("policy.adam_step").data<float>()[0], 1.0f);

  // After the search (epoch 1 >= search_epochs 1): no gradients, no update, sampling goes on.
  const Tensor frozen = run.buf("policy.probability").clone();
  TrainProgress later{1, 2, 50, 0, 10};
  Tensor logits;
  LossTerms terms = run.d->losses(retort::testing::tiny_batch(4, 8), later, logits);
  add(terms[0].second, terms[1].second).backward();
  EXPECT_FALSE(run.buf("policy.probability").grad().defined());
  run.d->after_step(later);
  EXPECT_TRUE(close_to("frozen policy", run.buf("policy.probability"), frozen, 0, 0));

  // The sample is a function of (seed, step): the same step draws the same sub-policy and flags.
  for (int64_t step : {3, 11, 40}) {
    TrainProgress p{1, 2, step, 0, 10};
    run.d->losses(retort::testing::tiny_batch(4, 9), p, logits);
    const auto first = std::pair{s.last_sub_policy(), s.last_applied()};
    const Tensor aug = s.last_augmented().clone();
    run.d->losses(retort::testing::tiny_batch(4, 9), p, logits);
    EXPECT_EQ(first, (std::pair{s.last_sub_policy(), s.last_applied()})) << "step " << step;
    EXPECT_TRUE(close_to("augmented teacher feature", s.last_augmented(), aug, 0, 0)) << "step " << step;
  }
  (void)m0;
}

TEST(SokdStrategy, SearchNoneNeverTouchesThePolicyAndConfigErrorsAreClear) {
  SokdRun run = make_run(R"({"heatmap_classes": 10, "search": "none"})");
  run.d->train(true);
  const Tensor p0 = run.buf("policy.probability").clone();
  for (int64_t step = 0; step < 4; ++step) {
    TrainProgress prog{0, 2, step, step, 10};
    Tensor logits;
    LossTerms terms = run.d->losses(retort::testing::tiny_batch(4, 7), prog, logits);
    add(terms[0].second, terms[1].second).backward();
    EXPECT_FALSE(run.buf("policy.probability").grad().defined());
    run.d->after_step(prog);
  }
  EXPECT_TRUE(close_to("policy", run.buf("policy.probability"), p0, 0, 0));
  EXPECT_NE(sokd_config_error(R"({"search": "random"})").find("expected \"first_order\", \"second_order\" or \"none\""),
            std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"hessian_radius": 0.1})").find("belong to \"second_order\" search"), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"search": "second_order", "hessian_radius": 0})").find("hessian_radius > 0"),
            std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"area_num": 0})").find("area_num: must be >= 1"), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"ops": ["ShearX", "Shear"]})").find("unknown op 'Shear' (known: ShearX, ShearY"),
            std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"ops": ["Noise", "Noise"]})").find("'Noise' listed twice"), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"ops": ["Noise"]})").find("at least 2 are needed, got 1"), std::string::npos);

  // "ops" restricts the sub-policies to the pairs of the ops given (and sizes the policy to them).
  SokdRun three = make_run(R"({"heatmap_classes": 10, "ops": ["Rotate", "Noise", "ShearY"]})");
  const auto& pairs = three.sokd().sub_policies();
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs[0], (std::array<FeatureOp, 2>{FeatureOp::Rotate, FeatureOp::Noise}));
  EXPECT_EQ(pairs[2], (std::array<FeatureOp, 2>{FeatureOp::Noise, FeatureOp::ShearY}));
  EXPECT_EQ(three.buf("policy.probability").shape(), (Shape{3, 2}));
  EXPECT_EQ(three.buf("policy.weight").shape(), (Shape{3}));
  EXPECT_EQ(three.sokd().params()["ops"], Json({"Rotate", "Noise", "ShearY"}));
  for (int64_t step = 0; step < 20; ++step) {
    Tensor logits;
    three.d->losses(retort::testing::tiny_batch(4, 7), TrainProgress{0, 2, step, step, 10}, logits);
    EXPECT_LT(three.sokd().last_sub_policy(), 3);
  }
}

// The second-order search (before the step, on the same batch) leaves the networks, their buffers and
// gradients as they were, and steps the policy by −(g+ − g−) / 2R, where g± = ∇α L(θ ± R·v) and v is the
// gradient of the upper-level loss (sampled ops applied, no relaxations) after a virtual SGD step
// θ' = θ − η(∇θ L + λθ) — recomputed here step by step through the public interface.
// With held, the upper level runs on a held-out batch; with ce, L_upper is the student's cross-entropy.
void second_order_case(bool held, bool ce) {
  SCOPED_TRACE(std::string(held ? "held-out batch" : "same batch") + (ce ? ", ce" : ", total loss"));
  SokdRun run = make_run(std::string(R"({"heatmap_classes": 10, "area_num": 4, "search": "second_order", "search_epochs": 1,
                            "unrolled_lr": 0.05, "upper_batch": ")") + (held ? "held_out" : "same") +
                         R"(", "upper_loss": ")" + (ce ? "ce" : "total") + R"("})");
  SokdStrategy& s = run.sokd();
  Distiller& d = *run.d;
  d.train(true);
  force_policy(run, 0.9f);
  const Batch batch = retort::testing::tiny_batch(4, 7);
  const Batch held_batch = retort::testing::tiny_batch(4, 8);
  const Batch& upper = held ? held_batch : batch;
  EXPECT_EQ(d.wants_held_out(), held);
  const TrainProgress prog = step_applying_both(run, batch, TrainProgress{0, 2, 0, 0, 10});
  Tensor logits;
  std::vector<Tensor> theta = d.trainable_parameters(), theta0, buffers, buffers0;
  std::vector<std::string> buffer_names;
  for (auto& p : theta) theta0.push_back(p.clone());
  for (auto& [n, b] : run.student->named_buffers()) buffers.push_back(b), buffer_names.push_back("student." + n);
  for (auto& [n, b] : s.named_buffers()) buffers.push_back(b), buffer_names.push_back(n);
  for (auto& b : buffers) buffers0.push_back(b.clone());
  ASSERT_TRUE(s.unrolled_search(prog).has_value());
  const Tensor mag0 = run.buf("policy.magnitude").clone();
  if (held) expect_error([&] { d.before_step(batch, prog); }, {"held-out batch", "data.held_out"});
  d.before_step(batch, prog, held ? &held_batch : nullptr);
  for (size_t i = 0; i < theta.size(); ++i) {
    EXPECT_EQ(theta[i].to_vector(), theta0[i].to_vector()) << "parameter " << i << " moved";
    EXPECT_FALSE(theta[i].grad().defined()) << "parameter " << i << " kept a gradient";
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    const bool policy = buffer_names[i].rfind("policy.", 0) == 0;
    if (!policy) {
      EXPECT_EQ(buffers[i].to_vector(), buffers0[i].to_vector()) << buffer_names[i] << " moved";
    }
  }
  EXPECT_NE(run.buf("policy.magnitude").to_vector(), mag0.to_vector()) << "the policy did not step";
  EXPECT_EQ(run.buf("policy.adam_step").data<float>()[0], 1.0f);
  const std::vector<Tensor> got = s.last_upper_gradient();
  ASSERT_EQ(got.size(), 3u);

  // The same computation by hand, from the saved state.
  auto assign = [](Tensor& dst, const Tensor& src) {
    backend_for(dst).copy(src.raw_data(), dst.raw_data(), dst.nbytes());
  };
  for (size_t i = 0; i < buffers.size(); ++i) assign(buffers[i], buffers0[i]);
  const std::vector<Tensor*> alpha = s.search_parameters();
  auto grad_of = [](const Tensor& t) { return t.grad().defined() ? t.grad().clone() : Tensor::zeros_like(t); };
  auto backward = [&] {
    for (auto& p : theta) p.zero_grad();
    for (Tensor* a : alpha) a->zero_grad();
    total_loss(d.losses(batch, prog, logits)).backward();
  };
  backward();
  {
    std::vector<Tensor> g;
    for (auto& p : theta) g.push_back(grad_of(p));
    NoGradGuard ng;
    for (size_t i = 0; i < theta.size(); ++i)
      assign(theta[i], sub(theta0[i], mul(add(g[i], mul(theta0[i], Tensor::scalar(1e-4))), Tensor::scalar(0.05))));
  }
  s.set_upper_level(true);
  for (auto& p : theta) p.zero_grad();
  if (ce) cross_entropy((*run.student)(upper.inputs), upper.targets).backward();
  else total_loss(d.losses(upper, prog, logits)).backward();
  s.set_upper_level(false);
  std::vector<Tensor> v;
  double norm2 = 0;
  for (auto& p : theta) {
    v.push_back(grad_of(p));
    norm2 += sum(mul(v.back(), v.back())).item();
  }
  const double r = 0.01 / std::sqrt(norm2);
  std::vector<std::vector<Tensor>> g;
  for (double sign : {1.0, -1.0}) {
    {
      NoGradGuard ng;
      for (size_t i = 0; i < theta.size(); ++i) assign(theta[i], add(theta0[i], mul(v[i], Tensor::scalar(sign * r))));
    }
    backward();
    g.emplace_back();
    for (Tensor* a : alpha) g.back().push_back(grad_of(*a));
  }
  double largest = 0;
  for (size_t k = 0; k < 3; ++k) {
    const Tensor want = mul(sub(g[0][k], g[1][k]), Tensor::scalar(-1.0 / (2 * r)));
    largest = std::max(largest, max(abs(want)).item());
    EXPECT_TRUE(close_to("implicit gradient " + std::to_string(k), got[k], want, 1e-6, 1e-4));
  }
  EXPECT_GT(largest, 0.0) << "the implicit gradient is zero: the test shows nothing";
  // The main step's own policy gradients are not applied in second-order mode.
  for (size_t i = 0; i < theta.size(); ++i) assign(theta[i], theta0[i]);
  const Tensor w_before = run.buf("policy.weight").clone();
  backward();
  d.after_step(prog);
  EXPECT_EQ(run.buf("policy.weight").to_vector(), w_before.to_vector());
  EXPECT_FALSE(run.buf("policy.weight").grad().defined());
}

TEST(SokdStrategy, SecondOrderSearchStepsThePolicyByTheImplicitGradient) { second_order_case(false, false); }

// The classic DARTS variants: the upper level on a held-out batch, its loss the student's CE — the
// same recomputation, with v taken there; without the held-out batch the step refuses.
TEST(SokdStrategy, SecondOrderUpperLevelOnAHeldOutBatchOrCrossEntropy) {
  second_order_case(true, false);
  second_order_case(true, true);
  second_order_case(false, true);
}

// ---- the "relax" estimator (distill/nodes/relax.h) in the strategy ------------------------------------

namespace {

std::vector<double> relax_score_p(const std::vector<double>& p, const RelaxLatents& lat) {
  const std::vector<bool> o = relax_flags(p, lat);
  std::vector<double> out;
  for (size_t j = 0; j < p.size(); ++j) out.push_back(o[j] ? 1.0 / p[j] : -1.0 / (1.0 - p[j]));
  return out;
}

std::vector<double> relax_score_w(const std::vector<double>& w, int64_t b) {
  double m = -INFINITY, z = 0;
  for (double x : w) m = std::max(m, x);
  for (double x : w) z += std::exp(x - m);
  std::vector<double> out;
  for (size_t k = 0; k < w.size(); ++k) out.push_back((static_cast<int64_t>(k) == b ? 1.0 : 0.0) - std::exp(w[k] - m) / z);
  return out;
}

}  // namespace

// First order: the probabilities and sub-policy logits step by RELAX's estimate for this term's loss
// value (no straight-through gradient reaches them), the magnitudes by the straight-through gradient,
// and the control variate by its variance gradient — one Adam step each, so every entry moves by the
// learning rate against the sign of its gradient.
TEST(SokdRelax, FirstOrderStepsByTheEstimateOfTheTermsLoss) {
  SokdRun run = make_run(R"({"heatmap_classes": 10, "area_num": 4, "search_epochs": 1, "estimator": "relax",
                             "relax_hidden": 16, "policy_lr": 0.01, "policy_weight_decay": 0})");
  SokdStrategy& s = run.sokd();
  Distiller& d = *run.d;
  d.train(true);
  force_policy(run, 0.7f);
  const Batch batch = retort::testing::tiny_batch(4, 7);
  const TrainProgress prog = step_applying_both(run, batch, TrainProgress{0, 2, 0, 0, 10});
  Tensor logits;
  d.trainable_parameters();
  for (Tensor* a : s.search_parameters()) a->zero_grad();
  Tensor loss = total_loss(d.losses(batch, prog, logits));
  const double f = loss.item();
  loss.backward();
  EXPECT_FALSE(run.buf("policy.probability").grad().defined());
  EXPECT_FALSE(run.buf("policy.weight").grad().defined());
  ASSERT_TRUE(run.buf("policy.magnitude").grad().defined());
  const std::vector<double> p0 = run.buf("policy.probability").to_vector(), w0 = run.buf("policy.weight").to_vector(),
                            m0 = run.buf("policy.magnitude").to_vector(),
                            mg = run.buf("policy.magnitude").grad().to_vector(),
                            q0 = run.buf("policy.q_func.out_bias").to_vector();
  const RelaxEstimate want = relax_estimate(p0, w0, s.last_latents(), 0.5, s.control_variate(), f);
  d.after_step(prog);
  EXPECT_EQ(s.last_relax().grad_p, want.grad_p);
  EXPECT_EQ(s.last_relax().grad_w, want.grad_w);
  const std::vector<double> p1 = run.buf("policy.probability").to_vector(), w1 = run.buf("policy.weight").to_vector(),
                            m1 = run.buf("policy.magnitude").to_vector(), q1 = run.buf("policy.q_func.out_bias").to_vector();
  auto sign = [](double x) { return static_cast<double>((x > 0) - (x < 0)); };
  for (size_t j = 0; j < p0.size(); ++j)
    EXPECT_NEAR(p1[j] - p0[j], -0.01 * sign(want.grad_p[j]), 1e-5) << "probability " << j;
  for (size_t k = 0; k < w0.size(); ++k)
    EXPECT_NEAR(w1[k] - w0[k], -0.01 * sign(want.grad_w[k]), 1e-5) << "weight " << k;
  for (size_t j = 0; j < m0.size(); ++j)
    EXPECT_NEAR(m1[j] - m0[j], mg[j] == 0 ? 0.0 : -0.01 * sign(mg[j]), 1e-5) << "magnitude " << j;
  EXPECT_NEAR(q1[0] - q0[0], -0.01 * sign(want.grad_phi.back()), 1e-5) << "the control variate's out bias";
  EXPECT_NE(s.inspect_text().find("relax: f"), std::string::npos) << s.inspect_text();
}

// Second order: the control variate and the relaxations are the same at θ+ and θ−, so they cancel from
// g+ − g−: the implicit gradient of the probabilities and sub-policy logits is the score of the draw
// times −(L(θ+) − L(θ−)) / (2R) — whatever c_φ is —, and the magnitudes' is the straight-through one.
TEST(SokdRelax, SecondOrderImplicitGradientIsTheScoreTimesTheDirectionalDifference) {
  const std::string params = R"({"heatmap_classes": 10, "area_num": 4, "search": "second_order", "search_epochs": 1,
                                 "unrolled_lr": 0.05, "estimator": ")";
  std::vector<std::vector<Tensor>> upper;
  double factor = 0;
  for (const std::string variant : {"relax", "relax_other_control", "straight_through"}) {
    SCOPED_TRACE(variant);
    SokdRun run = make_run(params + (variant == "straight_through" ? R"(straight_through"})" : R"(relax", "relax_hidden": 8})"));
    SokdStrategy& s = run.sokd();
    run.d->train(true);
    force_policy(run, 0.7f);
    if (variant == "relax_other_control") {
      Tensor w = run.buf("policy.q_func.out_weight");
      for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] *= -3.0f;
    }
    const Batch batch = retort::testing::tiny_batch(4, 7);
    const TrainProgress prog = step_applying_both(run, batch, TrainProgress{0, 2, 0, 0, 10});
    const std::vector<double> p0 = run.buf("policy.probability").to_vector(), w0 = run.buf("policy.weight").to_vector();
    run.d->before_step(batch, prog);
    upper.push_back(s.last_upper_gradient());
    if (variant == "straight_through") break;
    const std::vector<double> sp = relax_score_p(p0, s.last_latents()), sw = relax_score_w(w0, s.last_latents().b);
    const std::vector<double> gp = upper.back()[0].to_vector(), gw = upper.back()[2].to_vector();
    const double k = gw[static_cast<size_t>(s.last_latents().b)] / sw[static_cast<size_t>(s.last_latents().b)];
    EXPECT_NE(k, 0.0);
    for (size_t j = 0; j < gp.size(); ++j) EXPECT_NEAR(gp[j], k * sp[j], 1e-9 * (1 + std::abs(k * sp[j]))) << j;
    for (size_t i = 0; i < gw.size(); ++i) EXPECT_NEAR(gw[i], k * sw[i], 1e-9 * (1 + std::abs(k * sw[i]))) << i;
    if (variant == "relax") factor = k;
    else EXPECT_NEAR(k, factor, 1e-9 * std::abs(factor)) << "the control variate changed the implicit gradient";
  }
  // The forward values are the same under both estimators, so the magnitudes' implicit gradient is too.
  EXPECT_TRUE(close_to("magnitude", upper[0][1].to(DType::F32), upper[2][1], 1e-6, 1e-3));
}

TEST(SokdRelax, ConfigErrorsNameTheKey) {
  EXPECT_NE(sokd_config_error(R"({"estimator": "reinforce"})").find("\"straight_through\" or \"relax\""),
            std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"estimator": "relax", "search": "none"})").find("needs augment true and a search mode"),
            std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"estimator": "relax", "augment": false})").find("estimator"), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"relax_hidden": 10})").find("belongs to estimator \"relax\""), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"estimator": "relax", "relax_hidden": 0})").find("relax_hidden"), std::string::npos);
  // Without "relax" the checkpoint has no control variate; with it, the buffers and their moments.
  std::set<std::string> plain, relaxed;
  for (auto& [n, t] : make_run(R"({"heatmap_classes": 4})").sokd().named_buffers()) plain.insert(n);
  for (auto& [n, t] : make_run(R"({"heatmap_classes": 4, "estimator": "relax"})").sokd().named_buffers()) relaxed.insert(n);
  EXPECT_EQ(plain.count("policy.q_func.h1_weight"), 0u);
  EXPECT_EQ(relaxed.count("policy.q_func.h1_weight"), 1u);
  EXPECT_EQ(relaxed.count("policy.q_func.adam_v_out_bias"), 1u);
  EXPECT_EQ(relaxed.size(), plain.size() + 12);
}

// A task whose search wants a held-out batch every step is refused by the Trainer without data.held_out.
TEST(SokdStrategy, HeldOutUpperLevelNeedsTheSplit) {
  const ExperimentConfig cfg = ExperimentConfig::from_json(Json::parse(R"({
    "schema_version": 1, "experiment": {"name": "sokd_held", "seed": 3},
    "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "num_classes": 4, "synthetic_size": 32,
             "batch_size": 8, "num_workers": 0},
    "model": {"arch": "resnet8"}, "solver": {"lr": 0.05, "epochs": 1}})"), "sokd_held.json");
  Generator gen(1);
  const ModelOptions mo{4, 1, 16};
  Distiller d(create_model("resnet8", mo, gen), create_model("resnet8", mo, gen),
              parse_terms(Json::parse(R"([{"type": "sokd", "params": {"heatmap_classes": 4, "search": "second_order",
                                          "upper_batch": "held_out"}}])"), "t.json"),
              DistillerOptions{}, Shape{1, 16, 16}, gen);
  EXPECT_TRUE(d.wants_held_out());
  const DataSplits data = load_datasets(cfg.data);
  RunDir run(::testing::TempDir() + "/retort_sokd_held");
  expect_error([&] { Trainer t(cfg, d, data, run); }, {"held-out split", "data.held_out"});
  EXPECT_NE(sokd_config_error(R"({"upper_batch": "held_out"})").find("belong to \"second_order\""), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"search": "second_order", "upper_loss": "kl"})").find("\"total\" or \"ce\""),
            std::string::npos);
}

namespace {

// The tiny synthetic SoKD run of the Trainer tests: 32 samples, batches of 8 (4 steps an epoch).
ExperimentConfig sokd_trainer_config(int epochs) {
  return ExperimentConfig::from_json(Json::parse(R"({
    "schema_version": 1,
    "experiment": {"name": "sokd_trainer", "seed": 3},
    "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "num_classes": 4, "synthetic_size": 32,
             "batch_size": 8, "eval_batch_size": 32, "num_workers": 2},
    "model": {"arch": "resnet8"},
    "solver": {"lr": 0.05, "epochs": )" + std::to_string(epochs) + R"(},
    "log": {"every_steps": 1000, "pictures_batch": 3}
  })"), "sokd_trainer.json");
}

// Trains CE + SoKD (search `search`, the rest of the params after it in the JSON string) with `c` in
// `dir`, optionally resuming or stopping after N steps; returns the student's and the terms' state.
StateDict sokd_trainer_run(const ExperimentConfig& c, const std::string& search, const std::string& dir,
                           const std::string& resume = "", int64_t stop_after = 0) {
  Generator gen(c.seed);
  const ModelOptions mo{4, 1, 16};
  auto student = create_model("resnet8", mo, gen);
  Generator tgen(99);
  auto teacher = create_model("resnet8", mo, tgen);
  Distiller d(student, teacher,
              parse_terms(Json::parse(R"([{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4,
                            "area_num": 3, "search_epochs": 2, "policy_lr": 0.05, "search": ")" + search + R"("}}])"),
                          "t.json"),
              DistillerOptions{}, Shape{1, 16, 16}, gen);
  DataSplits data = load_datasets(c.data);
  RunDir run(dir);
  Trainer trainer(c, d, data, run);
  trainer.fit(resume, stop_after);
  StateDict out;
  for (auto& [k, t] : student->state_dict()) out.emplace_back(k, t.clone());
  for (auto& [k, t] : d.extra_state()) out.emplace_back(k, t.clone());
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace

// An interrupted SoKD run resumed from its checkpoint ends bitwise where the uninterrupted one does:
// student, regressor, DAM and the augmentation policy with its Adam moments (the search spans the
// interruption), because the policy is checkpointed and every draw is seeded by the step.
TEST(SokdStrategy, ResumeMidSearchEqualsUninterruptedRun) {
  const ExperimentConfig cfg = sokd_trainer_config(3);
  for (const std::string search : {"first_order", "second_order", "second_order_held_out", "first_order_relax"}) {
  SCOPED_TRACE(search);
  // The held-out variant: 8 of the 32 samples held out (3 steps per epoch), the upper level on them.
  const bool held = search == "second_order_held_out";
  ExperimentConfig c = cfg;
  if (held) c.data.held_out = 8;
  const std::string params = held                          ? R"(second_order", "upper_batch": "held_out", "upper_loss": "ce)"
                             : search == "first_order_relax" ? R"(first_order", "estimator": "relax)"
                                                             : search;
  const std::string base = ::testing::TempDir() + "/retort_sokd_resume";
  std::filesystem::remove_all(base);
  const StateDict straight = sokd_trainer_run(c, params, base + "/straight");
  sokd_trainer_run(c, params, base + "/interrupted", "", held ? 4 : 6);  // stops in epoch 2, inside the search
  const StateDict resumed = sokd_trainer_run(c, params, base + "/interrupted", "auto");
  ASSERT_EQ(straight.size(), resumed.size());
  bool policy_seen = false, control_seen = false;
  for (size_t i = 0; i < straight.size(); ++i) {
    ASSERT_EQ(straight[i].first, resumed[i].first);
    EXPECT_EQ(straight[i].second.to_vector(), resumed[i].second.to_vector()) << straight[i].first << " differs";
    policy_seen |= straight[i].first == "term.sokd.policy.magnitude";
    control_seen |= straight[i].first == "term.sokd.policy.q_func.h1_weight";
  }
  EXPECT_TRUE(policy_seen);
  EXPECT_EQ(control_seen, search == "first_order_relax");
  std::filesystem::remove_all(base);
  }
}

// log.pictures_every_epochs draws one step on the first test images after each epoch (DAM masks, the
// augmented teacher feature, ...) without changing the run: student, modules and policy end bitwise as a
// run without pictures does, with the second-order search (its before_step) too.
TEST(SokdStrategy, PicturesDuringTrainingDoNotChangeTheRun) {
  for (const std::string search : {"first_order", "second_order"}) {
    SCOPED_TRACE(search);
    ExperimentConfig pictured_cfg = sokd_trainer_config(2);
    pictured_cfg.log.pictures_every_epochs = 1;
    const std::string base = ::testing::TempDir() + "/retort_sokd_pictures";
    std::filesystem::remove_all(base);
    const StateDict plain = sokd_trainer_run(sokd_trainer_config(2), search, base + "/plain");
    const StateDict pictured = sokd_trainer_run(pictured_cfg, search, base + "/pictured");
    ASSERT_EQ(plain.size(), pictured.size());
    for (size_t i = 0; i < plain.size(); ++i)
      EXPECT_EQ(plain[i].second.to_vector(), pictured[i].second.to_vector()) << plain[i].first << " differs";
    EXPECT_FALSE(std::filesystem::exists(base + "/plain/pictures"));
    // 3 samples x (input, student.layer2, teacher.layer2, mask, mask on the input, the term's student,
    // teacher and augmented teacher) per epoch, and an index of the epochs.
    for (const char* e : {"epoch0001", "epoch0002"}) {
      const std::string dir = base + "/pictured/pictures/" + e;
      size_t pngs = 0;
      for (const auto& f : std::filesystem::directory_iterator(dir)) pngs += f.path().extension() == ".png";
      EXPECT_EQ(pngs, 24u) << dir;
      EXPECT_TRUE(std::filesystem::is_regular_file(dir + "/sample2_term.sokd.mask_on_input.png")) << dir;
    }
    const std::string page = read_text(base + "/pictured/pictures/index.html");
    EXPECT_NE(page.find("href=\"epoch0001/index.html\""), std::string::npos) << page;
    EXPECT_NE(page.find("href=\"epoch0002/index.html\""), std::string::npos) << page;
    const std::string epoch_html = read_text(base + "/pictured/pictures/epoch0002/index.html");
    EXPECT_NE(epoch_html.find("term sokd (sokd): sub-policy"), std::string::npos) << epoch_html;
    EXPECT_NE(epoch_html.find("after epoch 2 (step 7)"), std::string::npos) << epoch_html;
    const std::string events = read_text(base + "/pictured/metrics.jsonl");
    EXPECT_NE(events.find(R"("event":"pictures","epoch":2)"), std::string::npos) << events;
    std::filesystem::remove_all(base);
  }
}

// ---- SoKD as a plug-in around another method (params "host") -----------------------------------------

namespace {

// A distiller of one "sokd" term around `host_json` (or of the plain host when plain is true), on the
// same tiny networks and generator as make_run, so the two build the host's modules identically.
SokdRun make_host_run(const std::string& sokd_params, const std::string& host_json, bool plain = false) {
  Generator gen(1);
  SokdRun r;
  r.student = create_model("resnet8", retort::testing::kTinyModel, gen);
  r.teacher = create_model("resnet8x4", retort::testing::kTinyModel, gen);
  const std::string terms =
      plain ? "[" + host_json + "]"
            : R"([{"type": "sokd", "params": {"host": )" + host_json + (sokd_params.empty() ? "" : ", ") + sokd_params + "}}]";
  r.d = std::make_unique<Distiller>(r.student, r.teacher, retort::testing::terms_from(terms), DistillerOptions{},
                                    retort::testing::kTinySample, gen);
  r.d->train(true);
  return r;
}

Tensor view(const Strategy& s, const std::string& name) {
  for (auto& [n, t] : s.inspect())
    if (n == name) return t;
  ADD_FAILURE() << "no view " << name;
  return Tensor();
}

double only_value(const LossTerms& terms, const std::string& name) {
  EXPECT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms.at(0).first, name);
  return terms.at(0).second.item();
}

// Calls teacher_from, then reports the teacher feature the context holds (it must be the real pass's).
class RerunProbe final : public Strategy {
 public:
  RerunProbe() : Strategy("rerun_probe") {}
  std::vector<std::string> teacher_taps() const override { return {"layer2"}; }
  Tensor compute(const DistillContext& ctx) override {
    before = ctx.teacher_feature("layer2").clone();
    rerun = ctx.teacher_from("layer2", mul(ctx.teacher_feature("layer2"), Tensor::scalar(3.0)));
    after = ctx.teacher_feature("layer2").clone();
    return Tensor::scalar(0.0);
  }
  Json params() const override { return Json::object(); }
  Tensor before, after, rerun;
};

}  // namespace

// With the targets left as they are (augment off) and SoKD's own losses weighted 0, the plug-in is the
// host itself, bit for bit: same modules (built first, from the same generator), same value.
TEST(SokdPlugIn, UnrefinedTargetsGiveTheHostItself) {
  const Batch batch = retort::testing::tiny_batch(4, 7);
  const TrainProgress prog{0, 2, 5, 0, 10};
  for (const std::string host : {R"({"type": "fitnet"})", R"({"type": "kd", "params": {"temperature": 4}})",
                                 R"({"type": "reviewkd"})"}) {
    SCOPED_TRACE(host);
    SokdRun wrapped = make_host_run(R"("augment": false, "feat_weight": 0, "dam_weight": 0)", host);
    SokdRun plain = make_host_run("", host, true);
    Tensor l1, l2;
    const LossTerms a = wrapped.d->losses(batch, prog, l1), b = plain.d->losses(batch, prog, l2);
    const std::string type = Json::parse(host)["type"];
    EXPECT_EQ(only_value(a, "sokd." + type), only_value(b, type));
    // No regressor or DAM of its own: the trainable extras are the host's, under "host.".
    std::vector<std::string> names;
    for (auto& [n, t] : wrapped.sokd().named_parameters()) names.push_back(n);
    for (const auto& n : names) EXPECT_EQ(n.rfind("host.", 0), 0u) << n;
    EXPECT_EQ(names.size(), plain.d->terms()[0].strategy->named_parameters().size());
  }
}

// With a logit host the teacher's logits are refined: the rest of the teacher (after teacher_tap) run on
// the augmented feature f̃_t — exactly what substituting f̃_t into the teacher gives — and the host's loss
// is computed on them. Refined targets also reach a feature host, and the policy learns through either.
TEST(SokdPlugIn, LogitHostSeesTheRestOfTheTeacherOnTheAugmentedFeature) {
  SokdRun run = make_host_run(R"("feat_weight": 0, "dam_weight": 0, "search_epochs": 1)",
                              R"({"type": "kd", "params": {"temperature": 4}})");
  SokdStrategy& s = run.sokd();
  ASSERT_NE(s.host(), nullptr);
  force_policy(run, 0.95f);
  const Batch batch = retort::testing::tiny_batch(4, 7);
  const TrainProgress prog = step_applying_both(run, batch, TrainProgress{0, 2, 0, 0, 10});
  Tensor logits;
  LossTerms terms = run.d->losses(batch, prog, logits);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].first, "sokd.kd");
  const Tensor refined = s.last_refined_logits();
  ASSERT_TRUE(refined.defined());
  Tensor manual, original;
  {
    NoGradGuard ng;
    original = (*run.teacher)(batch.inputs);
    run.teacher->substitute("layer2", s.last_augmented());
    manual = (*run.teacher)(batch.inputs);
    run.teacher->clear_substitutes();
  }
  EXPECT_TRUE(close_to("refined teacher logits", refined, manual, 1e-6, 1e-6));
  EXPECT_GT(max(abs(sub(refined, original))).item(), 1e-3) << "the augmentation did not change the logits";
  EXPECT_NEAR(terms[0].second.item(), kd_loss(logits, manual, 4).item(), 1e-5);
  // The policy learns through the rest of the teacher.
  terms[0].second.backward();
  EXPECT_TRUE(run.buf("policy.magnitude").grad().defined());
  EXPECT_TRUE(run.buf("policy.weight").grad().defined());
  EXPECT_GT(std::abs(sum(abs(run.buf("policy.magnitude").grad())).item()), 0.0);
  const Tensor w0 = run.buf("policy.weight").clone();
  run.d->after_step(prog);
  EXPECT_NE(run.buf("policy.weight").data<float>()[s.last_sub_policy()], w0.data<float>()[s.last_sub_policy()]);
  EXPECT_EQ(view(s, "refined_teacher_logits").to_vector(), refined.to_vector());
  EXPECT_NE(s.inspect_text().find("host kd on the refined targets"), std::string::npos) << s.inspect_text();

  // A feature host gets f̃_t in place of the teacher feature (and no logit rerun), plus SoKD's own parts.
  SokdRun feat = make_host_run(R"("heatmap_classes": 10, "area_num": 4, "search": "none")", R"({"type": "fitnet"})");
  force_policy(feat, 0.95f);
  terms = feat.d->losses(batch, prog, logits);
  ASSERT_EQ(terms.size(), 3u);
  EXPECT_EQ(terms[0].first, "sokd.feat");
  EXPECT_EQ(terms[1].first, "sokd.dam");
  EXPECT_EQ(terms[2].first, "sokd.fitnet");
  EXPECT_FALSE(feat.sokd().last_refined_logits().defined());
  // fitnet = mse(ConvReg(student layer2), f̃_t) with the host's regressor.
  Tensor fs;
  feat.student->tap("layer2", [&](const Tensor& t) { fs = t; });
  (*feat.student)(batch.inputs);
  feat.student->clear_taps();
  const Tensor want = mse_loss(feat.sokd().host()->find("regressor")(fs), feat.sokd().last_augmented());
  EXPECT_NEAR(terms[2].second.item(), want.item(), 1e-6 * std::max(1.0, want.item()));
  EXPECT_GT(max(abs(sub(feat.sokd().last_augmented(), view(feat.sokd(), "teacher")))).item(), 1e-4)
      << "the feature host's target was not augmented";
}

// "mask_host": the host's own per-location loss weighted by the step's DAM region mask, brought to each
// host feature's size (fitnet at the mask's size; at over three stages: upsampled, as is, max-pooled).
TEST(SokdPlugIn, MaskHostWeightsTheHostsLossByTheDamRegions) {
  const Batch batch = retort::testing::tiny_batch(4, 7);
  const TrainProgress prog{0, 1, 0, 0, 1};
  Tensor logits, fs;
  SokdRun fit = make_host_run(R"("heatmap_classes": 10, "area_num": 2, "search": "none", "mask_host": true)",
                              R"({"type": "fitnet"})");
  force_policy(fit, 0.95f);
  LossTerms terms = fit.d->losses(batch, prog, logits);
  ASSERT_EQ(terms.size(), 3u);
  EXPECT_EQ(terms[2].first, "sokd.fitnet");
  EXPECT_EQ(fit.sokd().params()["mask_host"], true);
  fit.student->tap("layer2", [&](const Tensor& t) { fs = t; });
  (*fit.student)(batch.inputs);
  fit.student->clear_taps();
  const Tensor mask = fit.sokd().last_regions().mask;
  const Tensor r = fit.sokd().host()->find("regressor")(fs);
  const Tensor want = masked_feature_mse(r, fit.sokd().last_augmented(), mask);
  const Tensor unmasked = mse_loss(r, fit.sokd().last_augmented());
  EXPECT_NEAR(terms[2].second.item(), want.item(), 1e-6 * std::max(1.0, want.item()));
  EXPECT_GT(std::abs(want.item() - unmasked.item()), 1e-3 * unmasked.item()) << "the mask changed nothing";
  EXPECT_GT(sum(mask).item(), 0.0);

  // at over layer1..layer3 (16x16, 8x8, 4x4) with the 8x8 mask of teacher layer2; augment off, so the
  // teacher's features are the real pass's.
  SokdRun at = make_host_run(R"("heatmap_classes": 10, "area_num": 2, "augment": false, "mask_host": true)",
                             R"({"type": "at"})");
  terms = at.d->losses(batch, prog, logits);
  ASSERT_EQ(terms.back().first, "sokd.at");
  std::map<std::string, Tensor> s_f, t_f;
  for (const char* l : {"layer1", "layer2", "layer3"}) {
    at.student->tap(l, [&s_f, l](const Tensor& t) { s_f[l] = t; });
    at.teacher->tap(l, [&t_f, l](const Tensor& t) { t_f[l] = t; });
  }
  {
    NoGradGuard ng;
    (*at.student)(batch.inputs);  // train-mode BN as in losses(): the same batch statistics
    (*at.teacher)(batch.inputs);  // the frozen teacher in eval mode, as the Distiller keeps it
  }
  at.student->clear_taps();
  at.teacher->clear_taps();
  const Tensor m8 = at.sokd().last_regions().mask;
  ASSERT_EQ(m8.shape(), (Shape{4, 8, 8}));
  double expect = 0, plain = 0;
  for (const char* l : {"layer1", "layer2", "layer3"}) {
    const int64_t h = s_f[l].size(2);
    const Tensor qs = reshape(attention_map(s_f[l]), {4, 1, h, h}), qt = reshape(attention_map(t_f[l]), {4, 1, h, h});
    expect += masked_feature_mse(qs, qt, location_mask_at(m8, h, h)).item();
    plain += at_loss(s_f[l], t_f[l]).item();
  }
  EXPECT_NEAR(terms.back().second.item(), expect, 1e-6 * std::max(1.0, expect));
  EXPECT_GT(std::abs(expect - plain), 1e-3 * plain);
}

TEST(SokdPlugIn, LocationMaskAtEachFeatureSize) {
  // One sample, a 4x4 mask with a 2x1 box (counts 1) and one doubly covered cell.
  Tensor m = Tensor::from_vector(std::vector<double>{0, 0, 0, 0,  //
                                                     0, 1, 0, 0,  //
                                                     0, 1, 0, 2,  //
                                                     0, 0, 0, 0},
                                 {1, 4, 4});
  EXPECT_EQ(location_mask_at(m, 4, 4).to_vector(), m.to_vector());
  EXPECT_EQ(location_mask_at(m, 2, 2).to_vector(), (std::vector<double>{1, 0, 1, 2}));  // any finer cell: max
  const std::vector<double> up = location_mask_at(m, 8, 8).to_vector();
  ASSERT_EQ(up.size(), 64u);
  EXPECT_EQ(up[2 * 8 + 2], 1.0);  // (1, 1) -> rows 2..3, columns 2..3
  EXPECT_EQ(up[3 * 8 + 3], 1.0);
  EXPECT_EQ(up[5 * 8 + 7], 2.0);
  EXPECT_EQ(up[0], 0.0);
  expect_error([&] { location_mask_at(m, 3, 3); }, {"location mask 4x4", "3x3 feature", "integer factor"});
  expect_error([&] { location_mask_at(m, 2, 4); }, {"2x4"});
}

TEST(SokdPlugIn, MaskHostNeedsAHostWithAPerLocationLossAndTheDam) {
  EXPECT_NE(sokd_config_error(R"({"host": {"type": "kd"}, "mask_host": true})").find("no per-location loss"),
            std::string::npos);
  const std::string no_dam =
      sokd_config_error(R"({"host": {"type": "fitnet"}, "mask_host": true, "feat_weight": 0, "dam_weight": 0})");
  EXPECT_NE(no_dam.find("needs the DAM"), std::string::npos) << no_dam;
  EXPECT_NE(sokd_config_error(R"({"mask_host": true})").find("mask_host"), std::string::npos);
}

// The teacher re-run leaves the context's teacher features as the real pass made them, and restores the
// teacher (no substitute left behind).
TEST(SokdPlugIn, TeacherRerunKeepsTheRealPassFeatures) {
  Generator gen(1);
  auto student = create_model("resnet8", retort::testing::kTinyModel, gen);
  auto teacher = create_model("resnet8x4", retort::testing::kTinyModel, gen);
  auto probe = std::make_shared<RerunProbe>();
  std::vector<DistillTerm> terms{{"probe", 1.0, 0, probe}};
  Distiller d(student, teacher, std::move(terms), DistillerOptions{}, retort::testing::kTinySample, gen);
  d.train(true);
  const Batch batch = retort::testing::tiny_batch(4, 7);
  Tensor logits;
  d.losses(batch, TrainProgress{0, 1, 0, 0, 1}, logits);
  EXPECT_EQ(probe->before.to_vector(), probe->after.to_vector());
  NoGradGuard ng;
  const Tensor plain = (*teacher)(batch.inputs);
  teacher->substitute("layer2", mul(probe->before, Tensor::scalar(3.0)));
  const Tensor manual = (*teacher)(batch.inputs);
  teacher->clear_substitutes();
  EXPECT_EQ(probe->rerun.to_vector(), manual.to_vector());
  EXPECT_NE(probe->rerun.to_vector(), plain.to_vector());
  EXPECT_EQ((*teacher)(batch.inputs).to_vector(), plain.to_vector()) << "a substitute was left in the teacher";
}

TEST(SokdPlugIn, ConfigErrorsNameTheKey) {
  EXPECT_NE(sokd_config_error(R"({"host": {"type": "sokd"}})").find("SoKD cannot host itself"), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"host": {"type": "ce"}})").find("uses no teacher"), std::string::npos);
  const std::string bad = sokd_config_error(R"({"host": {"type": "kd", "params": {"temprature": 4}}})");
  EXPECT_NE(bad.find("params.host.params.temprature"), std::string::npos) << bad;
  EXPECT_NE(sokd_config_error(R"({"host": {"type": "nope"}})").find("nope"), std::string::npos);
  EXPECT_NE(sokd_config_error(R"({"host": "kd"})").find("host"), std::string::npos);
  // Refining logits runs the teacher from teacher_tap, so it must be a module's output.
  Generator gen(1);
  auto student = create_model("resnet8", retort::testing::kTinyModel, gen);
  auto teacher = create_model("resnet8x4", retort::testing::kTinyModel, gen);
  expect_error(
      [&] {
        Distiller d(student, teacher,
                    retort::testing::terms_from(
                        R"([{"type": "sokd", "params": {"teacher_tap": "layer2:preact", "host": {"type": "kd"}}}])"),
                    DistillerOptions{}, retort::testing::kTinySample, gen);
      },
      {"must be a module's output"});
}
