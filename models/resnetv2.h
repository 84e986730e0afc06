// ResNet50 for CIFAR as RepDistiller / mdistiller define it (models/resnetv2.py, registered as
// "ResNet50"): a 3x3 stride-1 stem without max-pooling, Bottleneck stages [3, 4, 6, 3] with planes
// 64/128/256/512 (x4 expansion) and strides 1, 2, 2, 2, the stride on the 3x3 conv.
//
// Tree and state_dict order (= PyTorch's registration order):
//   conv1, bn1, layer1..layer4 (Sequential of Bottleneck), avgpool, linear   <- "linear", not "fc"
//   Bottleneck: conv1, bn1, conv2, bn2, conv3, bn3, shortcut (a Sequential: empty for the identity,
//   or Conv1x1 + BatchNorm2d as shortcut.0 / shortcut.1)
// The ReLUs are functional in the reference, so there are no ReLU modules in the tree.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "layers/layers.h"
#include "models/registry.h"

namespace retort {

namespace resnetv2 {

// 1x1-BN-ReLU, 3x3(stride)-BN-ReLU, 1x1-BN, plus shortcut, then ReLU. Emits "preact": the residual
// sum before the final ReLU.
class Bottleneck : public Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in_planes, int64_t planes, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Module> point_batch_norm(const std::string& point) override {
    return point == "preact" ? bn3_ : nullptr;
  }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<Sequential> shortcut_;
};

}  // namespace resnetv2

class ResNetV2 : public Module {
 public:
  // num_blocks per stage: {3, 4, 6, 3} is ResNet50.
  ResNetV2(const std::vector<int64_t>& num_blocks, const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::vector<std::string> stages() const override { return {"layer1", "layer2", "layer3", "layer4"}; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::vector<std::shared_ptr<Sequential>> layers_;
  std::shared_ptr<AdaptiveAvgPool2d> avgpool_;
  std::shared_ptr<Linear> linear_;
};

void register_resnetv2_models(ModelTable& table);

}  // namespace retort
