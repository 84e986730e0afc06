// The Distiller and every built-in strategy, end to end on tiny synthetic data: each trains (finite
// losses, the student and the strategy's own modules get gradients), the frozen teacher's weights
// and BN statistics stay exactly as loaded, warmup scales a term, and configs are validated.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "distill/distiller.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/logit.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/serialize.h"
#include "layers/init.h"
#include "layers/layers.h"
#include "models/registry.h"
#include "tests/common/distill_fixtures.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
namespace fs = std::filesystem;

namespace {

const Shape& kSample = retort::testing::kTinySample;
const ModelOptions& kOpts = retort::testing::kTinyModel;
using retort::testing::expect_error;
using retort::testing::terms_from;
Batch make_batch(int64_t n, uint64_t seed) { return retort::testing::tiny_batch(n, seed); }

StateDict snapshot(const Module& m) {
  StateDict s;
  for (auto& [k, t] : m.state_dict()) s.emplace_back(k, t.clone());
  return s;
}

// One training step of `terms` between these two networks; returns the terms.
LossTerms one_step(const std::string& terms_json, const std::shared_ptr<Module>& student,
                   const std::shared_ptr<Module>& teacher, Generator& gen) {
  Distiller d(student, teacher, terms_from(terms_json), {}, kSample, gen);
  d.train(true);
  Tensor logits;
  LossTerms terms = d.losses(make_batch(8, 2), TrainProgress{0, 10, 0, 0, 10}, logits);
  const Tensor total = total_loss(terms);
  total.backward();
  // Feature terms reach only the layers below their taps; every term reaches the stem.
  EXPECT_TRUE(student->named_parameters()[0].second.grad().defined()) << terms_json << ": no gradient for the stem";
  for (const auto& t : d.terms())
    for (auto& [name, p] : t.strategy->named_parameters())
      EXPECT_TRUE(p.grad().defined()) << t.name << ": no gradient for its module parameter " << name;
  for (auto& p : teacher->parameters()) EXPECT_FALSE(p.grad().defined()) << "the teacher got a gradient";
  return terms;
}

// The same with fresh networks: a resnet8 student and a resnet14 teacher by default.
LossTerms one_step(const std::string& terms_json, const std::string& student_arch = "resnet8",
                   const std::string& teacher_arch = "resnet14") {
  Generator gen(1);
  auto student = create_model(student_arch, kOpts, gen);
  auto teacher = create_model(teacher_arch, kOpts, gen);
  return one_step(terms_json, student, teacher, gen);
}

}  // namespace

TEST(Strategies, EveryBuiltinTrainsOneStep) {
  const std::vector<std::string> cases = {
      R"([{"type": "ce"}])",
      R"([{"type": "ce", "weight": 0.1}, {"type": "kd", "weight": 0.9, "params": {"temperature": 4}}])",
      R"([{"type": "kd", "params": {"logit_standardization": true}}])",
      R"([{"type": "dkd", "params": {"beta": 8}}])",
      R"([{"type": "dkd", "params": {"logit_standardization": true}}])",
      R"([{"type": "fitnet"}])",
      R"([{"type": "at"}])",
      R"([{"type": "cwd"}])",
      R"([{"type": "reviewkd"}])",
      R"([{"type": "sp"}])",
      R"([{"type": "sp", "params": {"student_taps": ["layer2", "layer3"]}}])",
      R"([{"type": "pkt"}])",
      R"([{"type": "rkd", "params": {"angle_weight": 0}}, {"type": "ce"}])",
      R"([{"type": "vid"}])",
      R"([{"type": "nst"}])",
      R"([{"type": "cc"}, {"type": "ce"}])",
      R"([{"type": "ofd"}, {"type": "ce"}])",
      R"([{"type": "ab"}])",
      R"([{"type": "fsp"}])",  // resnet14 has resnet8's widths
      R"([{"type": "fsp", "params": {"student_taps": ["layer2", "layer3"]}}, {"type": "ce"}])",
      R"([{"type": "kdsvd"}, {"type": "ce"}])",
      R"([{"type": "kdsvd", "params": {"k": 2, "student_taps": ["layer2", "layer3"], "view": "width"}}])",
      R"([{"type": "ce"}, {"type": "generous_teacher", "weight": 8}])",
      R"([{"type": "generous_teacher", "params": {"select": "teacher_correct", "tckd_weight": 1}}])",
      R"([{"type": "ce"}, {"type": "mtkd_ssr"}])",
      R"([{"type": "ce"}, {"type": "mtkd_ssr", "params": {"scd": "cd", "teacher_heads": "none", "crd_pairs": "adjacent",
           "crd_direction": "shallow_teaches_deep"}}])",
      R"([{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 10}}])",
  };
  for (const auto& c : cases) {
    const LossTerms terms = one_step(c);
    for (auto& [n, t] : terms) EXPECT_TRUE(std::isfinite(t.item())) << c << ": term " << n << " = " << t.item();
  }
  // Connectors bridge different widths: resnet8 (16..64 channels) from resnet8x4 (64..256).
  for (const char* c : {R"([{"type": "fitnet"}])", R"([{"type": "cwd"}])", R"([{"type": "reviewkd"}])",
                        R"([{"type": "mtkd_ssr"}])", R"([{"type": "sp"}, {"type": "pkt"}, {"type": "rkd"}])",
                        R"([{"type": "vid"}, {"type": "nst"}, {"type": "cc"}, {"type": "ofd"}, {"type": "ab"}])",
                        R"([{"type": "kdsvd", "params": {"view": "width"}}])"})
    one_step(c, "resnet8", "resnet8x4");
}

