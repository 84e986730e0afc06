// ShuffleNet (v1) for CIFAR as RepDistiller / mdistiller define it (models/ShuffleNetv1.py):
// "ShuffleV1" = groups 3, stage widths (240, 480, 960), blocks (4, 8, 4). Also home of the channel
// shuffle that ShuffleNetV2 shares.
//
// Tree and state_dict order (= PyTorch's registration order):
//   conv1 (Conv1x1 -> 24, no stem pooling), bn1, layer1..layer3 (Sequential of Bottleneck), linear
//   Bottleneck: conv1 (1x1, grouped), bn1, shuffle1, conv2 (dw 3x3, stride), bn2, conv3 (1x1, grouped),
//   bn3, shortcut (a Sequential: empty for the identity, AvgPool2d(3, 2, 1) for stride 2)
// The stem and block ReLUs are functional in the reference, so there are no ReLU modules in the tree.
// The reference's F.avg_pool2d(4) over the final 4x4 map is adaptive pooling to 1x1 here: the same
// for 32x32 inputs, and it also fits 28x28 (Fashion-MNIST, 4x4 at the end as well).
//
// Taps: "layerK" is f_K; "layerK:preact" is the last block's sum (or, for a stride-2 block, concat)
// before its ReLU, RepDistiller's preact; ":stem" is f0, ":pooled" the pooled vector.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/layers.h"
#include "models/registry.h"

namespace retort {

namespace shufflenet {

// Channel shuffle: [N, C, H, W] -> [N, g, C/g, H, W] -> [N, C/g, g, H, W] -> [N, C, H, W].
class ShuffleBlock : public Module {
 public:
  explicit ShuffleBlock(int64_t groups) : Module("ShuffleBlock"), groups_(groups) {}
  Tensor forward(const Tensor& x) override;
  int64_t groups() const { return groups_; }

 private:
  int64_t groups_;
};

}  // namespace shufflenet

namespace shufflenetv1 {

// 1x1 grouped conv-BN-ReLU, shuffle, dw 3x3-BN-ReLU, 1x1 grouped conv-BN, then with the shortcut:
// out + x (stride 1) or concat(out, avgpool(x)) (stride 2), then ReLU. Emits "preact" before that ReLU.
class Bottleneck : public Module {
 public:
  Bottleneck(int64_t in_planes, int64_t out_planes, int64_t stride, int64_t groups, Generator& gen);
  Tensor forward(const Tensor& x) override;
  // bn3 where the shortcut is added (a stage's last unit, as mdistiller reads); none where it is
  // concatenated (stride 2: half the channels come from the pooled input).
  std::shared_ptr<Module> point_batch_norm(const std::string& point) override {
    return point == "preact" && stride_ != 2 ? bn3_ : nullptr;
  }

 private:
  int64_t stride_;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<shufflenet::ShuffleBlock> shuffle1_;
  std::shared_ptr<Sequential> shortcut_;
};

}  // namespace shufflenetv1

class ShuffleNet : public Module {
 public:
  ShuffleNet(const std::vector<int64_t>& out_planes, const std::vector<int64_t>& num_blocks, int64_t groups,
             const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::vector<std::string> stages() const override { return {"layer1", "layer2", "layer3"}; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::vector<std::shared_ptr<Sequential>> layers_;
  std::shared_ptr<Linear> linear_;
};

void register_shufflenetv1_models(ModelTable& table);

}  // namespace retort
