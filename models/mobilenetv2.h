// MobileNetV2 for CIFAR as RepDistiller / mdistiller define it (models/mobilenetv2.py):
// "mobile_half" (RepDistiller's name) and "MobileNetV2" (mdistiller's name for the same network) are
// expansion T = 6 at width 0.5. The class takes any T and width multiplier.
//
// Tree and state_dict order (= PyTorch's registration order):
//   conv1 (Sequential: Conv3x3 stride 2, BN, ReLU), blocks (7 groups "blocks.0".."blocks.6", each a
//   Sequential of InvertedResidual), conv2 (Sequential: Conv1x1, BN, ReLU), classifier (Sequential:
//   Linear), avgpool
//   InvertedResidual: conv (Sequential: pw Conv1x1, BN, ReLU, dw Conv3x3, BN, ReLU, pw-linear Conv1x1, BN)
// `blocks` is an nn.ModuleList in the reference; a Sequential here has the same names and runs the
// groups in the order the reference's forward does, so "blocks.K" taps fire for every group.
// The reference's AvgPool2d(2, ceil_mode=True) over the final 2x2 map is adaptive pooling to 1x1
// here: the same for 32x32 inputs, and it also fits 28x28 (Fashion-MNIST, also 2x2 at the end).
//
// Features (RepDistiller): f0 = ":stem", f1 = "blocks.1", f2 = "blocks.2", f3 = "blocks.4",
// f4 = "blocks.6", pooled = ":pooled". The reference ignores preact for this model (its preact
// features are f); to match, every InvertedResidual emits "preact" equal to its output, so
// "blocks.K:preact" gives what RepDistiller's preact=True gives.
#pragma once
#include <cstdint>
#include <memory>

#include "layers/layers.h"
#include "models/registry.h"

namespace retort {

namespace mobilenetv2 {

class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio, Generator& gen);
  Tensor forward(const Tensor& x) override;
  // The projection's BN (conv.7), as mdistiller's get_bn_before_relu (the residual sum has no ReLU).
  std::shared_ptr<Module> point_batch_norm(const std::string& point) override {
    return point == "preact" ? conv_->ptr(conv_->size() - 1) : nullptr;
  }

 private:
  std::shared_ptr<Sequential> conv_;
  bool use_res_connect_;
};

}  // namespace mobilenetv2

class MobileNetV2 : public Module {
 public:
  MobileNetV2(int64_t expansion, double width_mult, const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  // mdistiller's f1..f4: the outputs of blocks 1, 2, 4 and 6 (the resolution changes after 1, 2 and 4).
  std::vector<std::string> stages() const override { return {"blocks.1", "blocks.2", "blocks.4", "blocks.6"}; }

 private:
  std::shared_ptr<Sequential> conv1_, blocks_, conv2_, classifier_;
  std::shared_ptr<AdaptiveAvgPool2d> avgpool_;
};

void register_mobilenetv2_models(ModelTable& table);

}  // namespace retort
