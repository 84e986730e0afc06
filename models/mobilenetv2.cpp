// MobileNetV2 for CIFAR (see mobilenetv2.h).
#include "models/mobilenetv2.h"

#include <cmath>
#include <string>

#include "engine/functions.h"
#include "layers/init.h"

namespace retort {

namespace {

// Conv (no bias) + BN + ReLU, the reference's conv_bn / conv_1x1_bn.
std::shared_ptr<Sequential> conv_bn_relu(int64_t in, int64_t out, int64_t kernel, int64_t stride, Generator& gen) {
  auto s = std::make_shared<Sequential>();
  s->push_back(std::make_shared<Conv2d>(in, out, kernel, gen,
                                        Conv2dOptions{.stride = stride, .padding = kernel / 2, .bias = false}));
  s->push_back(std::make_shared<BatchNorm2d>(out));
  s->push_back(std::make_shared<ReLU>());
  return s;
}

}  // namespace

namespace mobilenetv2 {

InvertedResidual::InvertedResidual(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio, Generator& gen)
    : Module("InvertedResidual"), use_res_connect_(stride == 1 && inp == oup) {
  declare_points({"preact"});
  RETORT_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
  const int64_t hidden = inp * expand_ratio;
  conv_ = register_module("conv", std::make_shared<Sequential>());
  conv_->push_back(std::make_shared<Conv2d>(inp, hidden, 1, gen, Conv2dOptions{.bias = false}));
  conv_->push_back(std::make_shared<BatchNorm2d>(hidden));
  conv_->push_back(std::make_shared<ReLU>());
  conv_->push_back(std::make_shared<Conv2d>(
      hidden, hidden, 3, gen, Conv2dOptions{.stride = stride, .padding = 1, .groups = hidden, .bias = false}));
  conv_->push_back(std::make_shared<BatchNorm2d>(hidden));
  conv_->push_back(std::make_shared<ReLU>());
  conv_->push_back(std::make_shared<Conv2d>(hidden, oup, 1, gen, Conv2dOptions{.bias = false}));
  conv_->push_back(std::make_shared<BatchNorm2d>(oup));
}

Tensor InvertedResidual::forward(const Tensor& x) {
  const Tensor out = use_res_connect_ ? x + (*conv_)(x) : (*conv_)(x);
  emit("preact", out);  // no final ReLU: RepDistiller's preact features are the outputs themselves
  return out;
}

}  // namespace mobilenetv2

MobileNetV2::MobileNetV2(int64_t expansion, double width_mult, const ModelOptions& options, Generator& gen)
    : Module("MobileNetV2") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(expansion > 0 && width_mult > 0, "MobileNetV2: expansion and width must be positive, got ", expansion,
               " and ", width_mult);
  // Python's int(c * width): truncation toward zero.
  auto scaled = [width_mult](int64_t c) { return static_cast<int64_t>(static_cast<double>(c) * width_mult); };
  struct Setting {
    int64_t t, c, n, s;
  };
  const Setting settings[] = {{1, 16, 1, 1},         {expansion, 24, 2, 1}, {expansion, 32, 3, 2},
                              {expansion, 64, 4, 2}, {expansion, 96, 3, 1}, {expansion, 160, 3, 2},
                              {expansion, 320, 1, 1}};
  int64_t channels = scaled(32);
  RETORT_CHECK(channels > 0, "MobileNetV2: width ", width_mult, " leaves the stem without channels");
  conv1_ = register_module("conv1", conv_bn_relu(options.in_channels, channels, 3, 2, gen));
  blocks_ = register_module("blocks", std::make_shared<Sequential>());
  for (const auto& st : settings) {
    const int64_t out = scaled(st.c);
    RETORT_CHECK(out > 0, "MobileNetV2: width ", width_mult, " leaves a block group without channels");
    auto group = std::make_shared<Sequential>();
    for (int64_t i = 0; i < st.n; ++i) {
      group->push_back(std::make_shared<mobilenetv2::InvertedResidual>(channels, out, i == 0 ? st.s : 1, st.t, gen));
      channels = out;
    }
    blocks_->push_back(group);
  }
  // The reference keeps 1280 final channels unless the width grows the network.
  const int64_t last_channel = width_mult > 1.0 ? scaled(1280) : 1280;
  conv2_ = register_module("conv2", conv_bn_relu(channels, last_channel, 1, 1, gen));
  classifier_ = register_module("classifier", std::make_shared<Sequential>());
  classifier_->push_back(std::make_shared<Linear>(last_channel, options.num_classes, gen));
  avgpool_ = register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(1));

  // As the reference: conv weights N(0, sqrt(2 / (kh * kw * out))) (depthwise included), BN 1/0 (the
  // BatchNorm2d defaults), Linear N(0, 0.01) with zero bias.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) {
      const double fan = static_cast<double>(conv->kernel_size().h * conv->kernel_size().w * conv->out_channels());
      init::normal_(conv->weight(), gen, 0.0, std::sqrt(2.0 / fan));
    } else if (auto* lin = dynamic_cast<Linear*>(m)) {
      init::normal_(lin->weight(), gen, 0.0, 0.01);
      init::zeros_(lin->bias());
    }
  }
}

Tensor MobileNetV2::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  emit("stem", out);
  out = (*blocks_)(out);
  out = (*conv2_)(out);
  const Tensor pooled = flatten((*avgpool_)(out), 1);
  emit("pooled", pooled);
  return (*classifier_)(pooled);
}

void register_mobilenetv2_models(ModelTable& table) {
  auto half = [](const ModelOptions& o, Generator& g) { return std::make_shared<MobileNetV2>(6, 0.5, o, g); };
  table.add("mobile_half", half);  // RepDistiller
  table.add("MobileNetV2", half);  // mdistiller: the same network
}

}  // namespace retort