// Across families, every feature strategy's default taps follow each network's own stages (Module::stages():
// mdistiller's feats[1:]), so the literature's heterogeneous pairs run with no tap named — except FSP, whose
// flow matrices need equal widths, refused naming the taps. The resolved paths are what params() reports.
TEST(Strategies, DefaultTapsFollowEachNetworksStagesAcrossFamilies) {
  const std::vector<std::string> feature_terms = {
      R"([{"type": "fitnet"}])", R"([{"type": "at"}])", R"([{"type": "cwd"}])", R"([{"type": "reviewkd"}])",
      R"([{"type": "sp"}, {"type": "pkt"}, {"type": "rkd"}, {"type": "cc"}])", R"([{"type": "vid"}, {"type": "nst"}])",
      R"([{"type": "ofd"}, {"type": "ab"}])", R"([{"type": "kdsvd", "params": {"view": "width"}}])",
      R"([{"type": "ce"}, {"type": "mtkd_ssr"}])", R"([{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4}}])"};
  struct Pair {
    const char *student, *teacher;
  };
  std::vector<std::string> refused;
  for (const Pair& p : {Pair{"vgg8", "vgg13"}, Pair{"MobileNetV2", "vgg13"}, Pair{"ShuffleV1", "resnet32x4"},
                        Pair{"ShuffleV2", "wrn_40_2"}}) {
    const std::string pair = std::string(p.teacher) + " -> " + p.student;
    Generator gen(1);
    auto student = create_model(p.student, kOpts, gen), teacher = create_model(p.teacher, kOpts, gen);
    for (const auto& c : feature_terms) {
      SCOPED_TRACE(pair + ": " + c);
      try {  // the networks are built once per pair (the large teachers' initialisation is slow)
        for (auto& [n, t] : one_step(c, student, teacher, gen)) EXPECT_TRUE(std::isfinite(t.item())) << n << " = " << t.item();
      } catch (const Error& e) {
        refused.push_back(pair + ": " + e.what());
      }
    }
  }
  // Refused, each naming the stage and both shapes: CWD compares per-channel spatial distributions and
  // KDSVD right singular vectors, so both need maps of equal size — and ShuffleNets halve the resolution
  // in their first stage, MobileNetV2 in its last, where the ResNets, WRNs and VGGs do not (pick matching
  // stages with student_taps / teacher_taps). The literature runs neither on these pairs.
  ASSERT_EQ(refused.size(), 6u) << detail::join(refused, "\n");
  for (const char* want : {"vgg13 -> MobileNetV2: distill term 'cwd' (cwd): cwd: student blocks.6 [2, 160, 1, 1] and "
                           "teacher block4 [2, 512, 2, 2] need the same spatial size",
                           "vgg13 -> MobileNetV2: distill term 'kdsvd' (kdsvd): kdsvd: stage 3 (student tap \"blocks.6\", "
                           "teacher tap \"block4\")",
                           "resnet32x4 -> ShuffleV1: distill term 'cwd' (cwd): cwd: student layer3",
                           "resnet32x4 -> ShuffleV1: distill term 'kdsvd' (kdsvd): kdsvd: stage 0",
                           "wrn_40_2 -> ShuffleV2: distill term 'cwd' (cwd): cwd: student layer3",
                           "wrn_40_2 -> ShuffleV2: distill term 'kdsvd' (kdsvd): kdsvd: stage 0"})
    EXPECT_TRUE(std::any_of(refused.begin(), refused.end(), [&](const std::string& r) { return r.find(want) == 0; }))
        << want << "\n" << detail::join(refused, "\n");
  Generator gen(1);
  auto mobile = create_model("MobileNetV2", kOpts, gen), vgg13 = create_model("vgg13", kOpts, gen);
  Distiller d(mobile, vgg13,
              terms_from(R"([{"type": "at"}, {"type": "ofd"}, {"type": "fitnet"}, {"type": "sp"},
                             {"type": "reviewkd"}, {"type": "mtkd_ssr"}])"),
              {}, kSample, gen);
  using V = std::vector<std::string>;
  const Json at = d.terms()[0].strategy->params(), ofd = d.terms()[1].strategy->params();
  EXPECT_EQ(at["student_taps"].get<V>(), (V{"blocks.1", "blocks.2", "blocks.4", "blocks.6"}));
  EXPECT_EQ(at["teacher_taps"].get<V>(), (V{"block1", "block2", "block3", "block4"}));
  EXPECT_EQ(ofd["teacher_taps"].get<V>(), (V{"block1:preact", "block2:preact", "block3:preact", "block4:preact"}));
  EXPECT_EQ(d.terms()[2].strategy->params()["student_tap"], "blocks.2");  // FitNet's hint: stage 2
  EXPECT_EQ(d.terms()[2].strategy->params()["teacher_tap"], "block2");
  EXPECT_EQ(d.terms()[3].strategy->params()["student_taps"].get<V>(), V{"blocks.6"});  // SP: the last stage
  EXPECT_EQ(d.terms()[4].strategy->params()["teacher_taps"].get<V>(),
            (V{"block1:preact", "block2:preact", "block3:preact", "block4:preact", ":pooled"}));
  EXPECT_EQ(d.terms()[5].strategy->params()["teacher_stages"].get<V>(), (V{"block1", "block2", "block3", "block4"}));

  // FSP across widths, and stage lists that cannot pair, are refused before training naming both sides.
  auto shuffle = create_model("ShuffleV1", kOpts, gen);
  expect_error([&] { Distiller(shuffle, vgg13, terms_from(R"([{"type": "fsp"}])"), {}, kSample, gen); },
               {"fsp"});
  expect_error([&] { Distiller(shuffle, vgg13, terms_from(R"([{"type": "at"}])"), {}, kSample, gen); },
               {"at: the student's taps (ShuffleNet: layer1, layer2, layer3) and the teacher's (VGG: block1, block2, "
                "block3, block4) must pair one to one", "student_taps and teacher_taps"});
  {  // naming them pairs ShuffleV1's three stages with vgg13's last three
    Distiller ok(shuffle, vgg13, terms_from(R"([{"type": "at", "params": {"teacher_taps": ["stage-3", "stage-2", "stage-1"]}}])"),
                 {}, kSample, gen);
    EXPECT_EQ(ok.terms()[0].strategy->params()["teacher_taps"].get<V>(), (V{"block2", "block3", "block4"}));
  }
  expect_error([&] { Distiller(shuffle, vgg13, terms_from(R"([{"type": "fitnet", "params": {"student_tap": "stage4"}}])"), {}, kSample, gen); },
               {"fitnet student_tap on ShuffleNet: tap 'stage4': ShuffleNet has 3 stages: layer1, layer2, layer3"});
}

