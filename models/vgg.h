// VGG with batch norm for CIFAR as RepDistiller / mdistiller define it (models/vgg.py, the *_bn
// variants): vgg8 (cfg 'S'), vgg11 ('A'), vgg13 ('B'), vgg16 ('D'), vgg19 ('E'). Five blocks of
// Conv3x3 (bias = true) + BN + ReLU, the classifier is one Linear(512, classes).
//
// Tree and state_dict order (= PyTorch's registration order):
//   block0..block4 (Sequential: conv, bn, relu, conv, bn, ... — the block's last ReLU is removed),
//   pool0..pool3 (MaxPool2d 2x2), pool4 (AdaptiveAvgPool2d 1x1), classifier
// As in the reference, pool3 runs only for 64x64 inputs, and blocks 0-2 are each followed by a pool.
//
// The reference applies each block's missing last ReLU in the model's forward; here the block module
// applies it itself (vgg::Block), so that a block's output — the "blockK" tap — is RepDistiller's f_K,
// and "blockK:preact" is the BN output before that ReLU (its f_K_pre). The arithmetic is the same.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/layers.h"
#include "models/registry.h"

namespace retort {

namespace vgg {

// A Sequential (so it prints and names its children like nn.Sequential) whose forward ends with the
// ReLU the reference applies after it, emitting "preact" just before.
class Block : public Sequential {
 public:
  Tensor forward(const Tensor& x) override;
  // The block ends with conv-BN (the ReLU is applied after it): its last child.
  std::shared_ptr<Module> point_batch_norm(const std::string& point) override {
    return point == "preact" && !children().empty() ? children().back().second : nullptr;
  }
  std::vector<std::string> points() const override { return {"preact"}; }

 protected:
  // Named points belong to the block itself, not (as for a plain Sequential) to its last child.
  void add_point_tap(const std::string& point, TapFn fn) override { Module::add_point_tap(point, std::move(fn)); }
};

}  // namespace vgg

class VGG : public Module {
 public:
  // cfg: the conv widths of each of the 5 blocks.
  VGG(const std::vector<std::vector<int64_t>>& cfg, const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  // block0 is the stem (mdistiller's f0); the stages are the four blocks after it.
  std::vector<std::string> stages() const override { return {"block1", "block2", "block3", "block4"}; }

 private:
  std::vector<std::shared_ptr<vgg::Block>> blocks_;
  std::vector<std::shared_ptr<Module>> pools_;  // pool0..pool4
  std::shared_ptr<Linear> classifier_;
};

void register_vgg_models(ModelTable& table);

}  // namespace retort
