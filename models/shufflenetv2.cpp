// ShuffleNetV2 for CIFAR (see shufflenetv2.h).
#include "models/shufflenetv2.h"

#include <string>

#include "engine/functions.h"

namespace retort {

namespace {

constexpr int64_t kStemWidth = 24;

std::shared_ptr<Conv2d> pointwise(int64_t in, int64_t out, Generator& gen) {
  return std::make_shared<Conv2d>(in, out, 1, gen, Conv2dOptions{.bias = false});
}

std::shared_ptr<Conv2d> depthwise(int64_t channels, int64_t stride, Generator& gen) {
  return std::make_shared<Conv2d>(channels, channels, 3, gen,
                                  Conv2dOptions{.stride = stride, .padding = 1, .groups = channels, .bias = false});
}

}  // namespace

namespace shufflenetv2 {

namespace {

// shuffle(cat({a, b}, 1)) with two groups, written as one copy instead of two: the shuffle puts a's
// channel i at 2i and b's at 2i + 1, which is a cat of a and b along a new axis after the channels.
// With a tap on the shuffle module (its output is then wanted as the module's), the module runs.
Tensor cat_shuffle2(shufflenet::ShuffleBlock& shuffle, const Tensor& a, const Tensor& b) {
  if (shuffle.has_taps() || a.dim() != 4 || a.shape() != b.shape()) return shuffle(cat({a, b}, 1));
  const Shape& s = a.shape();
  return reshape(cat({unsqueeze(a, 2), unsqueeze(b, 2)}, 2), {s[0], 2 * s[1], s[2], s[3]});
}

}  // namespace

BasicBlock::BasicBlock(int64_t in_channels, Generator& gen) : Module("BasicBlock") {
  declare_points({"preact"});
  const int64_t half = in_channels / 2;  // the reference's int(in_channels * 0.5)
  conv1_ = register_module("conv1", pointwise(half, half, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(half));
  conv2_ = register_module("conv2", depthwise(half, 1, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(half));
  conv3_ = register_module("conv3", pointwise(half, half, gen));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(half));
  shuffle_ = register_module("shuffle", std::make_shared<shufflenet::ShuffleBlock>(2));
}

Tensor BasicBlock::forward(const Tensor& x) {
  const int64_t c = x.size(1) / 2;
  const Tensor x1 = slice(x, 1, 0, c), x2 = slice(x, 1, c, x.size(1));
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x2);
  out = conv_bn(*conv2_, *bn2_, out);
  const Tensor pre = conv_bn(*conv3_, *bn3_, out);
  if (has_point_tap("preact")) emit("preact", cat({x1, pre}, 1));
  return cat_shuffle2(*shuffle_, x1, relu(pre));
}

DownBlock::DownBlock(int64_t in_channels, int64_t out_channels, Generator& gen) : Module("DownBlock") {
  const int64_t mid = out_channels / 2;
  conv1_ = register_module("conv1", depthwise(in_channels, 2, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in_channels));
  conv2_ = register_module("conv2", pointwise(in_channels, mid, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(mid));
  conv3_ = register_module("conv3", pointwise(in_channels, mid, gen));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(mid));
  conv4_ = register_module("conv4", depthwise(mid, 2, gen));
  bn4_ = register_module("bn4", std::make_shared<BatchNorm2d>(mid));
  conv5_ = register_module("conv5", pointwise(mid, mid, gen));
  bn5_ = register_module("bn5", std::make_shared<BatchNorm2d>(mid));
  shuffle_ = register_module("shuffle", std::make_shared<shufflenet::ShuffleBlock>(2));
}

Tensor DownBlock::forward(const Tensor& x) {
  Tensor left = conv_bn(*conv1_, *bn1_, x);
  left = conv_bn_relu(*conv2_, *bn2_, left);
  Tensor right = conv_bn_relu(*conv3_, *bn3_, x);
  right = conv_bn(*conv4_, *bn4_, right);
  right = conv_bn_relu(*conv5_, *bn5_, right);
  return cat_shuffle2(*shuffle_, left, right);
}

}  // namespace shufflenetv2

ShuffleNetV2::ShuffleNetV2(const std::vector<int64_t>& out_channels, const std::vector<int64_t>& num_blocks,
                           const ModelOptions& options, Generator& gen)
    : Module("ShuffleNetV2") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(out_channels.size() == 4 && num_blocks.size() == 3,
               "ShuffleNetV2: needs 3 stage widths plus the head width, and 3 stage sizes");
  conv1_ = register_module("conv1", pointwise(options.in_channels, kStemWidth, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(kStemWidth));
  int64_t in_channels = kStemWidth;
  for (size_t s = 0; s < 3; ++s) {
    RETORT_CHECK(out_channels[s] % 2 == 0, "ShuffleNetV2: stage width ", out_channels[s],
                 " must be even (two equal branches)");
    auto layer = std::make_shared<Sequential>();
    layer->push_back(std::make_shared<shufflenetv2::DownBlock>(in_channels, out_channels[s], gen));
    for (int64_t i = 0; i < num_blocks[s]; ++i)
      layer->push_back(std::make_shared<shufflenetv2::BasicBlock>(out_channels[s], gen));
    in_channels = out_channels[s];
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  conv2_ = register_module("conv2", pointwise(in_channels, out_channels[3], gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_channels[3]));
  linear_ = register_module("linear", std::make_shared<Linear>(out_channels[3], options.num_classes, gen));
  // No explicit initialisation in the reference: PyTorch's layer defaults, which ours are.
}

Tensor ShuffleNetV2::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  emit("stem", out);
  for (auto& layer : layers_) out = (*layer)(out);
  out = conv_bn_relu(*conv2_, *bn2_, out);
  const Tensor pooled = flatten(adaptive_avg_pool2d(out, 1, 1), 1);
  emit("pooled", pooled);
  return (*linear_)(pooled);
}

void register_shufflenetv2_models(ModelTable& table) {
  table.add("ShuffleV2", [](const ModelOptions& o, Generator& g) {
    return std::make_shared<ShuffleNetV2>(std::vector<int64_t>{116, 232, 464, 1024}, std::vector<int64_t>{3, 7, 3}, o,
                                          g);
  });
}

}  // namespace retort
