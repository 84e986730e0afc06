// MTKD-SSR's teacher heads read from an earlier run ("teacher_heads": "pretrained"): loaded exactly from
// a checkpoint's extra.term.<name>.teacher_head<k>.* tensors (file or run directory), frozen (no
// gradient, not given to the optimizer, eval-mode BN, unchanged by training), no teacher_heads_ce part,
// and every way the file can disagree with the config refused with the file in the message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "distill/connectors.h"
#include "distill/distiller.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/optim/optimizer.h"
#include "engine/serialize.h"
#include "models/registry.h"
#include "tests/common/distill_fixtures.h"
#include "tests/common/expect.h"

using namespace retort;
namespace fs = std::filesystem;

namespace {

const Shape& kSample = retort::testing::kTinySample;
const ModelOptions& kOpts = retort::testing::kTinyModel;
using retort::testing::terms_from;
using retort::testing::tiny_batch;
using retort::testing::error_of;
using retort::testing::train_steps;
using retort::testing::write_checkpoint;

std::string fresh_dir(const std::string& name) { return retort::testing::fresh_dir("mtkd_" + name); }

std::unique_ptr<Distiller> make(const std::string& terms, uint64_t seed) {
  return retort::testing::tiny_distiller(terms, seed);
}

Strategy& strategy(Distiller& d) { return *d.terms().back().strategy; }  // the mtkd_ssr term

StateDict heads_of(Strategy& s) {
  StateDict out;
  for (auto& [k, t] : s.state_dict())
    if (k.rfind("teacher_head", 0) == 0) out.emplace_back(k, t.clone());
  return out;
}

const char* kJoint = R"([{"type": "ce"}, {"name": "ssr", "type": "mtkd_ssr"}])";

std::string pretrained(const std::string& from, const std::string& extra = "") {
  return R"([{"type": "ce"}, {"name": "ssr", "type": "mtkd_ssr", "params": {"teacher_heads": "pretrained",
           "teacher_heads_from": ")" + from + "\"" + extra + "}}]";
}

}  // namespace

TEST(MtkdSsrPretrainedHeads, LoadedExactlyFromARunDirectoryAndFrozen) {
  const std::string dir = fresh_dir("load");
  auto joint = make(kJoint, 1);
  train_steps(*joint, 3);
  write_checkpoint(*joint, dir);
  const StateDict trained = heads_of(strategy(*joint));
  ASSERT_FALSE(trained.empty());

  auto d = make(pretrained(dir), 7);  // another seed: nothing but the file can make the heads equal
  Strategy& s = strategy(*d);
  StateDict loaded = heads_of(s);
  ASSERT_EQ(loaded.size(), trained.size());
  for (size_t i = 0; i < loaded.size(); ++i) {
    EXPECT_EQ(loaded[i].first, trained[i].first);
    EXPECT_EQ(loaded[i].second.to_vector(), trained[i].second.to_vector()) << loaded[i].first;
  }
  // The frozen heads are no optimizer parameters: the joint run's count minus theirs.
  int64_t head_params = 0;
  for (auto& [n, p] : s.named_parameters())
    if (n.rfind("teacher_head", 0) == 0) {
      EXPECT_FALSE(p.requires_grad()) << n;
      ++head_params;
    }
  EXPECT_GT(head_params, 0);
  EXPECT_EQ(d->trainable_parameters().size() + head_params, joint->trainable_parameters().size());

  // Training: no teacher_heads_ce part; the heads stay in eval mode, get no gradient and do not change
  // (weights and BN statistics), while the student's own heads do train.
  d->train(true);
  for (auto& [n, m] : s.children()) EXPECT_EQ(m->is_training(), n.rfind("teacher_head", 0) != 0) << n;
  Tensor logits;
  std::vector<std::string> names;
  for (auto& [n, t] : d->losses(tiny_batch(8, 3), TrainProgress{}, logits)) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"ce", "ssr.aux_ce", "ssr.scd", "ssr.srd", "ssr.crd"}));
  const StateDict student_head_before = [&] {
    StateDict out;
    for (auto& [k, t] : s.state_dict())
      if (k.rfind("student_head1.fc.weight", 0) == 0) out.emplace_back(k, t.clone());
    return out;
  }();
  train_steps(*d, 2);
  for (auto& [n, p] : s.named_parameters())
    if (n.rfind("teacher_head", 0) == 0) {
      EXPECT_FALSE(p.grad().defined()) << n;
    }
  const StateDict after = heads_of(s);
  for (size_t i = 0; i < after.size(); ++i)
    EXPECT_EQ(after[i].second.to_vector(), trained[i].second.to_vector()) << after[i].first;
  for (auto& [k, t] : s.state_dict())
    if (k == student_head_before[0].first) {
      EXPECT_NE(t.to_vector(), student_head_before[0].second.to_vector());
    }

  // The resolved file and term are recorded with the parameters.
  const Json p = s.params();
  EXPECT_EQ(p["teacher_heads_term"], "ssr");
  EXPECT_EQ(p["teacher_heads_file"], dir + "/checkpoints/ckpt_epoch0001_step000000003.safetensors");
}