// KDSVD shows each tap's compared singular vectors (the student's aligned to the teacher's) and how
// close they are; a student distilled from itself matches exactly.
TEST(Strategies, KdsvdShowsItsSingularVectors) {
  Generator gen(1), gen_same(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8", kOpts, gen_same);  // the same weights
  Distiller d(student, teacher, terms_from(R"([{"type": "kdsvd", "params": {"k": 2}}])"), {}, kSample, gen);
  d.train(false);
  Tensor logits;
  const LossTerms terms = d.losses(make_batch(6, 4), TrainProgress{}, logits);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].first, "kdsvd");
  EXPECT_NEAR(terms[0].second.item(), 0.0, 1e-9);
  std::map<std::string, Tensor> views;
  for (const auto& [k, v] : d.views()) views[k] = v;
  ASSERT_EQ(views.count("term.kdsvd.student_vectors.layer1"), 1u);
  EXPECT_EQ(views.at("term.kdsvd.student_vectors.layer1").shape(), (Shape{6, 16, 2}));
  EXPECT_EQ(views.at("term.kdsvd.teacher_vectors.layer3").shape(), (Shape{6, 64, 2}));  // 64 channels
  EXPECT_TRUE(retort::testing::close_to("same network", views.at("term.kdsvd.student_vectors.layer2"),
                                        views.at("term.kdsvd.teacher_vectors.layer2"), 1e-5, 1e-5));
  std::string text;
  for (const auto& n : d.view_notes()) text += n + "\n";
  EXPECT_NE(text.find("term kdsvd (kdsvd): layer1 singular vectors |cos| student vs teacher 1;"), std::string::npos) << text;
}

