// A distillation run written by hand on Retort's library API: what retort-train and retort-distill do
// through the Trainer and the Distiller, in one page, for readers who want to see (or change) every
// step — docs/library.md walks through it.
//
//   1. a teacher (resnet20) trained with cross-entropy;
//   2. the teacher frozen; a student (resnet8) trained with CE + Hinton KD + attention transfer on
//      layer3, the features read through taps;
//   3. both evaluated: top-1, and the student's top-1 agreement with the teacher.
//
//   build/examples/kd_loop                   Fashion-MNIST (Debian's dataset-fashion-mnist), 1 epoch each
//   build/examples/kd_loop --synthetic       learnable synthetic data, in seconds (what the test runs)
//   build/examples/kd_loop --epochs 3 --threads 2
#include <CLI/CLI.hpp>
#include <omp.h>

#include <cstdio>
#include <memory>

#include "data/data.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/logit.h"
#include "distill/trainer.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/optim/optim.h"
#include "models/registry.h"

using namespace retort;

namespace {

// Samples [offset, offset + n) of another dataset: a held-out split of the synthetic data, whose
// samples are a function of (seed, index). Every dataset answers these six questions.
class Range : public Dataset {
 public:
  Range(std::shared_ptr<const Dataset> all, size_t offset, size_t n) : all_(std::move(all)), offset_(offset), n_(n) {}
  size_t size() const override { return n_; }
  Example get(size_t i) const override { return all_->get(offset_ + i); }
  Shape sample_shape() const override { return all_->sample_shape(); }
  int64_t num_classes() const override { return all_->num_classes(); }
  std::string describe() const override { return all_->describe() + " (a range)"; }
  int64_t label(size_t i) const override { return all_->label(offset_ + i); }

 private:
  std::shared_ptr<const Dataset> all_;
  size_t offset_, n_;
};

// SGD with momentum as the CIFAR recipes use it; the learning rate stays constant for brevity.
SGD make_sgd(const std::vector<Tensor>& params) {
  return SGD({{params, /*lr=*/0.05, /*weight_decay=*/5e-4}}, {.momentum = 0.9});
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App cli{"A teacher, then a student distilled from it (CE + KD + AT), in a hand-written loop"};
  bool synthetic = false;
  int epochs = 1, threads = 0;
  cli.add_flag("--synthetic", synthetic, "Learnable synthetic 16x16 images of 4 classes instead of Fashion-MNIST");
  cli.add_option("--epochs", epochs, "Epochs of each phase")->check(CLI::PositiveNumber);
  cli.add_option("--threads", threads, "CPU threads (0: OpenMP's default)")->check(CLI::NonNegativeNumber);
  CLI11_PARSE(cli, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each epoch's line as it comes, also into a pipe
  if (threads > 0) omp_set_num_threads(threads);  // our loops and OpenBLAS share OpenMP's pool

  // ---- data ------------------------------------------------------------------------------------
  std::shared_ptr<const Dataset> train, test;
  if (synthetic) {
    auto all = std::make_shared<SyntheticDataset>(1024, Shape{1, 16, 16}, 4, /*seed=*/1, /*noise_std=*/0.3);
    train = std::make_shared<Range>(all, 0, 768);
    test = std::make_shared<Range>(all, 768, 256);
  } else {
    train = load_fashion_mnist(kFashionMnistRoot, /*train=*/true);
    test = load_fashion_mnist(kFashionMnistRoot, /*train=*/false);
  }
  // The loader batches in a fixed, seeded order; worker threads prefetch the next batches.
  DataLoader train_loader(train, {.batch_size = 64, .shuffle = true, .num_workers = 1, .seed = 0});
  DataLoader test_loader(test, {.batch_size = 256, .shuffle = false});
  const Shape shape = train->sample_shape();
  const ModelOptions mo{.num_classes = train->num_classes(), .in_channels = shape[0], .input_size = shape[1]};

  // ---- 1. the teacher, trained with cross-entropy ----------------------------------------------
  Generator gen(0);
  std::shared_ptr<Module> teacher = create_model("resnet20", mo, gen);
  {
    SGD opt = make_sgd(teacher->parameters());
    teacher->train();
    for (int e = 0; e < epochs; ++e) {
      train_loader.start_epoch(e);
      Batch b;
      double sum = 0;
      int n = 0;
      while (train_loader.next(b)) {
        Tensor loss = cross_entropy((*teacher)(b.inputs), b.targets);
        opt.zero_grad();
        loss.backward();  // before opt.step(): a step first would be refused (the saved weights changed)
        opt.step();
        sum += loss.item(), ++n;
      }
      std::printf("teacher epoch %d: mean CE %.4f\n", e + 1, sum / n);
    }
  }
  // Its test logits too: evaluate() then reports how often the student's top-1 is the teacher's.
  Tensor t_test_logits;
  const EvalResult t_eval = evaluate(*teacher, test_loader, nullptr, &t_test_logits);

  // ---- 2. the student, distilled from the frozen teacher ---------------------------------------
  // Frozen: evaluation-mode batch norm (running statistics, never updated) and no gradients.
  teacher->eval();
  for (Tensor& p : teacher->parameters()) p.set_requires_grad(false);
  std::shared_ptr<Module> student = create_model("resnet8", mo, gen);
  // Taps hand over a module's output each time it runs: layer3 of both networks, [B, 64, H/4, W/4].
  Tensor f_student, f_teacher;
  student->tap("layer3", [&](const Tensor& f) { f_student = f; });
  teacher->tap("layer3", [&](const Tensor& f) { f_teacher = f; });

  SGD opt = make_sgd(student->parameters());
  student->train();
  for (int e = 0; e < epochs; ++e) {
    train_loader.start_epoch(e);
    Batch b;
    double sums[3] = {0, 0, 0};
    int n = 0;
    while (train_loader.next(b)) {
      Tensor t_logits;
      {
        NoGradGuard no_graph;  // the teacher's forward records nothing
        t_logits = (*teacher)(b.inputs);
      }
      Tensor s_logits = (*student)(b.inputs);
      // Each term is a graph node with a hand-written backward (KDLossBackward; AT's attention maps
      // and MSE), checked against finite differences by retort-gradcheck.
      Tensor ce = cross_entropy(s_logits, b.targets);
      Tensor kd = kd_loss(s_logits, t_logits, /*temperature=*/4.0);
      Tensor at = at_loss(f_student, f_teacher);
      // CE 0.1 and KD 0.9 as mdistiller's KD config; AT's 1000 as its AT config (which reads every stage).
      Tensor loss = ce * 0.1 + kd * 0.9 + at * 1000.0;
      opt.zero_grad();
      loss.backward();
      opt.step();
      sums[0] += ce.item(), sums[1] += kd.item(), sums[2] += at.item(), ++n;
    }
    std::printf("student epoch %d: mean CE %.4f  KD %.4f  AT %.6f\n", e + 1, sums[0] / n, sums[1] / n, sums[2] / n);
  }
  student->clear_taps();
  teacher->clear_taps();

  // ---- 3. evaluation ---------------------------------------------------------------------------
  const EvalResult s_eval = evaluate(*student, test_loader, &t_test_logits);
  std::printf("teacher resnet20 top-1 %.2f%%\n", t_eval.top1);
  std::printf("student resnet8 top-1 %.2f%% (agrees with the teacher on %.2f%% of the test set)\n", s_eval.top1,
              s_eval.agreement);
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "kd_loop: %s\n", e.what());
  return 1;
}