TEST(MtkdSsrPretrainedHeads, TheSrdTargetIsTheLoadedHeadsOutput) {
  // Same seed, same student: a joint set-up whose heads were copied in and one that read them from the
  // file give the same SRD (both heads in eval mode) — the loaded heads are what SRD sees.
  const std::string dir = fresh_dir("srd");
  auto joint = make(kJoint, 1);
  train_steps(*joint, 2);
  const std::string file = write_checkpoint(*joint, dir);
  auto a = make(kJoint, 5);
  auto b = make(pretrained(file), 5);
  strategy(*a).load_state_dict(strategy(*joint).state_dict());
  strategy(*b).load_state_dict(strategy(*joint).state_dict());  // the student's heads and adapters too
  a->train(false);
  b->train(false);
  Tensor la, lb;
  double srd_a = 0, srd_b = 0;
  for (auto& [n, t] : a->losses(tiny_batch(8, 9), TrainProgress{}, la))
    if (n == "ssr.srd") srd_a = t.item();
  for (auto& [n, t] : b->losses(tiny_batch(8, 9), TrainProgress{}, lb))
    if (n == "ssr.srd") srd_b = t.item();
  EXPECT_GT(srd_a, 0.0);
  EXPECT_DOUBLE_EQ(srd_a, srd_b);
}

TEST(MtkdSsrPretrainedHeads, RefusesFilesAndConfigsThatDoNotMatch) {
  const std::string dir = fresh_dir("errors");
  auto joint = make(kJoint, 1);
  const std::string file = write_checkpoint(*joint, dir + "/run");

  // A model-only file (no extra.* tensors).
  save_safetensors(dir + "/model.safetensors", joint->model().state_dict(), {{"format", "retort-model-1"}});
  std::string e = error_of([&] { make(pretrained(dir + "/model.safetensors"), 2); });
  EXPECT_NE(e.find(dir + "/model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("holds no teacher heads"), std::string::npos) << e;

  // A run directory without checkpoints.
  fs::create_directories(dir + "/empty_run");
  e = error_of([&] { make(pretrained(dir + "/empty_run"), 2); });
  EXPECT_NE(e.find(dir + "/empty_run: no checkpoint"), std::string::npos) << e;

  // Two terms with heads: the message lists them and asks for teacher_heads_term; naming one works.
  auto two = make(R"([{"name": "a", "type": "mtkd_ssr"}, {"name": "b", "type": "mtkd_ssr"}])", 1);
  const std::string two_file = write_checkpoint(*two, dir + "/two");
  e = error_of([&] { make(pretrained(two_file), 2); });
  EXPECT_NE(e.find("several terms (a, b)"), std::string::npos) << e;
  EXPECT_NE(e.find("teacher_heads_term"), std::string::npos) << e;
  e = error_of([&] { make(pretrained(two_file, R"(, "teacher_heads_term": "c")"), 2); });
  EXPECT_NE(e.find("no teacher heads of term \"c\""), std::string::npos) << e;
  EXPECT_NO_THROW(make(pretrained(two_file, R"(, "teacher_heads_term": "b")"), 2));

  // Heads of other stages: more heads in the file than the term has, or fewer.
  e = error_of([&] {
    make(pretrained(file, R"(, "student_stages": ["layer2", "layer3"], "teacher_stages": ["layer2", "layer3"])"), 2);
  });
  EXPECT_NE(e.find(file), std::string::npos) << e;
  EXPECT_NE(e.find("teacher_head2"), std::string::npos) << e;
  EXPECT_NE(e.find("not one of this term's 1 teacher heads"), std::string::npos) << e;
  auto short_run = make(R"([{"name": "ssr", "type": "mtkd_ssr", "params": {"student_stages": ["layer2", "layer3"],
                            "teacher_stages": ["layer2", "layer3"]}}])", 1);
  const std::string short_file = write_checkpoint(*short_run, dir + "/short");
  e = error_of([&] { make(pretrained(short_file), 2); });
  EXPECT_NE(e.find(short_file + ": teacher_head1"), std::string::npos) << e;  // layer2's head where layer1's is wanted
  // (shapes differ: the head on layer1 has one more stride-2 block)

  // Config: the file is required with "pretrained" and refused without it.
  e = error_of([&] { terms_from(R"([{"type": "mtkd_ssr", "params": {"teacher_heads": "pretrained"}}])"); });
  EXPECT_NE(e.find("teacher_heads_from"), std::string::npos) << e;
  e = error_of([&] { terms_from(R"([{"type": "mtkd_ssr", "params": {"teacher_heads_from": "x"}}])"); });
  EXPECT_NE(e.find("only read with teacher_heads \"pretrained\""), std::string::npos) << e;
}