// The relation strategies show both networks' relation maps of the latest batch (retort-inspect --distill,
// pictures) and how well they agree; the maps are those the loss compares.
TEST(Strategies, RelationStrategiesShowTheirMaps) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8x4", kOpts, gen);
  Distiller d(student, teacher, terms_from(R"([{"type": "sp"}, {"type": "pkt"}, {"type": "rkd"}])"), {}, kSample, gen);
  d.train(false);
  Tensor logits;
  const LossTerms terms = d.losses(make_batch(6, 4), TrainProgress{}, logits);
  std::map<std::string, Shape> shapes;
  for (const auto& [k, v] : d.views()) shapes[k] = v.shape();
  EXPECT_EQ(shapes.at("term.sp.student_similarity.layer3"), (Shape{6, 6}));
  EXPECT_EQ(shapes.at("term.sp.teacher_similarity.layer3"), (Shape{6, 6}));
  EXPECT_EQ(shapes.at("term.pkt.teacher_probabilities"), (Shape{6, 6}));
  EXPECT_EQ(shapes.at("term.rkd.student_distances"), (Shape{6, 6}));
  EXPECT_EQ(shapes.at("term.rkd.teacher_angles"), (Shape{6, 6, 6}));
  // The [B, B] maps are named for the pictures (drawn as matrices); the angles are not.
  const std::vector<std::string> relations = d.relation_views();
  EXPECT_EQ(relations, (std::vector<std::string>{"term.sp.student_similarity.layer3", "term.sp.teacher_similarity.layer3",
                                                 "term.pkt.student_probabilities", "term.pkt.teacher_probabilities",
                                                 "term.rkd.student_distances", "term.rkd.teacher_distances"}));
  for (const auto& r : relations) EXPECT_EQ(shapes.at(r), (Shape{6, 6})) << r;
  // The SP term is the mse of the two views it shows.
  std::map<std::string, Tensor> views;
  for (const auto& [k, v] : d.views()) views[k] = v;
  EXPECT_NEAR(terms[0].second.item(),
              mse_loss(views.at("term.sp.student_similarity.layer3"), views.at("term.sp.teacher_similarity.layer3")).item(),
              1e-6);
  const auto notes = d.view_notes();
  ASSERT_EQ(notes.size(), 3u);
  EXPECT_NE(notes[0].find("term sp (sp): layer3 similarities, student vs teacher: r "), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("over 30 pairs"), std::string::npos) << notes[0];
  EXPECT_NE(notes[2].find("angles r "), std::string::npos) << notes[2];
  EXPECT_NE(notes[2].find("over 120 triplets"), std::string::npos) << notes[2];
}

// VID's parameters are named key for key as RepDistiller's ModuleList of VIDLoss, its variances start
// at init_pred_var, and retort-inspect shows them per teacher stage.
TEST(Strategies, VIDNamesItsParametersAsTheReferenceAndShowsItsVariances) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8x4", kOpts, gen);
  Distiller d(student, teacher, terms_from(R"([{"type": "vid", "params": {"init_pred_var": 3}}])"), {}, kSample, gen);
  std::map<std::string, Shape> params;
  for (auto& [name, p] : d.terms()[0].strategy->named_parameters()) params[name] = p.shape();
  EXPECT_EQ(params.size(), 12u);  // 3 stages x (3 convs + log_scale)
  EXPECT_EQ(params.at("0.regressor.0.weight"), (Shape{64, 16, 1, 1}));  // resnet8 layer1 16 -> resnet8x4's 64
  EXPECT_EQ(params.at("0.regressor.2.weight"), (Shape{64, 64, 1, 1}));
  EXPECT_EQ(params.at("2.regressor.4.weight"), (Shape{256, 256, 1, 1}));
  EXPECT_EQ(params.at("2.log_scale"), (Shape{256}));
  d.train(true);
  Tensor logits;
  const LossTerms terms = d.losses(make_batch(4, 5), TrainProgress{}, logits);
  EXPECT_TRUE(std::isfinite(terms[0].second.item()));
  std::map<std::string, Tensor> views;
  for (const auto& [k, v] : d.views()) views[k] = v;
  ASSERT_EQ(views.count("term.vid.variance.layer2"), 1u);
  for (double v : views.at("term.vid.variance.layer2").to_vector()) EXPECT_NEAR(v, 3.0, 1e-9);
  const auto notes = d.view_notes();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("predicted variance.layer1 3 (min 3, max 3 over 64 channels)"), std::string::npos) << notes[0];
}

