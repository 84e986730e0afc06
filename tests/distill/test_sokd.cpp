// SoKD (distill/nodes/sokd.h, distill/strategies/sokd.h): the feature ops against what they are
// defined to do (identity at magnitude 0.5, an exact integer translation, the cutout box, dropped and
// permuted channels, the noise's spread), the DAM regions on a hand-built example, the masked loss, the
// DAM module, and the strategy: it trains, its policy gets straight-through gradients and an Adam step
// only while searching, and its sampling is a function of the step (so a resumed run draws the same).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "distill/distiller.h"
#include "distill/strategies/sokd.h"
#include "distill/trainer.h"
#include "engine/autograd.h"
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
}  // namespace

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
  auto error_of = [](const std::string& params) {
    try {
      retort::testing::terms_from(R"([{"type": "sokd", "params": )" + params + "}]");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(R"({"search": "second_order"})").find("second-order (DARTS) policy step is not implemented"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"search": "random"})").find("expected \"first_order\" or \"none\""), std::string::npos);
  EXPECT_NE(error_of(R"({"area_num": 0})").find("area_num: must be >= 1"), std::string::npos);
}

// An interrupted SoKD run resumed from its checkpoint ends bitwise where the uninterrupted one does:
// student, regressor, DAM and the augmentation policy with its Adam moments (the search spans the
// interruption), because the policy is checkpointed and every draw is seeded by the step.
TEST(SokdStrategy, ResumeMidSearchEqualsUninterruptedRun) {
  const ExperimentConfig cfg = ExperimentConfig::from_json(Json::parse(R"({
    "schema_version": 1,
    "experiment": {"name": "sokd_resume", "seed": 3},
    "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "num_classes": 4, "synthetic_size": 32,
             "batch_size": 8, "eval_batch_size": 32, "num_workers": 2},
    "model": {"arch": "resnet8"},
    "solver": {"lr": 0.05, "epochs": 3},
    "log": {"every_steps": 1000}
  })"), "sokd_resume.json");
  auto run_it = [&](const std::string& dir, const std::string& resume, int64_t stop_after) {
    Generator gen(cfg.seed);
    const ModelOptions mo{4, 1, 16};
    auto student = create_model("resnet8", mo, gen);
    Generator tgen(99);
    auto teacher = create_model("resnet8", mo, tgen);
    Distiller d(student, teacher,
                parse_terms(Json::parse(R"([{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4,
                              "area_num": 3, "search_epochs": 2, "policy_lr": 0.05}}])"), "t.json"),
                DistillerOptions{}, Shape{1, 16, 16}, gen);
    DataSplits data = load_datasets(cfg.data);
    RunDir run(dir);
    Trainer trainer(cfg, d, data, run);
    trainer.fit(resume, stop_after);
    StateDict out;
    for (auto& [k, t] : student->state_dict()) out.emplace_back(k, t.clone());
    for (auto& [k, t] : d.extra_state()) out.emplace_back(k, t.clone());
    return out;
  };
  const std::string base = ::testing::TempDir() + "/retort_sokd_resume";
  std::filesystem::remove_all(base);
  const StateDict straight = run_it(base + "/straight", "", 0);
  run_it(base + "/interrupted", "", 6);  // 4 steps per epoch: stops in epoch 2, inside the search
  const StateDict resumed = run_it(base + "/interrupted", "auto", 0);
  ASSERT_EQ(straight.size(), resumed.size());
  bool policy_seen = false;
  for (size_t i = 0; i < straight.size(); ++i) {
    ASSERT_EQ(straight[i].first, resumed[i].first);
    EXPECT_EQ(straight[i].second.to_vector(), resumed[i].second.to_vector()) << straight[i].first << " differs";
    policy_seen |= straight[i].first == "term.sokd.policy.magnitude";
  }
  EXPECT_TRUE(policy_seen);
  std::filesystem::remove_all(base);
}