// ---- stage-copy heads ("head": "stages", StageCopyClassifier) --------------------------------------

namespace {

struct CopyCase {
  const char* arch;
  const char* from;
  const char* to;
  std::vector<std::string> units;
};

// The stage taps each family offers (models/registry.h) and what the head copies between them.
const std::vector<CopyCase> kCopyCases = {
    {"resnet8", "layer1", "layer3", {"layer2", "layer3"}},
    {"resnet8x4", "layer2", "layer3", {"layer3"}},
    {"wrn_16_2", "block1", "block3", {"block2", "block3"}},
    {"vgg8", "block1", "block4", {"pool1", "block2", "pool2", "block3", "block4"}},  // pool3 runs only at 64x64
    {"MobileNetV2", "blocks.2", "blocks.6", {"blocks.3", "blocks.4", "blocks.5", "blocks.6"}},
    {"ShuffleV1", "layer1", "layer3", {"layer2", "layer3"}},
    {"ShuffleV2", "layer2", "layer3", {"layer3"}},
    {"ResNet50", "layer1", "layer4", {"layer2", "layer3", "layer4"}},
};

}  // namespace

TEST(StageCopyClassifier, IsAFreshCopyOfTheNetworksLaterStagesInEveryFamily) {
  const ModelOptions opts{5, 1, 16};
  const Shape sample{1, 16, 16};
  for (const auto& c : kCopyCases) {
    SCOPED_TRACE(c.arch);
    // The reference: the same architecture drawn from the same seed, run whole.
    Generator g1(3), g2(3), fc_gen(4);
    auto reference = create_model(c.arch, opts, g1);
    auto fresh = create_model(c.arch, opts, g2);
    StageCopyClassifier head(*fresh, c.from, c.to, sample, 5, fc_gen);
    EXPECT_EQ(head.units(), c.units);

    // Names and initial values: the reference's tensors under each copied unit, '.' -> '_' in the path.
    std::map<std::string, Tensor> want;
    for (auto& [k, t] : reference->state_dict())
      for (const auto& u : c.units)
        if (k.rfind(u + ".", 0) == 0) {
          std::string name = u;
          std::replace(name.begin(), name.end(), '.', '_');
          want[name + k.substr(u.size())] = t;
        }
    size_t copied = 0;
    for (auto& [k, t] : head.state_dict()) {
      if (k.rfind("fc.", 0) == 0) continue;
      ASSERT_TRUE(want.count(k)) << k;
      EXPECT_EQ(t.to_vector(), want[k].to_vector()) << k;
      ++copied;
    }
    EXPECT_EQ(copied, want.size());
    EXPECT_GT(copied, 0u);

    // Forward: head(f_from) = fc(GAP(f_to)) of the reference run on the same input (eval mode).
    Tensor f_from, f_to;
    reference->tap(c.from, [&](const Tensor& t) { f_from = t; });
    reference->tap(c.to, [&](const Tensor& t) { f_to = t; });
    reference->eval();
    head.eval();
    Generator gx(8);
    NoGradGuard ng;
    (*reference)(Tensor::randn({3, 1, 16, 16}, gx));
    const Tensor got = head(f_from);
    const Tensor expect = head.find("fc")(flatten(adaptive_avg_pool2d(f_to, 1, 1), 1));
    ASSERT_EQ(got.shape(), (Shape{3, 5}));
    EXPECT_EQ(head.state_dict().at(head.state_dict().size() - 2).second.shape(), (Shape{5, f_to.size(1)}));  // fc.weight
    const auto a = got.to_vector(), b = expect.to_vector();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * (1 + std::abs(b[i])));
  }
}