// OFD's margins come from the BN before the teacher's ReLU at each tapped point: a ResNet block's bn2,
// a WRN group's pre-activation BN (the next group's first, the model's last); taps without one are
// refused by name.
TEST(Strategies, OFDTakesItsMarginsFromTheTeachersBatchNorms) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet14", kOpts, gen);
  auto& bn = dynamic_cast<BatchNorm2d&>(teacher->find("layer2.1.bn2"));
  init::uniform_(bn.weight(), gen, 0.5, 2.0);
  init::uniform_(bn.bias(), gen, -1.0, 1.0);
  Distiller d(student, teacher, terms_from(R"([{"type": "ofd", "weight": 0.001}])"), {}, kSample, gen);
  auto& ofd = *d.terms()[0].strategy;
  std::map<std::string, Tensor> buffers;
  for (auto& [name, b] : ofd.named_buffers()) buffers[name] = b;
  const std::vector<double> want = ofd_margin(bn.weight(), bn.bias()).to_vector(), got = buffers.at("margin1").to_vector();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << i;
  std::map<std::string, Shape> params;
  for (auto& [name, p] : ofd.named_parameters()) params[name] = p.shape();
  EXPECT_EQ(params.at("connectors.0.0.weight"), (Shape{16, 16, 1, 1}));
  EXPECT_EQ(params.at("connectors.2.1.weight"), (Shape{64}));
  d.train(false);
  Tensor logits;
  d.losses(make_batch(4, 2), TrainProgress{}, logits);
  const auto notes = d.view_notes();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("layer3:preact: margin mean -0.798; teacher at or below it "), std::string::npos) << notes[0];

  auto wide = create_model("wrn_16_2", kOpts, gen);
  Distiller w(student, wide, terms_from(R"([{"type": "ofd", "params": {"student_taps": ["layer3:preact"],
                                             "teacher_taps": ["block3:preact"]}}])"), {}, kSample, gen);
  EXPECT_EQ(w.terms()[0].strategy->named_buffers()[0].second.numel(), 128);  // wrn_16_2's final bn1
  for (const char* tap : {"layer3", "layer1.0.bn2"})  // outputs: after the ReLU, or a BN itself
    try {
      Distiller bad(student, teacher, terms_from(std::string(R"([{"type": "ofd", "params": {"student_taps": [")") + tap +
                                                 R"("]}}])"), {}, kSample, gen);
      FAIL() << "expected an error for " << tap;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the teacher names no batch norm before the ReLU at \"" + std::string(tap)),
                std::string::npos) << e.what();
    }
}

TEST(Strategies, KDTermMatchesTheNode) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet14", kOpts, gen);
  teacher->eval();
  Distiller d(student, teacher, terms_from(R"([{"name": "kd", "type": "kd", "weight": 0.9}])"), {}, kSample, gen);
  const Batch b = make_batch(8, 3);
  Tensor logits;
  const double got = d.losses(b, TrainProgress{}, logits)[0].second.item();
  NoGradGuard ng;
  const double want = 0.9 * kd_loss((*student)(b.inputs), (*teacher)(b.inputs), 4.0).item();
  EXPECT_NEAR(got, want, 1e-5 * std::abs(want));
}

// MTKD-SSR reports its parts by name, each scaled by the term's weight; they sum to compute(); the
// student's auxiliary heads, the teacher's heads and the adapters are the strategy's own modules.
TEST(Strategies, MtkdSsrReportsEachPartAndOwnsItsHeads) {
  // Two identical set-ups (same seeds) differing only in the term weight (2 vs 1) and scd_weight (3 vs 1).
  auto parts_of = [](const std::string& terms, std::vector<std::string>* modules) {
    Generator gen(1);
    auto student = create_model("resnet8", kOpts, gen);
    auto teacher = create_model("resnet8x4", kOpts, gen);
    Distiller d(student, teacher, terms_from(terms), {}, kSample, gen);
    d.train(false);  // BN in eval mode: the forward is a pure function of the batch
    if (modules)
      for (auto& [n, m] : d.terms()[0].strategy->children()) modules->push_back(n);
    Tensor logits;
    return d.losses(make_batch(8, 5), TrainProgress{}, logits);
  };
  std::vector<std::string> modules;
  const LossTerms heavy =
      parts_of(R"([{"name": "ssr", "type": "mtkd_ssr", "weight": 2, "params": {"scd_weight": 3}}])", &modules);
  const LossTerms plain = parts_of(R"([{"name": "ssr", "type": "mtkd_ssr"}])", nullptr);
  std::vector<std::string> names;
  for (auto& [n, t] : heavy) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"ssr.aux_ce", "ssr.teacher_heads_ce", "ssr.scd", "ssr.srd", "ssr.crd"}));
  ASSERT_EQ(plain.size(), heavy.size());
  for (size_t i = 0; i < heavy.size(); ++i) {
    EXPECT_GT(plain[i].second.item(), 0.0) << names[i];
    EXPECT_NEAR(heavy[i].second.item() / plain[i].second.item(), names[i] == "ssr.scd" ? 6.0 : 2.0, 1e-5) << names[i];
  }
  EXPECT_EQ(modules, (std::vector<std::string>{"student_head1", "teacher_head1", "adapter1", "student_head2",
                                               "teacher_head2", "adapter2", "adapter3"}));

  // A weight of 0 switches its part off: not reported, and SCD's adapters are not built.
  modules.clear();
  const LossTerms some = parts_of(
      R"([{"name": "ssr", "type": "mtkd_ssr", "params": {"scd_weight": 0, "teacher_heads_ce_weight": 0}}])", &modules);
  names.clear();
  for (auto& [n, t] : some) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"ssr.aux_ce", "ssr.srd", "ssr.crd"}));
  EXPECT_EQ(modules, (std::vector<std::string>{"student_head1", "teacher_head1", "student_head2", "teacher_head2"}));
  try {
    parts_of(R"([{"type": "mtkd_ssr", "params": {"aux_ce_weight": 0, "teacher_heads_ce_weight": 0, "scd_weight": 0,
                                                "srd_weight": 0, "crd_weight": 0}}])", nullptr);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("every part is switched off"), std::string::npos) << e.what();
  }
}

