// ShuffleNetV2 for CIFAR as RepDistiller / mdistiller define it (models/ShuffleNetv2.py):
// "ShuffleV2" = net_size 1: stage widths (116, 232, 464), head width 1024, blocks (3, 7, 3).
//
// Tree and state_dict order (= PyTorch's registration order):
//   conv1 (Conv1x1 -> 24, no stem pooling), bn1, layer1..layer3 (Sequential: DownBlock, then n
//   BasicBlocks), conv2 (Conv1x1), bn2, linear
//   BasicBlock: conv1, bn1, conv2 (dw 3x3), bn2, conv3, bn3, shuffle
//   DownBlock:  conv1 (dw 3x3 s2), bn1, conv2, bn2 (left), conv3, bn3, conv4 (dw 3x3 s2), bn4, conv5,
//               bn5 (right), shuffle
// The reference's parameter-free SplitBlock module is a plain channel slice here (it returns two
// tensors, which a Module does not); it holds no state, so the state_dict is unchanged. The ReLUs are
// functional in the reference, so there are no ReLU modules. The reference's F.avg_pool2d(4) over the
// final 4x4 map is adaptive pooling to 1x1 here (the same for 32x32; 28x28 inputs also end at 4x4).
//
// Taps: "layerK" is f_K; "layerK:preact" is RepDistiller's f_K_pre: the last BasicBlock's
// concat(x1, bn3(conv3(.))) taken BEFORE the channel shuffle, so its channel order differs from
// f_K's (methods.md §5.5). ":stem" is f0, ":pooled" the pooled vector.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "layers/layers.h"
#include "models/registry.h"
#include "models/shufflenetv1.h"

namespace retort {

namespace shufflenetv2 {

// Splits the channels in half; the right half goes through 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU; the
// halves are concatenated and shuffled (2 groups). Emits "preact" (see above).
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<shufflenet::ShuffleBlock> shuffle_;
};

// Halves the resolution: left dw3x3 s2-BN, 1x1-BN-ReLU; right 1x1-BN-ReLU, dw3x3 s2-BN, 1x1-BN-ReLU;
// concatenated and shuffled.
class DownBlock : public Module {
 public:
  DownBlock(int64_t in_channels, int64_t out_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_, conv4_, conv5_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_, bn4_, bn5_;
  std::shared_ptr<shufflenet::ShuffleBlock> shuffle_;
};

}  // namespace shufflenetv2

class ShuffleNetV2 : public Module {
 public:
  // out_channels: the 3 stage widths and the head width; num_blocks: BasicBlocks per stage.
  ShuffleNetV2(const std::vector<int64_t>& out_channels, const std::vector<int64_t>& num_blocks,
               const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::vector<std::string> stages() const override { return {"layer1", "layer2", "layer3"}; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::vector<std::shared_ptr<Sequential>> layers_;
  std::shared_ptr<Linear> linear_;
};

void register_shufflenetv2_models(ModelTable& table);

}  // namespace retort
