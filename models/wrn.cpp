// Wide ResNet (see wrn.h).
#include "models/wrn.h"

#include <cmath>
#include <string>

#include "engine/functions.h"
#include "layers/init.h"

namespace retort {

namespace wrn {

BasicBlock::BasicBlock(int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen) : Module("BasicBlock") {
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in_planes));
  relu1_ = register_module("relu1", std::make_shared<ReLU>());
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_planes, out_planes, 3, gen,
                                        Conv2dOptions{.stride = stride, .padding = 1, .bias = false}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_planes));
  relu2_ = register_module("relu2", std::make_shared<ReLU>());
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(out_planes, out_planes, 3, gen,
                                                             Conv2dOptions{.padding = 1, .bias = false}));
  if (in_planes != out_planes)
    conv_shortcut_ = register_module(
        "convShortcut",
        std::make_shared<Conv2d>(in_planes, out_planes, 1, gen, Conv2dOptions{.stride = stride, .bias = false}));
}

Tensor BasicBlock::forward(const Tensor& x) {
  // When the width changes, the shortcut also reads the BN-ReLU'd input (the reference overwrites x).
  const Tensor act = bn_relu(*bn1_, *relu1_, x);
  Tensor out = conv_bn_relu(*conv1_, *bn2_, *relu2_, act);
  out = (*conv2_)(out);
  return (conv_shortcut_ ? (*conv_shortcut_)(act) : x) + out;
}

NetworkBlock::NetworkBlock(int64_t nb_layers, int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen)
    : Module("NetworkBlock") {
  layer_ = register_module("layer", std::make_shared<Sequential>());
  for (int64_t i = 0; i < nb_layers; ++i)
    layer_->push_back(std::make_shared<BasicBlock>(i == 0 ? in_planes : out_planes, out_planes, i == 0 ? stride : 1, gen));
}

std::shared_ptr<BatchNorm2d> NetworkBlock::first_bn() const {
  return std::dynamic_pointer_cast<BasicBlock>(layer_->ptr(0))->bn1();
}

void NetworkBlock::add_point_tap(const std::string& point, TapFn fn) {
  if (point != "preact") return Module::add_point_tap(point, std::move(fn));
  auto bn = preact_source_.lock();
  RETORT_CHECK(bn != nullptr, "NetworkBlock: no pre-activation source (only a WideResNet's groups have one)");
  bn->tap("", std::move(fn));  // the BN's output is this group's pre-activation
}

}  // namespace wrn

WideResNet::WideResNet(int64_t depth, int64_t widen_factor, const ModelOptions& options, Generator& gen)
    : Module("WideResNet") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(depth >= 10 && (depth - 4) % 6 == 0, "WideResNet: depth must be 6n+4 (10, 16, 22, ...), got ", depth);
  RETORT_CHECK(widen_factor > 0, "WideResNet: widen_factor must be positive, got ", widen_factor);
  const int64_t n = (depth - 4) / 6;
  const int64_t c[4] = {16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor};
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, c[0], 3, gen,
                                                             Conv2dOptions{.padding = 1, .bias = false}));
  block1_ = register_module("block1", std::make_shared<wrn::NetworkBlock>(n, c[0], c[1], 1, gen));
  block2_ = register_module("block2", std::make_shared<wrn::NetworkBlock>(n, c[1], c[2], 2, gen));
  block3_ = register_module("block3", std::make_shared<wrn::NetworkBlock>(n, c[2], c[3], 2, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(c[3]));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  fc_ = register_module("fc", std::make_shared<Linear>(c[3], options.num_classes, gen));

  block1_->set_preact_source(block2_->first_bn());
  block2_->set_preact_source(block3_->first_bn());
  block3_->set_preact_source(bn1_);

  // As the reference: conv weights N(0, sqrt(2 / (kh * kw * out))), BN 1/0 (BatchNorm2d's defaults),
  // Linear bias 0 with the default weight.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) {
      const double fan = static_cast<double>(conv->kernel_size().h * conv->kernel_size().w * conv->out_channels());
      init::normal_(conv->weight(), gen, 0.0, std::sqrt(2.0 / fan));
    } else if (auto* lin = dynamic_cast<Linear*>(m)) {
      if (lin->bias().defined()) init::zeros_(lin->bias());
    }
  }
}

Tensor WideResNet::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  emit("stem", out);
  out = (*block1_)(out);
  out = (*block2_)(out);
  out = (*block3_)(out);
  out = bn_relu(*bn1_, *relu_, out);
  const Tensor pooled = flatten(adaptive_avg_pool2d(out, 1, 1), 1);
  emit("pooled", pooled);
  return (*fc_)(pooled);
}

void register_wrn_models(ModelTable& table) {
  for (auto [depth, width] : {std::pair<int64_t, int64_t>{16, 1}, {16, 2}, {40, 1}, {40, 2}})
    table.add("wrn_" + std::to_string(depth) + "_" + std::to_string(width),
              [depth = depth, width = width](const ModelOptions& o, Generator& g) {
                return std::make_shared<WideResNet>(depth, width, o, g);
              });
}

}  // namespace retort