TEST(Strategies, WarmupScalesTheTerm) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8", kOpts, gen);
  Distiller d(student, teacher, terms_from(R"([{"type": "dkd", "weight": 2, "warmup_epochs": 20}])"), {}, kSample, gen);
  d.train(false);  // same forward twice
  const Batch b = make_batch(8, 4);
  Tensor logits;
  const double e0 = d.losses(b, TrainProgress{0, 40, 0, 0, 1}, logits)[0].second.item();
  const double e9 = d.losses(b, TrainProgress{9, 40, 0, 0, 1}, logits)[0].second.item();
  const double e30 = d.losses(b, TrainProgress{30, 40, 0, 0, 1}, logits)[0].second.item();
  EXPECT_NEAR(e9 / e0, 10.0, 1e-6);   // epoch 1 has weight 1/20, epoch 10 has 10/20
  EXPECT_NEAR(e30 / e0, 20.0, 1e-6);  // full weight after the warmup
}

TEST(Distiller, TeacherStaysFrozenInBothBatchNormModes) {
  for (const char* mode : {"eval", "train"}) {
    Generator gen(1);
    auto student = create_model("resnet8", kOpts, gen);
    auto teacher = create_model("resnet14", kOpts, gen);
    const StateDict before = snapshot(*teacher);
    DistillerOptions opts;
    opts.teacher_bn = mode;
    Distiller d(student, teacher, terms_from(R"([{"type": "ce"}, {"type": "kd"}, {"type": "fitnet"}])"), opts,
                kSample, gen);
    auto opt = make_optimizer(Json{{"type", "sgd"}, {"lr", 0.1}, {"momentum", 0.9}}, d.trainable_parameters());
    d.train(true);
    for (int step = 0; step < 3; ++step) {
      Tensor logits;
      LossTerms terms = d.losses(make_batch(8, 10 + step), TrainProgress{}, logits);
      Tensor total = add(add(terms[0].second, terms[1].second), terms[2].second);
      opt->zero_grad();
      total.backward();
      opt->step();
    }
    const StateDict after = teacher->state_dict();
    for (size_t i = 0; i < before.size(); ++i)
      EXPECT_EQ(before[i].second.to_vector(), after[i].second.to_vector()) << mode << ": teacher " << before[i].first << " changed";
  }
}

TEST(Distiller, ExtraModulesAreCountedAndCheckpointed) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8x4", kOpts, gen);
  Distiller d(student, teacher, terms_from(R"([{"name": "hint", "type": "fitnet"}])"), {}, kSample, gen);
  EXPECT_GT(d.extra_parameter_count(), 0);
  const StateDict extra = d.extra_state();
  ASSERT_FALSE(extra.empty());
  EXPECT_EQ(extra[0].first.rfind("term.hint.regressor.", 0), 0u) << extra[0].first;
  EXPECT_EQ(d.trainable_parameters().size(), student->parameters().size() + d.terms()[0].strategy->parameters().size());
  d.load_extra_state(extra);  // round trip
}

