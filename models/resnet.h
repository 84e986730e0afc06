// CIFAR ResNets as RepDistiller / mdistiller define them (models/resnet.py): resnet8 ... resnet110
// (widths 16/16/32/64) and resnet8x4, resnet32x4 (widths 32/64/128/256).
//
// Tree and state_dict order (= PyTorch's registration order):
//   conv1, bn1, relu, layer1..layer3 (Sequential of BasicBlock), avgpool, fc
//   BasicBlock: conv1, bn1, relu, conv2, bn2, downsample (Sequential(Conv1x1, BatchNorm2d), only
//   when the stride or the width changes)
// The reference's fixed AvgPool2d(8) is adaptive pooling to 1x1 here: the same for 32x32 inputs, and
// it also fits 28x28 (Fashion-MNIST).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "layers/layers.h"
#include "models/registry.h"

namespace retort {

namespace resnet {

// Conv3x3-BN-ReLU-Conv3x3-BN plus shortcut, then ReLU. Emits "preact": the residual sum before the
// final ReLU (RepDistiller's preact).
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, std::shared_ptr<Sequential> downsample,
             Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Module> point_batch_norm(const std::string& point) override {
    return point == "preact" ? bn2_ : nullptr;
  }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Sequential> downsample_;  // null: identity shortcut
};

}  // namespace resnet

class ResNet : public Module {
 public:
  // depth = 6n + 2; num_filters = {stem, stage1, stage2, stage3} widths.
  ResNet(int64_t depth, const std::vector<int64_t>& num_filters, const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::vector<std::string> stages() const override { return {"layer1", "layer2", "layer3"}; }

 private:
  std::shared_ptr<Sequential> make_layer(int64_t& inplanes, int64_t planes, int64_t blocks, int64_t stride,
                                         Generator& gen);

  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Sequential> layer1_, layer2_, layer3_;
  std::shared_ptr<AdaptiveAvgPool2d> avgpool_;
  std::shared_ptr<Linear> fc_;
};

void register_resnet_models(ModelTable& table);

}  // namespace retort
