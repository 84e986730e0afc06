// FT (factor transfer) in its two runs: phase "paraphraser" trains the paraphraser alone on the
// teacher's feature (nothing reaches the student); phase "factor" reads it exactly from that run's
// checkpoint (file or run directory), freezes it, trains the translator and the student with the
// factor loss — the value the inspect views give — and every way the file can disagree with the config
// is refused with the file in the message.
#include <gtest/gtest.h>

#include <string>

#include "distill/distiller.h"
#include "distill/nodes/feature.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "models/registry.h"
#include "tests/common/distill_fixtures.h"
#include "tests/common/expect.h"

using namespace retort;

namespace {

using retort::testing::error_of;
using retort::testing::terms_from;
using retort::testing::tiny_batch;
using retort::testing::train_steps;
using retort::testing::write_checkpoint;

std::unique_ptr<Distiller> make(const std::string& terms, uint64_t seed, const std::string& teacher = "resnet14") {
  return retort::testing::tiny_distiller(terms, seed, teacher);
}

const char* kParaphraser = R"([{"name": "para", "type": "ft", "params": {"phase": "paraphraser"}}])";

std::string factor(const std::string& from, const std::string& extra = "") {
  return R"([{"type": "ce"}, {"name": "ft", "type": "ft", "weight": 200, "params": {"paraphraser_from": ")" + from +
         "\"" + extra + "}}]";
}

StateDict paraphraser_of(Strategy& s) {
  StateDict out;
  for (auto& [k, t] : s.state_dict())
    if (k.rfind("paraphraser.", 0) == 0) out.emplace_back(k, t.clone());
  return out;
}

}  // namespace

TEST(FactorTransfer, ParaphraserPhaseTrainsOnlyTheParaphraserToReconstructTheTeacher) {
  auto d = make(kParaphraser, 1);
  Strategy& s = *d->terms()[0].strategy;
  EXPECT_TRUE(s.student_taps().empty());
  EXPECT_EQ(s.teacher_taps(), (std::vector<std::string>{"layer3"}));
  // resnet14's layer3 has 64 channels: factor channels int(64 * 0.5) = 32.
  std::map<std::string, Shape> shapes;
  for (auto& [n, p] : s.named_parameters()) shapes[n] = p.shape();
  EXPECT_EQ(shapes.at("paraphraser.encoder.3.weight"), (Shape{32, 64, 3, 3}));
  EXPECT_EQ(shapes.at("paraphraser.decoder.6.weight"), (Shape{64, 64, 3, 3}));
  EXPECT_FALSE(shapes.count("translator.encoder.0.weight"));

  d->train(true);
  Tensor logits;
  const LossTerms terms = d->losses(tiny_batch(8, 3), TrainProgress{}, logits);
  ASSERT_EQ(terms.size(), 1u);
  // The term is the reconstruction's mse, the views the teacher's feature and its reconstruction.
  std::map<std::string, Tensor> views;
  for (const auto& [k, v] : d->views()) views[k] = v;
  EXPECT_NEAR(terms[0].second.item(),
              mse_loss(views.at("term.para.reconstruction"), views.at("term.para.teacher_feature")).item(), 1e-6);
  total_loss(terms).backward();
  for (auto& [n, p] : s.named_parameters()) EXPECT_TRUE(p.grad().defined()) << n;
  for (auto& p : d->model().parameters()) EXPECT_FALSE(p.grad().defined()) << "the student got a gradient";
  EXPECT_NE(d->view_notes()[0].find("paraphraser reconstruction: relative L2 error"), std::string::npos)
      << d->view_notes()[0];
}