TEST(Distiller, ConfigErrorsNameTheTerm) {
  auto expect_error = [](const std::string& json, const char* needle) {
    try {
      terms_from(json);
      FAIL() << "expected an error for " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"([{"type": "kdd"}])", "unknown strategy type 'kdd'");
  expect_error(R"([{"type": "kd", "params": {"temprature": 4}}])", "did you mean distill.terms[0].params.temperature");
  expect_error(R"([{"type": "kd", "wieght": 1}])", "unknown key distill.terms[0].wieght");
  expect_error(R"([{"type": "kd"}, {"type": "kd"}])", "used twice");
  expect_error(R"([{"type": "kd", "params": {"temperature": -1}}])", "temperature");
  expect_error(R"([{"type": "generous_teacher", "params": {"select": "correct"}}])",
               "distill.terms[0].params.select: expected \"all\" or \"teacher_correct\", got \"correct\"");
  expect_error(R"([{"type": "generous_teacher", "params": {"std_from": "student"}}])",
               "distill.terms[0].params.std_from: expected \"each\"");
  expect_error(R"([{"type": "mtkd_ssr", "params": {"scd": "kl"}}])", "expected one of \"cwd\", \"cd\", \"none\"");
  expect_error(R"([{"type": "mtkd_ssr", "params": {"student_stages": ["layer1", "stage2", "layer3"], "teacher_stages": ["layer1"]}}])",
               "1 teacher stages for 3 student stages");
  expect_error(R"([{"type": "mtkd_ssr", "params": {"crd_weight": -1}}])", "crd_weight: must be finite and >= 0");
  expect_error(R"([{"type": "sp", "params": {"teacher_taps": ["layer2", "layer3"]}}])",
               "2 teacher taps for 1 student taps");
  expect_error(R"([{"type": "rkd", "params": {"distance_weight": -2}}])", "distill.terms[0].params.distance_weight: must be >= 0");
  expect_error(R"([{"type": "rkd", "params": {"distance_weight": 0, "angle_weight": 0}}])", "both 0");
  expect_error(R"([{"type": "pkt", "params": {"student_taps": ":pooled"}}])", "did you mean distill.terms[0].params.student_tap");
  expect_error(R"([{"type": "vid", "params": {"init_pred_var": 0}}])",
               "distill.terms[0].params.init_pred_var: the initial variance must be above eps");
  expect_error(R"([{"type": "vid", "params": {"eps": -1}}])", "distill.terms[0].params.eps: must be >= 0");
  expect_error(R"([{"type": "vid", "params": {"student_taps": ["layer1"], "teacher_taps": []}}])",
               "0 teacher taps for 1 student taps");
  expect_error(R"([{"type": "nst", "params": {"student_taps": ["layer1", "layer2", "layer3"], "teacher_taps": ["layer3"]}}])",
               "1 teacher taps for 3 student taps");
  expect_error(R"([{"type": "cc", "params": {"feat_dim": 0}}])", "distill.terms[0].params.feat_dim: must be positive");
  expect_error(R"([{"type": "ofd", "params": {"kernel_size": 2}}])", "distill.terms[0].params.kernel_size: must be odd");
  expect_error(R"([{"type": "at", "params": {"p": 0}}])", "distill.terms[0].params.p: must be a number of at least 1, got 0");
  expect_error(R"([{"type": "reviewkd", "params": {"max_mid_channels": 0}}])",
               "distill.terms[0].params.max_mid_channels: must be >= 1, got 0");
  expect_error(R"([{"type": "ab", "params": {"margin": -0.5}}])", "distill.terms[0].params.margin: must be >= 0");
  expect_error(R"([{"type": "fsp", "params": {"student_taps": ["layer3"]}}])",
               "distill.terms[0].params.student_taps: FSP compares consecutive taps, so it needs at least 2, got 1");
  expect_error(R"([{"type": "kdsvd", "params": {"student_taps": ["layer3"]}}])",
               "distill.terms[0].params.student_taps: KDSVD relates consecutive taps, so it needs at least 2, got 1");
  expect_error(R"([{"type": "kdsvd", "params": {"k": 0}}])",
               "distill.terms[0].params.k: the number of singular vectors must be >= 1, got 0");
  expect_error(R"([{"type": "kdsvd", "params": {"gap_eps": -0.1}}])",
               "distill.terms[0].params.gap_eps: must be finite and >= 0, got -0.1");
  expect_error(R"([{"type": "kdsvd", "params": {"view": "rows"}}])",
               "distill.terms[0].params.view: expected \"channels\" (the paper's and RepDistiller's [B, H·W, C]) or "
               "\"width\" (mdistiller's [B, C·H, W]), got \"rows\"");
}

TEST(Distiller, UnbridgeableFeaturesAndMissingTeacherAreClearErrors) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8", kOpts, gen);
  // Student stage 3 (4x4) cannot be regressed onto teacher stage 1 (16x16): no ConvReg rule applies.
  try {
    Distiller d(student, teacher, terms_from(R"([{"type": "fitnet", "params": {"student_tap": "layer3", "teacher_tap": "layer1"}}])"),
                {}, kSample, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("distill term 'fitnet' (fitnet): student tap 'layer3' to teacher tap 'layer1': ConvReg: "),
              std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 64, 4, 4]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 16, 16, 16]"), std::string::npos) << msg;
  }
  // FSP compares flow matrices entry by entry: a teacher four times as wide is refused at its first tap.
  try {
    Distiller d(student, create_model("resnet8x4", kOpts, gen), terms_from(R"([{"type": "fsp"}])"), {}, kSample, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("fsp: stage 0 (student tap \":stem\", teacher tap \":stem\"): FSP compares"), std::string::npos) << msg;
    EXPECT_NE(msg.find("student [2, 16, 16, 16] and teacher [2, 32, 16, 16]"), std::string::npos) << msg;
  }
  // KDSVD's singular vectors have one entry per column: taps of different widths are refused, and so
  // is asking for more vectors than a map has columns.
  try {
    Distiller d(student, teacher,
                terms_from(R"([{"type": "kdsvd", "params": {"student_taps": ["layer1", "layer2"], "teacher_taps": ["layer2", "layer3"]}}])"),
                {}, kSample, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("kdsvd: stage 0 (student tap \"layer1\", teacher tap \"layer2\"): KDSVD compares right singular "
                       "vectors, one entry per channel (view \"channels\"), so both maps need the same channels, got "
                       "student [2, 16, 16, 16] and teacher [2, 32, 8, 8]"), std::string::npos) << msg;
  }
  try {  // the width view: a 4x wider teacher is fine, a map narrower than k is not
    Distiller d(student, create_model("resnet8x4", kOpts, gen),
                terms_from(R"([{"type": "kdsvd", "params": {"k": 5, "view": "width"}}])"), {}, kSample, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("stage 2 (student tap \"layer3\", teacher tap \"layer3\"): k = 5 singular vectors, but the map "
                       "has only 4 columns: [2, 256, 4, 4]"), std::string::npos) << msg;
  }
  try {
    Distiller d(student, nullptr, terms_from(R"([{"type": "kd"}])"), {}, kSample, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs a teacher"), std::string::npos) << e.what();
  }
  try {
    Distiller d(student, teacher, terms_from(R"([{"type": "fitnet", "params": {"student_tap": "layer9"}}])"), {},
                kSample, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("distill term 'fitnet' (fitnet): student tap 'layer9': module path 'layer9'"),
              std::string::npos) << e.what();
  }
}

