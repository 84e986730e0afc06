// ShuffleNet v1 for CIFAR and the shared channel shuffle (see shufflenetv1.h).
#include "models/shufflenetv1.h"

#include "engine/functions.h"

namespace retort {

namespace {

constexpr int64_t kStemWidth = 24;

}  // namespace

namespace shufflenet {

Tensor ShuffleBlock::forward(const Tensor& x) {
  RETORT_CHECK(x.dim() == 4 && x.size(1) % groups_ == 0, "ShuffleBlock: expected [N, C, H, W] with C divisible by ",
               groups_, ", got ", shape_str(x.shape()));
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return reshape(permute(reshape(x, {n, groups_, c / groups_, h, w}), {0, 2, 1, 3, 4}), {n, c, h, w});
}

}  // namespace shufflenet

namespace shufflenetv1 {

Bottleneck::Bottleneck(int64_t in_planes, int64_t out_planes, int64_t stride, int64_t groups, Generator& gen)
    : Module("Bottleneck"), stride_(stride) {
  declare_points({"preact"});
  const int64_t mid_planes = out_planes / 4;
  // The reference does not group the first 1x1 conv of the first block, which reads the 24-channel stem.
  const int64_t g = in_planes == kStemWidth ? 1 : groups;
  RETORT_CHECK(in_planes % g == 0 && mid_planes % g == 0 && mid_planes % groups == 0 && out_planes % groups == 0,
               "ShuffleNet Bottleneck: widths ", in_planes, " -> ", mid_planes, " -> ", out_planes,
               " do not divide into ", groups, " groups");
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_planes, mid_planes, 1, gen, Conv2dOptions{.groups = g, .bias = false}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(mid_planes));
  shuffle1_ = register_module("shuffle1", std::make_shared<shufflenet::ShuffleBlock>(g));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(mid_planes, mid_planes, 3, gen,
                                                             Conv2dOptions{.stride = stride, .padding = 1,
                                                                           .groups = mid_planes, .bias = false}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(mid_planes));
  conv3_ = register_module("conv3", std::make_shared<Conv2d>(mid_planes, out_planes, 1, gen,
                                                             Conv2dOptions{.groups = groups, .bias = false}));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(out_planes));
  shortcut_ = register_module("shortcut", std::make_shared<Sequential>());
  if (stride == 2) shortcut_->push_back(std::make_shared<AvgPool2d>(3, 2, 1));
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  out = (*shuffle1_)(out);
  out = conv_bn_relu(*conv2_, *bn2_, out);
  out = conv_bn(*conv3_, *bn3_, out);
  const Tensor res = (*shortcut_)(x);
  if (stride_ != 2 && !has_point_tap("preact")) return add_relu(out, res);  // one pass instead of two
  const Tensor preact = stride_ == 2 ? cat({out, res}, 1) : out + res;
  emit("preact", preact);
  return relu(preact);
}

}  // namespace shufflenetv1

ShuffleNet::ShuffleNet(const std::vector<int64_t>& out_planes, const std::vector<int64_t>& num_blocks, int64_t groups,
                       const ModelOptions& options, Generator& gen)
    : Module("ShuffleNet") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(out_planes.size() == 3 && num_blocks.size() == 3, "ShuffleNet: needs 3 stage widths and sizes");
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(options.in_channels, kStemWidth, 1, gen, Conv2dOptions{.bias = false}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(kStemWidth));
  int64_t in_planes = kStemWidth;
  for (size_t s = 0; s < 3; ++s) {
    RETORT_CHECK(num_blocks[s] > 0, "ShuffleNet: stage ", s + 1, " needs at least one block");
    auto layer = std::make_shared<Sequential>();
    for (int64_t i = 0; i < num_blocks[s]; ++i) {
      // A stage's first block halves the resolution and concatenates its pooled input, so its own
      // branch only makes up the missing channels.
      const int64_t stride = i == 0 ? 2 : 1;
      const int64_t branch = i == 0 ? out_planes[s] - in_planes : out_planes[s];
      layer->push_back(std::make_shared<shufflenetv1::Bottleneck>(in_planes, branch, stride, groups, gen));
      in_planes = out_planes[s];
    }
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  linear_ = register_module("linear", std::make_shared<Linear>(in_planes, options.num_classes, gen));
  // No explicit initialisation in the reference: PyTorch's layer defaults, which ours are.
}

Tensor ShuffleNet::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  emit("stem", out);
  for (auto& layer : layers_) out = (*layer)(out);
  const Tensor pooled = flatten(adaptive_avg_pool2d(out, 1, 1), 1);
  emit("pooled", pooled);
  return (*linear_)(pooled);
}

void register_shufflenetv1_models(ModelTable& table) {
  table.add("ShuffleV1", [](const ModelOptions& o, Generator& g) {
    return std::make_shared<ShuffleNet>(std::vector<int64_t>{240, 480, 960}, std::vector<int64_t>{4, 8, 4}, 3, o, g);
  });
}

}  // namespace retort
