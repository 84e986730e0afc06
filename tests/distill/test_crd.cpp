// CRD (distill/nodes/contrast.h, distill/strategies/crd.cpp): the nodes against RepDistiller's
// ContrastMemory and ContrastLoss in PyTorch (tools/gen_golden_distill_crd.py) — scores, Z, loss,
// gradients and the memory update — in f64 and f32; the strategy's negatives (other classes, seeded by
// the step), its memory update after the step (only the batch's rows move), its errors, and a resumed
// Trainer run that ends bitwise where an uninterrupted one does (memories and Z are checkpointed).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "distill/nodes/contrast.h"
#include "distill/trainer.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "tests/common/distill_fixtures.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::expect_error;
using retort::testing::GoldenFile;
using retort::testing::terms_from;

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_distill_crd.safetensors");
  return g;
}

void expect_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const auto g = got.to_vector(), w = want.to_vector();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], w[i], atol + rtol * std::abs(w[i])) << what << " [" << i << "]";
}

// A Distiller with one CRD term on the tiny models, given a synthetic training set of n samples.
struct CrdSetup {
  std::shared_ptr<Module> student, teacher;
  std::unique_ptr<Distiller> d;
  std::shared_ptr<SyntheticDataset> train;
  CrdSetup(const std::string& params, int64_t n = 40) {
    Generator gen(1);
    student = create_model("resnet8", retort::testing::kTinyModel, gen);
    teacher = create_model("resnet14", retort::testing::kTinyModel, gen);
    d = std::make_unique<Distiller>(student, teacher, terms_from(R"([{"type": "crd", "params": )" + params + "}]"),
                                    DistillerOptions{}, retort::testing::kTinySample, gen);
    train = std::make_shared<SyntheticDataset>(static_cast<size_t>(n), retort::testing::kTinySample, 4, 7);
    d->set_training_data(*train);
  }
  Tensor view(const std::string& name) const {
    for (const auto& [k, v] : d->views())
      if (k == name) return v;
    throw Error("no view " + name);
  }
  Tensor buffer(const std::string& name) const {
    for (const auto& [k, v] : d->extra_state())
      if (k == name) return v.clone();
    throw Error("no state " + name);
  }
};

// A batch of the given training-set indices (labels i % 4, as SyntheticDataset's) drawn from `source`.
Batch batch_of(const std::vector<int64_t>& indices, uint64_t seed, const Dataset* source) {
  Batch b = retort::testing::tiny_batch(static_cast<int64_t>(indices.size()), seed);
  std::vector<int64_t> y;
  for (int64_t i : indices) y.push_back(i % 4);  // SyntheticDataset's labels
  b.targets = Tensor::from_int64(y, {static_cast<int64_t>(y.size())});
  b.indices = Tensor::from_int64(indices, {static_cast<int64_t>(indices.size())});
  b.source = source;
  return b;
}

class GoldenCrd : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(GoldenCrd, ScoresLossGradientsAndMemoryUpdateMatchContrastMemory) {
  const DType dt = GetParam();
  const bool f32 = dt == DType::F32;
  const double atol = f32 ? 2e-5 : 1e-12, rtol = f32 ? 1e-3 : 1e-9;
  const GoldenFile& g = golden();
  Tensor v1 = g["crd/in0"].to(dt).clone().set_requires_grad(), v2 = g["crd/in1"].to(dt).clone().set_requires_grad();
  Tensor m1 = g["crd/memory_v1"].to(dt).clone(), m2 = g["crd/memory_v2"].to(dt).clone();
  const Tensor idx = g["crd/contrast_idx"], y = g["crd/y"];
  const int64_t n = m1.size(0);
  const double t = 0.07;
  const Tensor out_v2 = contrast_scores(m1, idx, v2, t), out_v1 = contrast_scores(m2, idx, v1, t);
  const double z1 = mean(out_v1).item() * static_cast<double>(n), z2 = mean(out_v2).item() * static_cast<double>(n);
  const std::vector<double> z = g["crd/z"].to_vector();
  EXPECT_NEAR(z1, z[0], rtol * z[0]);
  EXPECT_NEAR(z2, z[1], rtol * z[1]);
  const Tensor loss = add(nce_loss(affine(out_v1, 1.0 / z1, 0.0), n), nce_loss(affine(out_v2, 1.0 / z2, 0.0), n));
  expect_close(loss, g["crd/out"], atol, rtol, "loss");
  mul(loss, g["crd/upstream"].to(dt)).backward();
  expect_close(v1.grad(), g["crd/grad_in0"], atol, rtol, "grad v1");
  expect_close(v2.grad(), g["crd/grad_in1"], atol, rtol, "grad v2");
  contrast_memory_update(m1, y, v1.detach(), 0.5);
  contrast_memory_update(m2, y, v2.detach(), 0.5);
  expect_close(m1, g["crd/memory_v1_after"], atol, rtol, "memory_v1 after the update");
  expect_close(m2, g["crd/memory_v2_after"], atol, rtol, "memory_v2 after the update");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GoldenCrd, ::testing::Values(DType::F64, DType::F32),
                         [](const auto& info) { return std::string(info.param == DType::F64 ? "f64" : "f32"); });

