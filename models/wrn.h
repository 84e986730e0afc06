// Wide ResNets as RepDistiller / mdistiller define them (models/wrn.py): wrn_16_1, wrn_16_2, wrn_40_1,
// wrn_40_2 — pre-activation blocks, widths 16, 16w, 32w, 64w, n = (depth - 4) / 6 blocks per group.
//
// Tree and state_dict order (= PyTorch's registration order):
//   conv1, block1..block3 (NetworkBlock with one child `layer`, a Sequential of BasicBlock), bn1, relu, fc
//   BasicBlock: bn1, relu1, conv1, bn2, relu2, conv2, convShortcut (1x1, only when the width changes)
// The reference's F.avg_pool2d(8) is adaptive pooling to 1x1 here (same for 32x32, fits 28x28).
// Dropout is 0 in every registered variant, so the blocks have none.
//
// Pre-activation taps. The blocks end without a ReLU, so RepDistiller's preact for WRN is the next
// BN applied to the stage output (BN, no ReLU): f1_pre = block2.layer.0.bn1(f1),
// f2_pre = block3.layer.0.bn1(f2), f3_pre = bn1(f3). The forward computes exactly those BNs anyway,
// so "blockK:preact" is delivered from that BN module's output instead of running the BN a second
// time (mdistiller runs it twice, which in training mode updates its running statistics twice; we do
// not). It fires while the whole model runs, during the next stage's forward.
#pragma once
#include <cstdint>
#include <memory>

#include "layers/layers.h"
#include "models/registry.h"

namespace retort {

namespace wrn {

class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;
  const std::shared_ptr<BatchNorm2d>& bn1() const { return bn1_; }

 private:
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ReLU> relu1_, relu2_;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv_shortcut_;  // conv_shortcut_ null when in == out
};

// A group of blocks. "preact" taps go to the BN that the model names with set_preact_source().
class NetworkBlock : public Module {
 public:
  NetworkBlock(int64_t nb_layers, int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override { return (*layer_)(x); }
  const std::shared_ptr<Sequential>& layer() const { return layer_; }
  std::shared_ptr<BatchNorm2d> first_bn() const;  // layer.0.bn1
  void set_preact_source(const std::shared_ptr<BatchNorm2d>& bn) { preact_source_ = bn; }
  // The pre-activation's own BN (the next group's first, or the model's last), as mdistiller's
  // get_bn_before_relu.
  std::shared_ptr<Module> point_batch_norm(const std::string& point) override {
    return point == "preact" ? preact_source_.lock() : nullptr;
  }
  std::vector<std::string> points() const override {
    return preact_source_.expired() ? std::vector<std::string>{} : std::vector<std::string>{"preact"};
  }

 protected:
  void add_point_tap(const std::string& point, TapFn fn) override;

 private:
  std::shared_ptr<Sequential> layer_;
  std::weak_ptr<BatchNorm2d> preact_source_;  // owned by the model, which outlives its taps
};

}  // namespace wrn

class WideResNet : public Module {
 public:
  WideResNet(int64_t depth, int64_t widen_factor, const ModelOptions& options, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::vector<std::string> stages() const override { return {"block1", "block2", "block3"}; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<wrn::NetworkBlock> block1_, block2_, block3_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Linear> fc_;
};

void register_wrn_models(ModelTable& table);

}  // namespace retort