namespace {
// A network whose forward does more than call its children: b(2 * a(x)).
class Doubling : public Module {
 public:
  explicit Doubling(Generator& g) : Module("Doubling") {
    a_ = register_module("a", std::make_shared<Conv2d>(1, 2, 3, g, Conv2dOptions{1, 1}));
    b_ = register_module("b", std::make_shared<Conv2d>(2, 2, 3, g, Conv2dOptions{1, 1}));
  }
  Tensor forward(const Tensor& x) override { return (*b_)((*a_)(x) * 2.0); }

 private:
  std::shared_ptr<Conv2d> a_, b_;
};
}  // namespace

TEST(StageCopyClassifier, RefusesWhatItCannotCopy) {
  using retort::testing::expect_error;
  Generator g(1);
  auto net = [&] { return create_model("resnet8", kOpts, g); };
  expect_error([&] { StageCopyClassifier(*net(), "layer1", "layer3:preact", kSample, 4, g); },
               {"ResNet", "layer3:preact", "named point"});
  expect_error([&] { StageCopyClassifier(*net(), "layer3", "layer1", kSample, 4, g); },
               {"'layer1' must run after 'layer3'"});
  expect_error([&] { StageCopyClassifier(*net(), "layer1", "layer9", kSample, 4, g); }, {"layer9"});
  Doubling odd(g);
  expect_error([&] { StageCopyClassifier(odd, "a", "b", kSample, 4, g); },
               {"Doubling", "do not reproduce 'b'", "head \"conv\""});
}

namespace {
DistillerOptions fresh_networks(const std::string& student, const std::string& teacher) {
  DistillerOptions o;
  o.fresh_student = [student](Generator& g) { return create_model(student, kOpts, g); };
  o.fresh_teacher = [teacher](Generator& g) { return create_model(teacher, kOpts, g); };
  return o;
}
}  // namespace

TEST(MtkdSsrStageHeads, HeadsCopyEachNetworksStagesAndTrain) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8x4", kOpts, gen);
  Distiller d(student, teacher, terms_from(R"([{"type": "ce"}, {"name": "ssr", "type": "mtkd_ssr",
                                               "params": {"head": "stages"}}])"),
              fresh_networks("resnet8", "resnet8x4"), kSample, gen);
  Strategy& s = strategy(d);
  EXPECT_EQ(s.params()["head"], "stages");
  // Stage 1's heads copy layer2 and layer3, stage 2's layer3, of each side's own architecture.
  const auto& h1 = dynamic_cast<StageCopyClassifier&>(s.find("student_head1"));
  EXPECT_EQ(h1.units(), (std::vector<std::string>{"layer2", "layer3"}));
  EXPECT_EQ(dynamic_cast<StageCopyClassifier&>(s.find("teacher_head2")).units(), std::vector<std::string>{"layer3"});
  std::map<std::string, Shape> shapes;
  for (auto& [k, t] : d.extra_state()) shapes[k] = t.shape();
  EXPECT_EQ(shapes.at("term.ssr.student_head1.layer2.0.conv1.weight"), (Shape{32, 16, 3, 3}));
  EXPECT_EQ(shapes.at("term.ssr.teacher_head1.layer3.0.conv1.weight"), (Shape{256, 128, 3, 3}));
  EXPECT_EQ(shapes.at("term.ssr.teacher_head2.fc.weight"), (Shape{4, 256}));

  // One step: every part, and both sides' heads get gradients (the teacher's from teacher_heads_ce).
  d.train(true);
  Tensor logits;
  const LossTerms terms = d.losses(tiny_batch(8, 3), TrainProgress{}, logits);
  std::vector<std::string> names;
  for (auto& [n, t] : terms) {
    names.push_back(n);
    EXPECT_TRUE(std::isfinite(t.item())) << n;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"ce", "ssr.aux_ce", "ssr.teacher_heads_ce", "ssr.scd", "ssr.srd", "ssr.crd"}));
  d.model().zero_grad();
  s.zero_grad();
  total_loss(terms).backward();
  for (const char* p : {"student_head1.layer2.0.conv1.weight", "student_head2.fc.weight",
                        "teacher_head1.layer3.0.conv1.weight", "teacher_head2.fc.weight"}) {
    bool found = false;
    for (auto& [n, t] : s.named_parameters())
      if (n == p) {
        found = true;
        ASSERT_TRUE(t.grad().defined()) << p;
        double norm = 0;
        for (double v : t.grad().to_vector()) norm += v * v;
        EXPECT_GT(norm, 0.0) << p;
      }
    EXPECT_TRUE(found) << p;
  }
}

