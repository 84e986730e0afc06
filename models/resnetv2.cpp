// ResNet50 for CIFAR (see resnetv2.h).
#include "models/resnetv2.h"

#include <string>

#include "engine/functions.h"
#include "layers/init.h"

namespace retort {

namespace resnetv2 {

Bottleneck::Bottleneck(int64_t in_planes, int64_t planes, int64_t stride, Generator& gen) : Module("Bottleneck") {
  declare_points({"preact"});
  const int64_t out_planes = kExpansion * planes;
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(in_planes, planes, 1, gen, Conv2dOptions{.bias = false}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
  conv2_ = register_module(
      "conv2", std::make_shared<Conv2d>(planes, planes, 3, gen,
                                        Conv2dOptions{.stride = stride, .padding = 1, .bias = false}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  conv3_ = register_module("conv3",
                           std::make_shared<Conv2d>(planes, out_planes, 1, gen, Conv2dOptions{.bias = false}));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(out_planes));
  // Always registered, as the reference's nn.Sequential(): empty means the identity.
  shortcut_ = register_module("shortcut", std::make_shared<Sequential>());
  if (stride != 1 || in_planes != out_planes) {
    shortcut_->push_back(
        std::make_shared<Conv2d>(in_planes, out_planes, 1, gen, Conv2dOptions{.stride = stride, .bias = false}));
    shortcut_->push_back(std::make_shared<BatchNorm2d>(out_planes));
  }
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  out = conv_bn_relu(*conv2_, *bn2_, out);
  out = conv_bn(*conv3_, *bn3_, out);
  if (!has_point_tap("preact")) return add_relu(out, (*shortcut_)(x));  // one pass instead of two
  const Tensor preact = out + (*shortcut_)(x);
  emit("preact", preact);
  return relu(preact);
}

}  // namespace resnetv2

ResNetV2::ResNetV2(const std::vector<int64_t>& num_blocks, const ModelOptions& options, Generator& gen)
    : Module("ResNet") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(num_blocks.size() == 4, "ResNetV2: needs 4 stage sizes, got ", num_blocks.size());
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, 64, 3, gen,
                                                             Conv2dOptions{.padding = 1, .bias = false}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(64));
  int64_t in_planes = 64;
  for (int64_t s = 0; s < 4; ++s) {
    const int64_t planes = int64_t{64} << s;
    RETORT_CHECK(num_blocks[s] > 0, "ResNetV2: stage ", s + 1, " needs at least one block");
    auto layer = std::make_shared<Sequential>();
    for (int64_t i = 0; i < num_blocks[s]; ++i) {
      const int64_t stride = (i == 0 && s > 0) ? 2 : 1;
      layer->push_back(std::make_shared<resnetv2::Bottleneck>(in_planes, planes, stride, gen));
      in_planes = planes * resnetv2::Bottleneck::kExpansion;
    }
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  avgpool_ = register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(Size2(1, 1)));
  linear_ = register_module("linear", std::make_shared<Linear>(in_planes, options.num_classes, gen));

  // As the reference: convolutions kaiming_normal(fan_out, relu), BN 1/0, Linear left at PyTorch's
  // default. (zero_init_residual is off in the reference's ResNet50.)
  for (auto& [name, m] : named_modules())
    if (auto* conv = dynamic_cast<Conv2d*>(m))
      init::kaiming_normal_(conv->weight(), gen, 0.0, init::FanMode::FanOut, init::Nonlinearity::ReLU);
}

Tensor ResNetV2::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  emit("stem", out);
  for (auto& layer : layers_) out = (*layer)(out);
  const Tensor pooled = flatten((*avgpool_)(out), 1);
  emit("pooled", pooled);
  return (*linear_)(pooled);
}

void register_resnetv2_models(ModelTable& table) {
  table.add("ResNet50", [](const ModelOptions& o, Generator& g) {
    return std::make_shared<ResNetV2>(std::vector<int64_t>{3, 4, 6, 3}, o, g);
  });
}

}  // namespace retort
