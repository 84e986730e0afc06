// Golden values for the seed methods' nodes and modules: SoKD's geometric feature ops, masked feature
// MSE, DAM heads and regions; MTKD-SSR's stage response, cross-stage review and channel losses and its
// auxiliary classifier — each against PyTorch written from methods.md's definitions
// (tools/gen_golden_distill_seed.py), outputs and input gradients, in f64 and f32.
#include <gtest/gtest.h>

#include <functional>

#include "distill/connectors.h"
#include "distill/nodes/sokd.h"
#include "distill/nodes/stage.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::close_to;
using retort::testing::GoldenFile;

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_distill_seed.safetensors");
  return g;
}

void check_case(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& fn, DType dtype) {
  retort::testing::check_golden_case(golden(), name, fn, dtype);
}

// The stored PyTorch state dict "<prefix>/state/<name>" for every entry of m's.
void load_golden_state(Module& m, const std::string& prefix, DType dtype) {
  m.to(dtype);  // first, so that f64 weights load without passing through f32
  StateDict state;
  for (const auto& [name, t] : m.state_dict()) state.emplace_back(name, golden()[prefix + "/state/" + name]);
  const Module::LoadReport report = m.load_state_dict(state);
  ASSERT_TRUE(report.ok()) << report.str();
}

class GoldenSeed : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(GoldenSeed, SokdGeometricFeatureOps) {
  Generator gen(0);  // unused by the geometric ops
  for (auto [name, op] : std::vector<std::pair<const char*, FeatureOp>>{{"ShearX", FeatureOp::ShearX},
                                                                        {"ShearY", FeatureOp::ShearY},
                                                                        {"TranslateX", FeatureOp::TranslateX},
                                                                        {"TranslateY", FeatureOp::TranslateY},
                                                                        {"Rotate", FeatureOp::Rotate}}) {
    const std::string c = std::string("feature_op_") + name;
    const double v = golden()[c + "/value"].to_vector()[0];
    check_case(c, [&, op = op](const auto& in) { return apply_feature_op(in[0], op, v, gen); }, GetParam());
  }
}

TEST_P(GoldenSeed, SokdMaskedFeatureMse) {
  check_case("masked_feature_mse", [](const auto& in) { return masked_feature_mse(in[0], in[1], in[2]); }, GetParam());
}

TEST_P(GoldenSeed, SokdDistinctiveAreaDetector) {
  Generator gen(1);
  DistinctiveAreaDetector dam(4, 5, /*trailing_relu=*/true, gen);
  load_golden_state(dam, "dam", GetParam());
  check_case("dam", [&](const auto& in) { return dam(in[0]); }, GetParam());
}

TEST_P(GoldenSeed, SokdDamRegions) {
  const GoldenFile& g = golden();
  for (int64_t k : {4, 7}) {
    const std::string c = "dam_regions_" + std::to_string(k);
    const DType dt = GetParam();
    const DamRegions r =
        dam_regions(g[c + "/heatmap"].to(dt), g[c + "/wh"].to(dt), g[c + "/offset"].to(dt), k);
    EXPECT_EQ(r.mask.to_vector(), g[c + "/mask"].to_vector()) << c;
    EXPECT_EQ(r.boxes.to_vector(), g[c + "/boxes"].to_vector()) << c;
    EXPECT_EQ(r.classes.to_vector(), g[c + "/classes"].to_vector()) << c;
    EXPECT_TRUE(close_to(c + "/scores", r.scores, g[c + "/scores"], 1e-7, 1e-6));
  }
}

TEST_P(GoldenSeed, MtkdStageLosses) {
  check_case("stage_response", [](const auto& in) {
    return stage_response_loss({in[0], in[1], in[2]}, {in[3], in[4], in[5]}, 4.0);
  }, GetParam());
  check_case("cross_stage_review", [](const auto& in) {
    const std::vector<Tensor> z{in[0], in[1], in[2]};
    return cross_stage_review_loss(z, z, review_pairs(3, false, true), 4.0);
  }, GetParam());
  check_case("channel_distill", [](const auto& in) { return channel_distill_loss(in[0], in[1]); }, GetParam());
}

TEST_P(GoldenSeed, MtkdAuxClassifier) {
  for (bool training : {false, true}) {
    Generator gen(2);
    AuxClassifier aux({3, 4, 8, 8}, 16, 2, 2, 7, gen);
    EXPECT_EQ(aux.num_blocks(), 2);
    load_golden_state(aux, "aux", GetParam());
    aux.train(training);
    check_case(training ? "aux_classifier_train" : "aux_classifier_eval", [&](const auto& in) { return aux(in[0]); },
               GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GoldenSeed, ::testing::Values(DType::F64, DType::F32),
                         [](const auto& info) { return std::string(info.param == DType::F64 ? "f64" : "f32"); });
