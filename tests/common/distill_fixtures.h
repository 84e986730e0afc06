// Tiny distillation set-ups shared by the distillation tests: 1x16x16 inputs, 4 classes, and a
// deterministic batch of random images with labels 0, 1, 2, 3, 0, ...; a few SGD steps of a
// Distiller and its checkpoint written as the Trainer writes one (for strategies that read an earlier
// run's modules: MTKD-SSR's pre-trained teacher heads, FT's paraphraser).
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "engine/optim/optimizer.h"
#include "engine/serialize.h"
#include "models/registry.h"

namespace retort::testing {

inline const Shape kTinySample{1, 16, 16};
inline const ModelOptions kTinyModel{4, 1, 16};

inline Batch tiny_batch(int64_t n, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> y;
  for (int64_t i = 0; i < n; ++i) y.push_back(i % 4);
  return Batch{Tensor::randn({n, 1, 16, 16}, g), Tensor::from_int64(y, {n}), Tensor::arange(n, DType::I64)};
}

inline std::vector<DistillTerm> terms_from(const std::string& json) {
  return parse_terms(Json::parse(json), "test.json");
}

// A Distiller of `terms` from a resnet8 student and a `teacher` (resnet14 by default: resnet8's widths,
// deeper), both freshly initialised from `seed`, on the tiny inputs.
inline std::unique_ptr<Distiller> tiny_distiller(const std::string& terms, uint64_t seed,
                                                 const std::string& teacher = "resnet14") {
  Generator gen(seed);
  auto student = create_model("resnet8", kTinyModel, gen);
  auto t = create_model(teacher, kTinyModel, gen);
  return std::make_unique<Distiller>(student, t, terms_from(terms), DistillerOptions{}, kTinySample, gen);
}

// An empty directory under the test temp dir.
inline std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/retort_" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// `steps` SGD steps (lr 0.1, momentum 0.9) of d on tiny batches, so that its modules and their BN
// statistics are no longer their initial values.
inline void train_steps(Distiller& d, int steps) {
  auto opt = make_optimizer(Json{{"type", "sgd"}, {"lr", 0.1}, {"momentum", 0.9}}, d.trainable_parameters());
  d.train(true);
  for (int s = 0; s < steps; ++s) {
    Tensor logits;
    Tensor loss = total_loss(d.losses(tiny_batch(8, 20 + s), TrainProgress{}, logits));
    opt->zero_grad();
    loss.backward();
    opt->step();
  }
}

// Writes d as a Retort checkpoint (model.*, extra.*) into dir/checkpoints the way the Trainer does,
// with `latest` naming it; returns the file.
inline std::string write_checkpoint(Distiller& d, const std::string& dir) {
  std::filesystem::create_directories(dir + "/checkpoints");
  StateDict tensors;
  for (auto& [k, t] : d.model().state_dict()) tensors.emplace_back("model." + k, t);
  for (auto& [k, t] : d.extra_state()) tensors.emplace_back("extra." + k, t);
  const std::string name = "ckpt_epoch0001_step000000003.safetensors";
  save_safetensors(dir + "/checkpoints/" + name, tensors, {{"format", "retort-checkpoint-1"}, {"arch", "resnet8"}});
  std::ofstream(dir + "/checkpoints/latest") << name << "\n";
  return dir + "/checkpoints/" + name;
}

}  // namespace retort::testing
