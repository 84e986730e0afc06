// CIFAR ResNet (see resnet.h).
#include "models/resnet.h"

#include <string>

#include "engine/functions.h"
#include "layers/init.h"

namespace retort {

namespace {

std::shared_ptr<Conv2d> conv3x3(int64_t in, int64_t out, int64_t stride, Generator& gen) {
  return std::make_shared<Conv2d>(in, out, 3, gen, Conv2dOptions{.stride = stride, .padding = 1, .bias = false});
}

}  // namespace

namespace resnet {

BasicBlock::BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, std::shared_ptr<Sequential> downsample,
                       Generator& gen)
    : Module("BasicBlock") {
  declare_points({"preact"});
  conv1_ = register_module("conv1", conv3x3(inplanes, planes, stride, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  conv2_ = register_module("conv2", conv3x3(planes, planes, 1, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  if (downsample) downsample_ = register_module("downsample", std::move(downsample));
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, *relu_, x);
  out = conv_bn(*conv2_, *bn2_, out);
  const Tensor residual = downsample_ ? (*downsample_)(x) : x;
  if (!has_point_tap("preact")) return add_relu(out, residual);  // one pass instead of two
  const Tensor preact = out + residual;
  emit("preact", preact);
  return relu(preact);
}

}  // namespace resnet

ResNet::ResNet(int64_t depth, const std::vector<int64_t>& num_filters, const ModelOptions& options, Generator& gen)
    : Module("ResNet") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "ResNet: depth must be 6n+2 (8, 14, 20, ...), got ", depth);
  RETORT_CHECK(num_filters.size() == 4, "ResNet: num_filters needs 4 widths (stem and 3 stages), got ",
               num_filters.size());
  const int64_t n = (depth - 2) / 6;
  int64_t inplanes = num_filters[0];
  conv1_ = register_module("conv1", conv3x3(options.in_channels, num_filters[0], 1, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(num_filters[0]));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  layer1_ = register_module("layer1", make_layer(inplanes, num_filters[1], n, 1, gen));
  layer2_ = register_module("layer2", make_layer(inplanes, num_filters[2], n, 2, gen));
  layer3_ = register_module("layer3", make_layer(inplanes, num_filters[3], n, 2, gen));
  avgpool_ = register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(1));
  fc_ = register_module("fc", std::make_shared<Linear>(num_filters[3], options.num_classes, gen));

  // As the reference: convolutions kaiming_normal(fan_out, relu), BN weight 1 and bias 0 (already
  // BatchNorm2d's defaults), the Linear keeps PyTorch's default initialisation.
  for (auto& [name, m] : named_modules())
    if (auto* conv = dynamic_cast<Conv2d*>(m))
      init::kaiming_normal_(conv->weight(), gen, 0.0, init::FanMode::FanOut, init::Nonlinearity::ReLU);
}

std::shared_ptr<Sequential> ResNet::make_layer(int64_t& inplanes, int64_t planes, int64_t blocks, int64_t stride,
                                               Generator& gen) {
  std::shared_ptr<Sequential> downsample;
  if (stride != 1 || inplanes != planes) {
    downsample = std::make_shared<Sequential>();
    downsample->push_back(
        std::make_shared<Conv2d>(inplanes, planes, 1, gen, Conv2dOptions{.stride = stride, .bias = false}));
    downsample->push_back(std::make_shared<BatchNorm2d>(planes));
  }
  auto layer = std::make_shared<Sequential>();
  layer->push_back(std::make_shared<resnet::BasicBlock>(inplanes, planes, stride, downsample, gen));
  inplanes = planes;
  for (int64_t i = 1; i < blocks; ++i)
    layer->push_back(std::make_shared<resnet::BasicBlock>(inplanes, planes, 1, nullptr, gen));
  return layer;
}

Tensor ResNet::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, *relu_, x);
  emit("stem", out);
  out = (*layer1_)(out);
  out = (*layer2_)(out);
  out = (*layer3_)(out);
  const Tensor pooled = flatten((*avgpool_)(out), 1);
  emit("pooled", pooled);
  return (*fc_)(pooled);
}

void register_resnet_models(ModelTable& table) {
  auto add = [&](const std::string& name, int64_t depth, std::vector<int64_t> widths) {
    table.add(name, [=](const ModelOptions& o, Generator& g) { return std::make_shared<ResNet>(depth, widths, o, g); });
  };
  const std::vector<int64_t> narrow{16, 16, 32, 64}, wide{32, 64, 128, 256};
  for (int64_t depth : {8, 14, 20, 32, 44, 56, 110}) add("resnet" + std::to_string(depth), depth, narrow);
  add("resnet8x4", 8, wide);
  add("resnet32x4", 32, wide);
}

}  // namespace retort