TEST(NceLoss, HandComputedAndErrors) {
  // B = 1, K = 2, N = 4: c = 0.5 + 1e-7; −log(P0/(P0+c)) − log(0.5/(P1+c)) − log(0.5/(P2+c)).
  const Tensor p = Tensor::from_vector({2.0, 0.25, 1.0}, {1, 3}, DType::F64);
  const double c = 0.5 + 1e-7;
  const double want = -std::log(2.0 / (2.0 + c)) - std::log(0.5 / (0.25 + c)) - std::log(0.5 / (1.0 + c));
  EXPECT_NEAR(nce_loss(p, 4).item(), want, 1e-14);
  expect_error([&] { nce_loss(Tensor::ones({2, 1}, DType::F64), 4); }, {"nce_loss", "at least one negative"});
  expect_error([&] { nce_loss(p, 0); }, {"nce_loss", "positive"});
  expect_error([&] { contrast_scores(Tensor::ones({5, 3}), Tensor::from_int64({0, 9}, {1, 2}), Tensor::ones({1, 3}), 0.1); },
               {"gather_rows", "index 9"});
  expect_error([&] { contrast_scores(Tensor::ones({5, 3}), Tensor::from_int64({0, 1}, {1, 2}), Tensor::ones({1, 4}), 0.1); },
               {"contrast_scores", "width"});
}

TEST(CrdStrategy, NegativesComeFromOtherClassesAndFollowTheStep) {
  for (const std::string mode : {"exact", "relax"}) {
    SCOPED_TRACE(mode);
    CrdSetup s(R"({"nce_k": 50, "feat_dim": 8, "mode": ")" + mode + R"("})");
    const Batch b = batch_of({5, 17, 22, 38, 0, 9}, 3, s.train.get());
    Tensor logits;
    auto contrast_at = [&](int64_t step) {
      TrainProgress p;
      p.step = step;
      const LossTerms terms = s.d->losses(b, p, logits);
      EXPECT_TRUE(std::isfinite(terms[0].second.item()));
      return s.view("term.crd.contrast_indices").to_vector();
    };
    const std::vector<double> c0 = contrast_at(0), again = contrast_at(0), c1 = contrast_at(1);
    EXPECT_EQ(c0, again);  // a pure function of the step
    EXPECT_NE(c0, c1);
    const std::vector<int64_t> idx{5, 17, 22, 38, 0, 9};
    std::set<double> seen;
    for (size_t r = 0; r < idx.size(); ++r) {
      const double* row = c0.data() + r * 51;
      if (mode == "exact") EXPECT_EQ(row[0], idx[r]);
      else EXPECT_EQ(static_cast<int64_t>(row[0]) % 4, idx[r] % 4);  // a sample of its class
      for (int k = 1; k < 51; ++k) {
        EXPECT_NE(static_cast<int64_t>(row[k]) % 4, idx[r] % 4) << "negative " << row[k] << " of sample " << idx[r];
        EXPECT_GE(row[k], 0);
        EXPECT_LT(row[k], 40);
        seen.insert(row[k]);
      }
    }
    EXPECT_GT(seen.size(), 25u);  // drawn across the set, not a few rows
  }
  // With at least K samples in the other classes (30 here), a row's negatives are distinct, as the
  // reference's np.random.choice(..., replace=False); above (K 50 > 30) they repeat, as there.
  CrdSetup s(R"({"nce_k": 30, "feat_dim": 8})");
  Tensor logits;
  s.d->losses(batch_of({5, 17, 22, 38, 0, 9}, 3, s.train.get()), TrainProgress{}, logits);
  const std::vector<double> c = s.view("term.crd.contrast_indices").to_vector();
  for (size_t r = 0; r < 6; ++r) {
    const std::set<double> row(c.begin() + static_cast<long>(r * 31 + 1), c.begin() + static_cast<long>(r * 31 + 31));
    EXPECT_EQ(row.size(), 30u) << "row " << r << ": every other-class sample once";
  }
}