TEST(MtkdSsrStageHeads, NeedsTheFreshNetworkBuilders) {
  Generator gen(1);
  auto student = create_model("resnet8", kOpts, gen);
  auto teacher = create_model("resnet8x4", kOpts, gen);
  retort::testing::expect_error(
      [&] {
        Distiller(student, teacher, terms_from(R"([{"type": "mtkd_ssr", "params": {"head": "stages"}}])"),
                  DistillerOptions{}, kSample, gen);
      },
      {"head \"stages\"", "student", "DistillerOptions::fresh_student"});
}

// For people looking inside: retort-inspect's views of an MTKD-SSR term are every stage's logits of the
// latest step, the last stage being the networks' own, and its text the per-stage top-1 and agreement.
TEST(MtkdSsrInspect, StageLogitsAndTheirAgreement) {
  auto d = make(kJoint, 3);
  d->train(false);
  const Batch b = tiny_batch(8, 4);
  EXPECT_EQ(strategy(*d).inspect_text(), "");  // nothing before a step
  Tensor logits;
  d->losses(b, TrainProgress{}, logits);
  std::map<std::string, Tensor> views;
  for (auto& [n, t] : strategy(*d).inspect()) views[n] = t;
  ASSERT_EQ(views.size(), 6u);  // three stages, student and teacher
  for (int k = 1; k <= 3; ++k) {
    for (const std::string who : {"student_stage", "teacher_stage"}) {
      ASSERT_TRUE(views.count(who + std::to_string(k))) << who << k;
      EXPECT_EQ(views[who + std::to_string(k)].shape(), (Shape{8, kOpts.num_classes})) << who << k;
    }
  }
  EXPECT_EQ(views["student_stage3"].to_vector(), logits.to_vector());
  Tensor teacher_logits;
  {
    NoGradGuard ng;
    teacher_logits = (*d->teacher())(b.inputs);  // eval mode, as in the distiller
  }
  EXPECT_EQ(views["teacher_stage3"].to_vector(), teacher_logits.to_vector());

  // The text's last stage recomputed from the two networks' logits.
  auto top1 = [](const Tensor& z) {
    const std::vector<double> v = z.to_vector();
    std::vector<int64_t> out;
    for (int64_t r = 0; r < z.size(0); ++r)
      out.push_back(std::max_element(v.begin() + r * z.size(1), v.begin() + (r + 1) * z.size(1)) - v.begin() -
                    r * z.size(1));
    return out;
  };
  const auto s = top1(logits), t = top1(teacher_logits);
  const std::vector<double> y = b.targets.to_vector();
  int sc = 0, tc = 0, agree = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    sc += s[i] == static_cast<int64_t>(y[i]);
    tc += t[i] == static_cast<int64_t>(y[i]);
    agree += s[i] == t[i];
  }
  char expected[96];
  std::snprintf(expected, sizeof expected, "stage 3 %.1f%% / %.1f%% (%.1f%%)", sc * 12.5, tc * 12.5, agree * 12.5);
  const std::string text = strategy(*d).inspect_text();
  EXPECT_NE(text.find("stage 1 "), std::string::npos) << text;
  EXPECT_NE(text.find(expected), std::string::npos) << text << " lacks " << expected;
}