// Every config we ship parses strictly; every distillation recipe builds its Distiller (taps exist,
// connectors bridge the shapes) for the architectures and input it names. A config that reads
// pre-trained MTKD-SSR teacher heads or an FT paraphraser from another shipped config's run
// (output_dir/name) gets them from that config's Distiller, written as a checkpoint: the two phases fit
// together.
TEST(ShippedConfigs, ParseAndBuild) {
  int n = 0;
  for (const auto& dir : {"configs/fmnist", "configs/cifar100"}) {
    std::map<std::string, std::string> producer;  // default run directory -> config file
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(std::string(RETORT_SOURCE_DIR) + "/" + dir))
      if (e.path().extension() == ".json") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const ExperimentConfig cfg = ExperimentConfig::load(f.string());
      producer[cfg.output_dir + "/" + cfg.name] = f.string();
    }
    // One student and one teacher network per architecture, shared by the configs (initialising the
    // large ones is most of this test's time); a Distiller leaves no taps behind.
    std::map<std::string, std::shared_ptr<Module>> students, teachers;
    auto network = [](std::map<std::string, std::shared_ptr<Module>>& cache, const std::string& arch,
                      const ModelOptions& mo) {
      auto& m = cache[arch];
      if (!m) {
        Generator g(0);
        m = create_model(arch, mo, g);
      }
      return m;
    };
    auto build = [&](const ExperimentConfig& cfg, const Json& terms, const std::string& file) {
      const bool cifar = cfg.data.dataset == "cifar100";
      const ModelOptions mo{cifar ? 100 : 10, cifar ? 3 : 1, cifar ? 32 : 28};
      const DistillerOptions opts = DistillerOptions::from_config(cfg, mo);
      Generator gen(0);
      return std::make_unique<Distiller>(network(students, cfg.arch, mo), network(teachers, cfg.teacher.arch, mo),
                                         parse_terms(terms, file), opts, Shape{mo.in_channels, mo.input_size, mo.input_size},
                                         gen);
    };
    for (const auto& f : files) {
      SCOPED_TRACE(f.string());
      const ExperimentConfig cfg = ExperimentConfig::load(f.string());
      ++n;
      if (cfg.terms.empty() || cfg.teacher.arch.empty()) continue;
      Json terms = cfg.terms;
      for (auto& t : terms)
        for (const char* key : {"teacher_heads_from", "paraphraser_from"}) {
          if (!t.contains("params") || !t["params"].contains(key)) continue;
          const std::string from = t["params"][key];
          ASSERT_TRUE(producer.count(from)) << key << " " << from << " is no shipped config's run";
          const ExperimentConfig phase1 = ExperimentConfig::load(producer[from]);
          auto d1 = build(phase1, phase1.terms, producer[from]);
          StateDict tensors;
          for (auto& [k, v] : d1->extra_state()) tensors.emplace_back("extra." + k, v);
          const std::string ckpt = ::testing::TempDir() + "/retort_shipped_phase1.safetensors";
          save_safetensors(ckpt, tensors, {{"format", "retort-checkpoint-1"}, {"arch", phase1.arch}});
          t["params"][key] = ckpt;
        }
      auto d = build(cfg, terms, f.string());
      EXPECT_FALSE(d->terms().empty());
    }
  }
  EXPECT_GE(n, 30);
}