TEST(CrdStrategy, OnlyTheBatchsRowsMoveAfterTheStepAndZIsSetOnce) {
  CrdSetup s(R"({"nce_k": 20, "feat_dim": 8, "nce_m": 0.25})");
  const Tensor m1 = s.buffer("term.crd.memory_v1"), m2 = s.buffer("term.crd.memory_v2");
  EXPECT_EQ(m1.shape(), (Shape{40, 8}));
  Tensor z_handle;  // the buffer itself, not a copy
  for (const auto& [k, v] : s.d->extra_state())
    if (k == "term.crd.normalizers") z_handle = v;
  EXPECT_EQ(z_handle.to_vector(), (std::vector<double>{-1, -1}));
  const Batch b = batch_of({3, 11, 30}, 4, s.train.get());
  Tensor logits;
  s.d->losses(b, TrainProgress{}, logits);
  EXPECT_EQ(s.buffer("term.crd.memory_v1").to_vector(), m1.to_vector());  // nothing moves before the step
  const std::vector<double> z = s.buffer("term.crd.normalizers").to_vector();
  EXPECT_GT(z[0], 0);
  EXPECT_GT(z[1], 0);
  // Set in place: a handle taken before (the second-order search saves and restores buffers so) sees it.
  EXPECT_EQ(z_handle.to_vector(), z);
  const Tensor vs = s.view("term.crd.student_embedding"), vt = s.view("term.crd.teacher_embedding");
  s.d->after_step(TrainProgress{});
  const Tensor a1 = s.buffer("term.crd.memory_v1"), a2 = s.buffer("term.crd.memory_v2");
  for (int64_t r = 0; r < 40; ++r) {
    const int64_t k = r == 3 ? 0 : r == 11 ? 1 : r == 30 ? 2 : -1;
    for (const auto& [before, after, v] : {std::tuple{m1, a1, vs}, std::tuple{m2, a2, vt}}) {
      std::vector<double> want(8);
      double norm = 0;
      for (int64_t c = 0; c < 8; ++c) {
        want[c] = k < 0 ? before.at(r * 8 + c) : 0.25 * before.at(r * 8 + c) + 0.75 * v.at(k * 8 + c);
        norm += want[c] * want[c];
      }
      for (int64_t c = 0; c < 8; ++c)
        EXPECT_NEAR(after.at(r * 8 + c), k < 0 ? want[c] : want[c] / std::sqrt(norm), 1e-6) << "row " << r;
    }
  }
  // Z stays what the first step set.
  s.d->losses(batch_of({1, 2}, 5, s.train.get()), TrainProgress{1, 1, 1, 1, 1}, logits);
  EXPECT_EQ(s.buffer("term.crd.normalizers").to_vector(), z);
  const auto notes = s.d->view_notes();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("mean D(positive): student side "), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("memory of 40 samples, 20 negatives each"), std::string::npos) << notes[0];
}

TEST(CrdStrategy, ErrorsNameWhatIsMissing) {
  Generator gen(1);
  auto student = create_model("resnet8", retort::testing::kTinyModel, gen);
  auto teacher = create_model("resnet14", retort::testing::kTinyModel, gen);
  Distiller d(student, teacher, terms_from(R"([{"type": "crd", "params": {"nce_k": 4}}])"), DistillerOptions{},
              retort::testing::kTinySample, gen);
  Tensor logits;
  expect_error([&] { d.losses(batch_of({0, 1}, 1, nullptr), TrainProgress{}, logits); }, {"crd", "no training set"});
  const SyntheticDataset train(10, retort::testing::kTinySample, 4, 1);
  d.set_training_data(train);
  expect_error([&] { d.losses(batch_of({0, 10}, 1, &train), TrainProgress{}, logits); },
               {"crd", "sample index 10", "10 samples"});
  expect_error([&] { d.set_training_data(SyntheticDataset(12, retort::testing::kTinySample, 4, 1)); },
               {"crd", "changed from 10 to 12"});
  // A batch without indices, or from another dataset (the test images retort-inspect shows), has no
  // memory rows: the term is 0 with a zero gradient, the embeddings are still shown, the text says why.
  const SyntheticDataset test(10, retort::testing::kTinySample, 4, 2);
  Batch no_indices = batch_of({0, 1}, 1, &train);
  no_indices.indices = Tensor();
  for (const Batch& b : {no_indices, batch_of({0, 1}, 1, &test)}) {
    const LossTerms terms = d.losses(b, TrainProgress{}, logits);
    EXPECT_EQ(terms[0].second.item(), 0.0);
    const auto views = d.views();
    EXPECT_TRUE(std::any_of(views.begin(), views.end(), [](const auto& v) { return v.first == "term.crd.student_embedding"; }));
    EXPECT_NE(d.view_notes()[0].find("not a training batch"), std::string::npos) << d.view_notes()[0];
  }
  auto config_error = [](const std::string& params, const char* needle) {
    expect_error([&] { terms_from(R"([{"type": "crd", "params": )" + params + "}]"); }, {needle});
  };
  config_error(R"({"mode": "strict"})", "distill.terms[0].params.mode: expected \"exact\" or \"relax\"");
  config_error(R"({"nce_m": 1})", "distill.terms[0].params.nce_m: must be in [0, 1)");
  config_error(R"({"nce_k": 0})", "distill.terms[0].params.nce_k: must be in [1, 262144], got 0");
  config_error(R"({"nce_t": -1})", "distill.terms[0].params.nce_t");
}