TEST(FactorTransfer, FactorPhaseReadsThePhaseOneParaphraserAndFreezesIt) {
  const std::string dir = retort::testing::fresh_dir("ft_load");
  auto phase1 = make(kParaphraser, 1);
  train_steps(*phase1, 3);
  write_checkpoint(*phase1, dir);
  const StateDict trained = paraphraser_of(*phase1->terms()[0].strategy);

  auto d = make(factor(dir), 7);  // another seed: nothing but the file can make the paraphraser equal
  Strategy& s = *d->terms()[1].strategy;
  const StateDict loaded = paraphraser_of(s);
  ASSERT_EQ(loaded.size(), trained.size());
  for (size_t i = 0; i < loaded.size(); ++i) {
    EXPECT_EQ(loaded[i].first, trained[i].first);
    EXPECT_EQ(loaded[i].second.to_vector(), trained[i].second.to_vector()) << loaded[i].first;
  }
  EXPECT_EQ(s.params()["paraphraser_term"], "para");
  EXPECT_EQ(s.student_taps(), (std::vector<std::string>{"layer3"}));
  // Frozen: not given to the optimizer; the translator (3 convs + 3 BNs: 12 tensors) is.
  int frozen = 0;
  for (auto& [n, p] : s.named_parameters())
    if (n.rfind("paraphraser.", 0) == 0) {
      EXPECT_FALSE(p.requires_grad()) << n;
      ++frozen;
    }
  EXPECT_EQ(frozen, 12);
  EXPECT_EQ(d->trainable_parameters().size(), d->model().parameters().size() + 12);

  // One step: the term is 200 · ft_loss of the two factors it shows; gradients reach the translator and
  // the student, never the paraphraser; a few steps leave the paraphraser as loaded.
  d->train(true);
  Tensor logits;
  const LossTerms terms = d->losses(tiny_batch(8, 4), TrainProgress{}, logits);
  std::map<std::string, Tensor> views;
  for (const auto& [k, v] : d->views()) views[k] = v;
  EXPECT_EQ(views.at("term.ft.student_factor").shape(), (Shape{8, 32, 4, 4}));
  EXPECT_NEAR(terms[1].second.item(),
              200 * ft_loss(views.at("term.ft.student_factor"), views.at("term.ft.teacher_factor")).item(), 1e-4);
  total_loss(terms).backward();
  for (auto& [n, p] : s.named_parameters())
    EXPECT_EQ(p.grad().defined(), n.rfind("translator.", 0) == 0) << n;
  EXPECT_TRUE(d->model().parameters()[0].grad().defined());
  train_steps(*d, 2);
  const StateDict after = paraphraser_of(s);
  for (size_t i = 0; i < after.size(); ++i)
    EXPECT_EQ(after[i].second.to_vector(), trained[i].second.to_vector()) << after[i].first;
  EXPECT_NE(d->view_notes()[0].find("factors: mean cosine between the student's and the teacher's maps"),
            std::string::npos) << d->view_notes()[0];
}

TEST(FactorTransfer, DisagreementsWithThePhaseOneRunAreClearErrors) {
  // No paraphraser_from: the factor phase cannot start from nothing.
  std::string e = error_of([] { terms_from(R"([{"type": "ft"}])"); });
  EXPECT_NE(e.find("distill.terms[0].params.paraphraser_from: required in phase \"factor\""), std::string::npos) << e;
  e = error_of([] { terms_from(R"([{"type": "ft", "params": {"phase": "paraphraser", "p2": 2}}])"); });
  EXPECT_NE(e.find("distill.terms[0].params.p2: not used in phase \"paraphraser\""), std::string::npos) << e;
  e = error_of([] { terms_from(R"([{"type": "ft", "params": {"phase": "both"}}])"); });
  EXPECT_NE(e.find("distill.terms[0].params.phase: expected \"paraphraser\""), std::string::npos) << e;
  e = error_of([] { terms_from(R"([{"type": "ft", "params": {"paraphraser_from": "x", "p2": 0.5}}])"); });
  EXPECT_NE(e.find("distill.terms[0].params.p2: must be >= 1, got 0.5"), std::string::npos) << e;

  // A path that is not there.
  e = error_of([&] { make(factor(::testing::TempDir() + "/retort_no_such_run"), 2); });
  EXPECT_NE(e.find("ft paraphraser_from \"" + ::testing::TempDir() + "/retort_no_such_run\": "), std::string::npos) << e;
  EXPECT_NE(e.find("expected a checkpoint (or run directory) of an ft run with phase \"paraphraser\""), std::string::npos) << e;

  // A run without a paraphraser (a CE run).
  const std::string ce_dir = retort::testing::fresh_dir("ft_ce");
  auto ce = make(R"([{"type": "ce"}])", 1);
  write_checkpoint(*ce, ce_dir);
  e = error_of([&] { make(factor(ce_dir), 2); });
  EXPECT_NE(e.find("ft paraphraser_from " + ce_dir + "/checkpoints/"), std::string::npos) << e;
  EXPECT_NE(e.find("holds no paraphraser"), std::string::npos) << e;

  // A paraphraser of another teacher (resnet8x4: 256 channels at layer3, not resnet14's 64).
  const std::string wide_dir = retort::testing::fresh_dir("ft_wide");
  auto wide = make(kParaphraser, 1, "resnet8x4");
  write_checkpoint(*wide, wide_dir);
  e = error_of([&] { make(factor(wide_dir), 2); });
  EXPECT_NE(e.find("(term para)"), std::string::npos) << e;
  EXPECT_NE(e.find("encoder.0.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("same teacher tap with the same rate"), std::string::npos) << e;

  // A term name the file does not have.
  e = error_of([&] { make(factor(wide_dir, R"(, "paraphraser_term": "other")"), 2, "resnet8x4"); });
  EXPECT_NE(e.find("holds no paraphraser of term \"other\" (terms with them: para)"), std::string::npos) << e;
}
