// VGG with batch norm (see vgg.h).
#include "models/vgg.h"

#include <cmath>
#include <string>

#include "engine/functions.h"
#include "layers/init.h"

namespace retort {

namespace vgg {

Tensor Block::forward(const Tensor& x) {
  const Tensor preact = Sequential::forward(x);
  emit("preact", preact);
  return relu(preact);
}

}  // namespace vgg

namespace {

std::shared_ptr<vgg::Block> make_block(const std::vector<int64_t>& widths, int64_t in_channels, Generator& gen) {
  auto block = std::make_shared<vgg::Block>();
  for (size_t i = 0; i < widths.size(); ++i) {
    block->push_back(std::make_shared<Conv2d>(in_channels, widths[i], 3, gen, Conv2dOptions{.padding = 1}));
    block->push_back(std::make_shared<BatchNorm2d>(widths[i]));
    // The reference drops the block's last ReLU (applied by Block::forward), keeping the inner ones.
    if (i + 1 < widths.size()) block->push_back(std::make_shared<ReLU>());
    in_channels = widths[i];
  }
  return block;
}

}  // namespace

VGG::VGG(const std::vector<std::vector<int64_t>>& cfg, const ModelOptions& options, Generator& gen) : Module("VGG") {
  declare_points({"stem", "pooled"});
  RETORT_CHECK(cfg.size() == 5, "VGG: cfg needs 5 blocks, got ", cfg.size());
  // Three 2x2 max pools without padding halve the input before the last blocks: 8x8 is the least that
  // leaves them a 1x1 feature (7x7 would be pooled to nothing).
  RETORT_CHECK(options.input_size >= 8, "VGG: images of ", options.input_size, "x", options.input_size,
               " are too small: its three 2x2 max pools need at least 8x8");
  int64_t in_channels = options.in_channels;
  for (size_t b = 0; b < cfg.size(); ++b) {
    RETORT_CHECK(!cfg[b].empty(), "VGG: block ", b, " has no convolution");
    blocks_.push_back(register_module("block" + std::to_string(b), make_block(cfg[b], in_channels, gen)));
    in_channels = cfg[b].back();
  }
  for (int p = 0; p < 4; ++p)
    pools_.push_back(register_module("pool" + std::to_string(p), std::make_shared<MaxPool2d>(2, 2)));
  pools_.push_back(register_module("pool4", std::make_shared<AdaptiveAvgPool2d>(Size2(1, 1))));
  classifier_ = register_module("classifier", std::make_shared<Linear>(in_channels, options.num_classes, gen));

  // As the reference: conv weights N(0, sqrt(2 / (kh * kw * out))) with zero bias, BN 1/0 (the
  // BatchNorm2d defaults), Linear N(0, 0.01) with zero bias.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) {
      const double fan = static_cast<double>(conv->kernel_size().h * conv->kernel_size().w * conv->out_channels());
      init::normal_(conv->weight(), gen, 0.0, std::sqrt(2.0 / fan));
      init::zeros_(conv->bias());
    } else if (auto* lin = dynamic_cast<Linear*>(m)) {
      init::normal_(lin->weight(), gen, 0.0, 0.01);
      init::zeros_(lin->bias());
    }
  }
}

Tensor VGG::forward(const Tensor& x) {
  // The reference decides on pool3 from the input height: only 64x64 inputs are pooled a 4th time.
  const bool pool3 = x.dim() == 4 && x.size(2) == 64;
  Tensor out = (*blocks_[0])(x);
  emit("stem", out);
  for (size_t b = 1; b < blocks_.size(); ++b) {
    if (b <= 3) out = (*pools_[b - 1])(out);
    else if (pool3) out = (*pools_[3])(out);
    out = (*blocks_[b])(out);
  }
  const Tensor pooled = flatten((*pools_[4])(out), 1);
  emit("pooled", pooled);
  return (*classifier_)(pooled);
}

void register_vgg_models(ModelTable& table) {
  using Cfg = std::vector<std::vector<int64_t>>;
  auto add = [&](const std::string& name, Cfg cfg) {
    table.add(name, [cfg](const ModelOptions& o, Generator& g) { return std::make_shared<VGG>(cfg, o, g); });
  };
  add("vgg8", {{64}, {128}, {256}, {512}, {512}});                                                // 'S'
  add("vgg11", {{64}, {128}, {256, 256}, {512, 512}, {512, 512}});                                // 'A'
  add("vgg13", {{64, 64}, {128, 128}, {256, 256}, {512, 512}, {512, 512}});                       // 'B'
  add("vgg16", {{64, 64}, {128, 128}, {256, 256, 256}, {512, 512, 512}, {512, 512, 512}});        // 'D'
  add("vgg19", {{64, 64}, {128, 128}, {256, 256, 256, 256}, {512, 512, 512, 512}, {512, 512, 512, 512}});  // 'E'
}

}  // namespace retort