// A CRD run interrupted mid-epoch and resumed from its checkpoint ends bitwise where the uninterrupted
// run does: the memories, Z and the embeddings are checkpointed, the negatives seeded by the step.
TEST(CrdStrategy, ResumedRunEqualsUninterruptedRun) {
  const ExperimentConfig cfg = ExperimentConfig::from_json(Json::parse(R"({
    "schema_version": 1,
    "experiment": {"name": "crd_resume", "seed": 5},
    "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "num_classes": 4, "synthetic_size": 32,
             "batch_size": 8, "eval_batch_size": 32, "num_workers": 2},
    "model": {"arch": "resnet8"},
    "solver": {"lr": 0.05, "epochs": 2},
    "log": {"every_steps": 1000}
  })"), "crd_resume.json");
  auto run = [&](const std::string& dir, const std::string& resume, int64_t stop_after) {
    Generator gen(cfg.seed);
    auto student = create_model("resnet8", retort::testing::kTinyModel, gen);
    Generator tgen(99);
    auto teacher = create_model("resnet8", retort::testing::kTinyModel, tgen);
    Distiller d(student, teacher, terms_from(R"([{"type": "ce"}, {"type": "crd", "weight": 0.8, "params": {"nce_k": 16, "feat_dim": 8}}])"),
                DistillerOptions{}, retort::testing::kTinySample, gen);
    DataSplits data = load_datasets(cfg.data);
    RunDir rd(dir);
    Trainer trainer(cfg, d, data, rd);
    trainer.fit(resume, stop_after);
    StateDict out;
    for (auto& [k, t] : student->state_dict()) out.emplace_back(k, t.clone());
    for (auto& [k, t] : d.extra_state()) out.emplace_back(k, t.clone());
    return out;
  };
  const std::string base = ::testing::TempDir() + "/retort_crd_resume";
  std::filesystem::remove_all(base);
  const StateDict straight = run(base + "/straight", "", 0);
  run(base + "/interrupted", "", 5);  // stops in epoch 2
  const StateDict resumed = run(base + "/interrupted", "auto", 0);
  ASSERT_EQ(straight.size(), resumed.size());
  bool memory_seen = false;
  for (size_t i = 0; i < straight.size(); ++i) {
    ASSERT_EQ(straight[i].first, resumed[i].first);
    EXPECT_EQ(straight[i].second.to_vector(), resumed[i].second.to_vector()) << straight[i].first << " differs";
    memory_seen |= straight[i].first == "term.crd.memory_v1";
  }
  EXPECT_TRUE(memory_seen);
  std::filesystem::remove_all(base);
}

// CRD as SoKD's host (a plug-in): SoKD hands the training set and each batch's indices on, so the host
// contrasts (a nonzero term) and its memory moves after the step; the memory is SoKD's state too.
TEST(CrdStrategy, WorksAsSokdsHost) {
  Generator gen(1);
  auto student = create_model("resnet8", retort::testing::kTinyModel, gen);
  auto teacher = create_model("resnet14", retort::testing::kTinyModel, gen);
  Distiller d(student, teacher, terms_from(R"([{"type": "sokd", "params": {"heatmap_classes": 4, "area_num": 2,
      "feat_weight": 0, "dam_weight": 0, "search_epochs": 1,
      "host": {"type": "crd", "params": {"nce_k": 8, "feat_dim": 8, "student_tap": "layer3", "teacher_tap": "layer3"}}}}])"),
              DistillerOptions{}, retort::testing::kTinySample, gen);
  const SyntheticDataset train(24, retort::testing::kTinySample, 4, 3);
  d.set_training_data(train);
  auto memory = [&] {
    for (const auto& [k, v] : d.extra_state())
      if (k == "term.sokd.host.memory_v1") return v.clone();
    throw Error("no host memory in the checkpoint state");
  };
  const Tensor before = memory();
  Tensor logits;
  const LossTerms terms = d.losses(batch_of({2, 9, 21}, 6, &train), TrainProgress{}, logits);
  double host_loss = 0;
  for (const auto& [n, t] : terms) host_loss += t.item();
  EXPECT_GT(host_loss, 1.0);
  d.after_step(TrainProgress{});
  const Tensor after = memory();
  EXPECT_NE(before.to_vector(), after.to_vector());
}
