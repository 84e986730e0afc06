// The model zoo: every registered model builds for CIFAR-100 with the parameter count of
// research/methods.md §5, runs forward on CIFAR and Fashion-MNIST shapes, keeps PyTorch's
// (RepDistiller / mdistiller) parameter names and order, offers the stage, preact, stem and pooled
// taps with the documented shapes, and back-propagates into every parameter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/optim/optim.h"
#include "engine/profile.h"
#include "layers/layers.h"
#include "models/registry.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::error_of;
using retort::testing::expect_error;

namespace {

// methods.md §5, millions of parameters (conv + BN affine + linear, 100 classes), printed to 3 decimals.
const std::map<std::string, double> kParamsM = {
    {"resnet8", 0.084},   {"resnet14", 0.181},  {"resnet20", 0.278},   {"resnet32", 0.473},
    {"resnet44", 0.667},  {"resnet56", 0.862},  {"resnet110", 1.737},  {"resnet8x4", 1.234},
    {"resnet32x4", 7.434}, {"wrn_40_2", 2.255}, {"wrn_40_1", 0.570},   {"wrn_16_2", 0.703},
    {"wrn_16_1", 0.181},  {"ResNet50", 23.705}, {"vgg8", 3.965},       {"vgg13", 9.462},
    {"MobileNetV2", 0.813}, {"ShuffleV1", 0.949}, {"ShuffleV2", 1.356}, {"mobile_half", 0.813},
    // Not in methods.md: counted by running RepDistiller's own models/vgg.py definitions.
    {"vgg11", 9.277},     {"vgg16", 14.774},    {"vgg19", 20.087},
};

const ModelOptions kCifar100{};  // 3x32x32, 100 classes
const ModelOptions kFashion{.num_classes = 10, .in_channels = 1, .input_size = 28};

Tensor input(const ModelOptions& o, int64_t n, uint64_t seed = 0) {
  Generator gen(seed);
  return Tensor::randn({n, o.in_channels, o.input_size, o.input_size}, gen);
}

std::shared_ptr<Module> build(const std::string& name, const ModelOptions& o = kCifar100, uint64_t seed = 0) {
  Generator gen(seed);
  return create_model(name, o, gen);
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

// The 5 state_dict keys of a PyTorch BatchNorm2d at `prefix`.
void add_bn(std::vector<std::string>& keys, const std::string& prefix) {
  for (const char* k : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
    keys.push_back(prefix + "." + k);
}

std::vector<std::string> keys_of(const Module& m) {
  std::vector<std::string> out;
  for (const auto& [k, t] : m.state_dict()) out.push_back(k);
  return out;
}

// Records the shape of every tap in `specs` (one entry per firing).
std::map<std::string, std::vector<Shape>> record_taps(Module& model, const std::vector<std::string>& specs,
                                                      const Tensor& x) {
  std::map<std::string, std::vector<Shape>> seen;
  for (const auto& s : specs) model.tap(s, [&seen, s](const Tensor& t) { seen[s].push_back(t.shape()); });
  model(x);
  model.clear_taps();
  return seen;
}

}  // namespace

TEST(ModelRegistry, KnowsTheZooAndRejectsUnknownNames) {
  const auto names = model_names();
  for (const char* n : {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                        "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "ResNet50"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  Generator gen(0);
  try {
    create_model("resnet9", kCifar100, gen);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unknown model 'resnet9'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("resnet8x4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("wrn_40_2"), std::string::npos) << msg;
  }
  EXPECT_THROW(create_model("resnet8", ModelOptions{.num_classes = 0}, gen), Error);
}

// Builds each model for CIFAR-100, checks its size, and runs a batch of 2 through it.
TEST(ModelZoo, ParameterCountsAndCifarForward) {
  for (const auto& name : model_names()) {
    SCOPED_TRACE(name);
    auto it = kParamsM.find(name);
    ASSERT_NE(it, kParamsM.end()) << "add the reference parameter count of '" << name << "' to this test";
    auto model = build(name);
    EXPECT_NEAR(double(model->num_parameters()) / 1e6, it->second, 0.0005) << model->num_parameters();
    const Tensor logits = (*model)(input(kCifar100, 2));
    EXPECT_EQ(logits.shape(), (Shape{2, 100}));
    EXPECT_TRUE(all_finite(logits));
  }
}

TEST(ModelZoo, FashionMnistForward) {
  for (const auto& name : model_names()) {
    SCOPED_TRACE(name);
    auto model = build(name, kFashion);
    EXPECT_EQ(model->state_dict()[0].second.size(1), 1);  // the stem reads one channel
    const Tensor logits = (*model)(input(kFashion, 2));
    EXPECT_EQ(logits.shape(), (Shape{2, 10}));
    EXPECT_TRUE(all_finite(logits));
  }
}

// The smallest images each model takes: VGG's three unpadded max pools need 8x8 and refuse less when the
// model is built (not deep inside a forward); every other model pools adaptively and takes even 1x1.
TEST(ModelZoo, SmallestImagesAreTakenOrRefusedWhenBuilt) {
  for (const auto& name : model_names()) {
    SCOPED_TRACE(name);
    const bool vgg = name.rfind("vgg", 0) == 0;
    const int64_t smallest = vgg ? 8 : 1;
    const ModelOptions o{.num_classes = 10, .in_channels = 1, .input_size = smallest};
    auto model = build(name, o);
    model->eval();
    const Tensor logits = (*model)(input(o, 1));
    EXPECT_EQ(logits.shape(), (Shape{1, 10}));
    if (vgg) {
      Generator gen(0);
      try {
        create_model(name, ModelOptions{.num_classes = 10, .in_channels = 1, .input_size = 7}, gen);
        ADD_FAILURE() << "expected 7x7 images to be refused";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("images of 7x7 are too small: its three 2x2 max pools need at least 8x8"),
                  std::string::npos) << e.what();
      }
    }
  }
}

// Every named point a module declares (points()) fires in a forward, and a point it does not declare is
// refused when tapped, naming the ones it has (a typo such as "layer3:prefact" was accepted and never fired).
TEST(ModelTaps, DeclaredPointsFireAndOthersAreRefused) {
  for (const auto& name : model_names()) {
    SCOPED_TRACE(name);
    auto model = build(name, kFashion);
    std::map<std::string, int> fired;
    for (const auto& [path, m] : model->named_modules())
      for (const std::string& point : m->points()) {
        const std::string spec = path + ":" + point;
        fired[spec] = 0;
        model->tap(spec, [&fired, spec](const Tensor&) { ++fired[spec]; });
      }
    EXPECT_TRUE(fired.count(":stem") && fired.count(":pooled"));
    EXPECT_GE(fired.size(), 4u);
    NoGradGuard ng;
    (*model)(input(kFashion, 1));
    for (const auto& [spec, n] : fired) EXPECT_GE(n, 1) << spec << " is declared but never emitted";
  }
  auto r = build("resnet8", kFashion);
  expect_error([&] { r->tap("layer3:prefact", [](const Tensor&) {}); },
               {"tap 'layer3:prefact': ResNet's layer3 (Sequential) has no point 'prefact' (its points: preact); its "
                "output is tapped as 'layer3'"});
  expect_error([&] { r->tap(":pooledd", [](const Tensor&) {}); },
               {"tap ':pooledd': ResNet has no point 'pooledd' (its points: stem, pooled)"});
  expect_error([&] { r->tap("fc:preact", [](const Tensor&) {}); }, {"ResNet's fc (Linear) emits no named points"});
}

// ---- names and order ---------------------------------------------------------------------------------

TEST(ResNetNames, Resnet8MatchesPyTorchStateDict) {
  std::vector<std::string> want{"conv1.weight"};
  add_bn(want, "bn1");
  for (const std::string stage : {"layer1", "layer2", "layer3"}) {
    const std::string b = stage + ".0";
    want.push_back(b + ".conv1.weight");
    add_bn(want, b + ".bn1");
    want.push_back(b + ".conv2.weight");
    add_bn(want, b + ".bn2");
    if (stage != "layer1") {  // widths 16 -> 16 -> 32 -> 64: layer1 keeps the identity shortcut
      want.push_back(b + ".downsample.0.weight");
      add_bn(want, b + ".downsample.1");
    }
  }
  want.push_back("fc.weight");
  want.push_back("fc.bias");
  auto model = build("resnet8");
  EXPECT_EQ(keys_of(*model), want);
}

TEST(ResNetNames, WideVariantsAndResNet50) {
  auto r84 = build("resnet8x4");
  const auto sd = r84->state_dict();
  auto shape_of = [](const StateDict& s, const std::string& k) {
    for (const auto& [n, t] : s)
      if (n == k) return t.shape();
    return Shape{-1};
  };
  EXPECT_EQ(shape_of(sd, "layer1.0.downsample.0.weight"), (Shape{64, 32, 1, 1}));  // 32 -> 64 projection
  EXPECT_EQ(shape_of(sd, "fc.weight"), (Shape{100, 256}));

  auto r50 = build("ResNet50");
  const auto s50 = r50->state_dict();
  EXPECT_EQ(s50.front().first, "conv1.weight");
  EXPECT_EQ(s50.back().first, "linear.bias");
  EXPECT_EQ(shape_of(s50, "layer1.0.shortcut.0.weight"), (Shape{256, 64, 1, 1}));
  EXPECT_EQ(shape_of(s50, "layer1.0.shortcut.1.num_batches_tracked"), Shape{});
  EXPECT_EQ(shape_of(s50, "layer1.1.shortcut.0.weight"), (Shape{-1}));  // identity shortcut: no state
  EXPECT_EQ(shape_of(s50, "layer4.2.conv3.weight"), (Shape{2048, 512, 1, 1}));
  EXPECT_EQ(shape_of(s50, "layer2.0.conv2.weight"), (Shape{128, 128, 3, 3}));  // stride on the 3x3
  EXPECT_EQ(shape_of(s50, "linear.weight"), (Shape{100, 2048}));
  // Keys within a Bottleneck follow the reference's registration order.
  std::vector<std::string> block;
  for (const auto& [k, t] : s50)
    if (k.rfind("layer3.0.", 0) == 0 && k.find("running") == std::string::npos &&
        k.find("num_batches") == std::string::npos && k.find("bias") == std::string::npos)
      block.push_back(k.substr(9));
  EXPECT_EQ(block, (std::vector<std::string>{"conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight",
                                             "conv3.weight", "bn3.weight", "shortcut.0.weight", "shortcut.1.weight"}));
}

TEST(WRNNames, Wrn16x1MatchesPyTorchStateDict) {
  // wrn_16_1: n = 2 blocks per group, widths 16, 16, 32, 64.
  std::vector<std::string> want{"conv1.weight"};
  for (int g = 1; g <= 3; ++g)
    for (int i = 0; i < 2; ++i) {
      const std::string b = "block" + std::to_string(g) + ".layer." + std::to_string(i);
      add_bn(want, b + ".bn1");
      want.push_back(b + ".conv1.weight");
      add_bn(want, b + ".bn2");
      want.push_back(b + ".conv2.weight");
      if (g > 1 && i == 0) want.push_back(b + ".convShortcut.weight");
    }
  add_bn(want, "bn1");
  want.push_back("fc.weight");
  want.push_back("fc.bias");
  EXPECT_EQ(keys_of(*build("wrn_16_1")), want);
}

TEST(ModelZoo, ReferenceInitialisation) {
  auto r = build("resnet32x4");
  const auto w = r->find("layer3.1.conv2").state_dict()[0].second.to_vector();  // [256, 256, 3, 3]
  double ss = 0;
  for (double v : w) ss += v * v;
  EXPECT_NEAR(std::sqrt(ss / double(w.size())) / std::sqrt(2.0 / (256 * 9)), 1.0, 0.03);  // fan_out, relu
  EXPECT_EQ(r->find("layer2.0.bn1").state_dict()[0].second.to_vector(), std::vector<double>(128, 1.0));

  auto wrn = build("wrn_40_2");
  const auto cw = wrn->find("block3.layer.2.conv1").state_dict()[0].second.to_vector();  // [128, 128, 3, 3]
  ss = 0;
  for (double v : cw) ss += v * v;
  EXPECT_NEAR(std::sqrt(ss / double(cw.size())) / std::sqrt(2.0 / (9 * 128)), 1.0, 0.03);
  const auto fc = wrn->find("fc").state_dict();
  EXPECT_EQ(fc[1].second.to_vector(), std::vector<double>(100, 0.0));  // Linear bias 0
  for (double v : fc[0].second.to_vector()) ASSERT_LE(std::abs(v), 1.0 / std::sqrt(128.0));

  EXPECT_EQ(keys_of(*build("resnet8", kCifar100, 5)), keys_of(*build("resnet8", kCifar100, 6)));
  EXPECT_EQ(build("resnet8", kCifar100, 5)->state_dict()[0].second.to_vector(),
            build("resnet8", kCifar100, 5)->state_dict()[0].second.to_vector());  // a seed fixes the model
}

// ---- taps ------------------------------------------------------------------------------------------

TEST(ResNetTaps, StageShapesPerMethodsTable) {
  const int64_t N = 2;
  auto seen = record_taps(*build("resnet8x4"),
                          {":stem", "layer1", "layer2", "layer3", "layer1:preact", "layer3:preact", ":pooled"},
                          input(kCifar100, N));
  EXPECT_EQ(seen[":stem"], (std::vector<Shape>{{N, 32, 32, 32}}));
  EXPECT_EQ(seen["layer1"], (std::vector<Shape>{{N, 64, 32, 32}}));
  EXPECT_EQ(seen["layer2"], (std::vector<Shape>{{N, 128, 16, 16}}));
  EXPECT_EQ(seen["layer3"], (std::vector<Shape>{{N, 256, 8, 8}}));
  EXPECT_EQ(seen["layer1:preact"], (std::vector<Shape>{{N, 64, 32, 32}}));
  EXPECT_EQ(seen["layer3:preact"], (std::vector<Shape>{{N, 256, 8, 8}}));
  EXPECT_EQ(seen[":pooled"], (std::vector<Shape>{{N, 256}}));

  // resnet20 (3 blocks per stage): the stage preact fires once, from the last block only.
  seen = record_taps(*build("resnet20", kFashion), {"layer2:preact", "layer3", ":pooled"}, input(kFashion, N));
  EXPECT_EQ(seen["layer2:preact"], (std::vector<Shape>{{N, 32, 14, 14}}));
  EXPECT_EQ(seen["layer3"], (std::vector<Shape>{{N, 64, 7, 7}}));
  EXPECT_EQ(seen[":pooled"], (std::vector<Shape>{{N, 64}}));
}

TEST(ResNetTaps, ResNet50StageShapes) {
  auto seen = record_taps(*build("ResNet50"),
                          {":stem", "layer1", "layer2", "layer3", "layer4", "layer4:preact", ":pooled"},
                          input(kCifar100, 1));
  EXPECT_EQ(seen[":stem"], (std::vector<Shape>{{1, 64, 32, 32}}));
  EXPECT_EQ(seen["layer1"], (std::vector<Shape>{{1, 256, 32, 32}}));
  EXPECT_EQ(seen["layer2"], (std::vector<Shape>{{1, 512, 16, 16}}));
  EXPECT_EQ(seen["layer3"], (std::vector<Shape>{{1, 1024, 8, 8}}));
  EXPECT_EQ(seen["layer4"], (std::vector<Shape>{{1, 2048, 4, 4}}));
  EXPECT_EQ(seen["layer4:preact"], (std::vector<Shape>{{1, 2048, 4, 4}}));
  EXPECT_EQ(seen[":pooled"], (std::vector<Shape>{{1, 2048}}));
}

TEST(ResNetTaps, PreactIsTheSumBeforeTheFinalRelu) {
  auto model = build("resnet14");
  Tensor pre, post;
  model->tap("layer2:preact", [&](const Tensor& t) { pre = t; });
  model->tap("layer2", [&](const Tensor& t) { post = t; });
  (*model)(input(kCifar100, 2));
  ASSERT_TRUE(pre.defined() && post.defined());
  EXPECT_EQ(relu(pre).to_vector(), post.to_vector());
  const auto p = pre.to_vector();
  EXPECT_TRUE(std::any_of(p.begin(), p.end(), [](double v) { return v < 0; }));  // so it differs from post
}

TEST(WRNTaps, StageShapesAndPreactIsTheNextBatchNorm) {
  auto model = build("wrn_16_2");
  model->eval();  // running statistics, so the BN can be re-applied below and give the same values
  Tensor f1, f1_pre, f3, f3_pre;
  model->tap("block1", [&](const Tensor& t) { f1 = t; });
  model->tap("block1:preact", [&](const Tensor& t) { f1_pre = t; });
  model->tap("block3", [&](const Tensor& t) { f3 = t; });
  model->tap("block3:preact", [&](const Tensor& t) { f3_pre = t; });
  auto seen = record_taps(*model, {":stem", "block2", "block2:preact", ":pooled"}, input(kCifar100, 2));
  EXPECT_EQ(seen[":stem"], (std::vector<Shape>{{2, 16, 32, 32}}));
  EXPECT_EQ(seen["block2"], (std::vector<Shape>{{2, 64, 16, 16}}));
  EXPECT_EQ(seen["block2:preact"], (std::vector<Shape>{{2, 64, 16, 16}}));
  EXPECT_EQ(seen[":pooled"], (std::vector<Shape>{{2, 128}}));
  ASSERT_TRUE(f1.defined() && f1_pre.defined() && f3.defined() && f3_pre.defined());
  EXPECT_EQ(f1.shape(), (Shape{2, 32, 32, 32}));
  EXPECT_EQ(f3_pre.shape(), (Shape{2, 128, 8, 8}));
  // RepDistiller: f1_pre = block2.layer[0].bn1(f1), f3_pre = bn1(f3).
  EXPECT_EQ(model->find("block2.layer.0.bn1")(f1).to_vector(), f1_pre.to_vector());
  EXPECT_EQ(model->find("bn1")(f3).to_vector(), f3_pre.to_vector());
  EXPECT_NE(f1_pre.to_vector(), f1.to_vector());
}

// Module::batch_norm_before: the BN before a preact point's ReLU (OFD's margins read it) — a ResNet
// block's bn2, ResNet50's bn3, a WRN group's pre-activation BN, a VGG block's last BN, an inverted
// residual's projection BN, a ShuffleNetV1 unit's bn3 — with the tapped feature's channels; none for a
// module's output, a BN of its own, or a point made by concatenation.
TEST(ModelTaps, BatchNormBeforeEachPreactPoint) {
  struct Case {
    const char* arch;
    const char* tap;
    const char* bn;  // the expected module's path, or "" to check the channels only
  };
  for (const Case& c : {Case{"resnet8", "layer2:preact", "layer2.0.bn2"}, Case{"resnet20", "layer3:preact", "layer3.2.bn2"},
                        Case{"ResNet50", "layer4:preact", "layer4.2.bn3"},
                        Case{"wrn_16_2", "block1:preact", "block2.layer.0.bn1"}, Case{"wrn_16_2", "block3:preact", "bn1"},
                        Case{"vgg8", "block2:preact", ""}, Case{"MobileNetV2", "blocks.2:preact", ""},
                        Case{"ShuffleV1", "layer2:preact", ""}}) {
    auto model = build(c.arch);
    const auto bn = std::dynamic_pointer_cast<BatchNorm2d>(model->batch_norm_before(c.tap));
    ASSERT_TRUE(bn) << c.arch << " " << c.tap;
    if (*c.bn) {
      EXPECT_EQ(bn.get(), &model->find(c.bn)) << c.arch << " " << c.tap;
    }
    auto seen = record_taps(*model, {c.tap}, input(kCifar100, 1));
    EXPECT_EQ(bn->weight().numel(), seen[c.tap].at(0)[1]) << c.arch << " " << c.tap;
  }
  auto resnet = build("resnet8");
  EXPECT_FALSE(resnet->batch_norm_before("layer2"));
  EXPECT_FALSE(resnet->batch_norm_before("layer2.0.bn2"));
  EXPECT_FALSE(build("ShuffleV2")->batch_norm_before("layer1:preact"));
}

// ---- training ----------------------------------------------------------------------------------------

TEST(ResNetTraining, BackwardReachesEveryParameterAndLoadRoundTrips) {
  auto model = build("resnet8", kCifar100, 1);
  const Tensor x = input(kCifar100, 4, 2);
  const Tensor loss = cross_entropy((*model)(x), Tensor::from_int64({3, 14, 15, 92}, {4}));
  loss.backward();
  for (const auto& [name, p] : model->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(all_finite(p.grad())) << name;
    const auto g = p.grad().to_vector();
    EXPECT_TRUE(std::any_of(g.begin(), g.end(), [](double v) { return v != 0; })) << name;
  }
  EXPECT_EQ(model->find("layer1.0.bn1").state_dict()[4].second.item(), 1);  // num_batches_tracked

  auto copy = build("resnet8", kCifar100, 7);
  copy->load_state_dict(model->state_dict());
  model->eval();
  copy->eval();
  NoGradGuard ng;
  EXPECT_EQ((*copy)(x).to_vector(), (*model)(x).to_vector());
}

// ---- eval-mode conv -> BN [-> ReLU] fusion ----------------------------------------------------------

namespace {

// Running statistics and affine parameters far from their initial 0 / 1, so that folding them into
// the convolution is a real computation and not an identity.
void randomise_batch_norms(Module& model, uint64_t seed) {
  Generator gen(seed);
  for (auto& [name, m] : model.named_modules()) {
    auto* bn = dynamic_cast<BatchNorm2d*>(m);
    if (!bn) continue;
    const int64_t c = bn->num_features();
    auto fill = [&](Tensor t, double lo, double hi) {
      const Tensor r = Tensor::rand({c}, gen, DType::F32, lo, hi);
      std::copy(r.data<float>(), r.data<float>() + c, t.data<float>());
    };
    fill(bn->running_mean(), -0.5, 0.5);
    fill(bn->running_var(), 0.3, 2.0);
    fill(bn->weight(), 0.5, 1.5);
    fill(bn->bias(), -0.3, 0.3);
  }
}

int64_t fused_calls(const profiling::Table& t) {
  int64_t n = 0;
  for (const char* k : {"conv2d_bn_eval_forward", "conv2d_bn_relu_eval_forward"})
    if (auto it = t.by_kernel.find(k); it != t.by_kernel.end()) n += it->second.calls;
  return n;
}

}  // namespace

// Every zoo family in eval mode without gradients: the fused forward (conv2d_bn_eval, add_relu) gives
// the unfused forward's logits to rounding, and really runs fused; with gradients it does not fuse.
TEST(EvalFusion, ZooForwardMatchesTheUnfusedForward) {
  for (const char* name : {"resnet20", "resnet8x4", "wrn_16_2", "vgg8", "mobile_half", "ShuffleV1", "ShuffleV2",
                           "ResNet50"}) {
    SCOPED_TRACE(name);
    auto model = build(name, kCifar100, 3);
    randomise_batch_norms(*model, 4);
    model->eval();
    const Tensor x = input(kCifar100, 3, 5);
    Tensor fused, plain;
    {
      NoGradGuard ng;
      profiling::reset();
      profiling::enable(true);
      fused = (*model)(x);
      profiling::enable(false);
      EXPECT_GT(fused_calls(profiling::snapshot()), 0);
      set_eval_fusion(false);
      profiling::reset();
      profiling::enable(true);
      plain = (*model)(x);
      profiling::enable(false);
      set_eval_fusion(true);
      EXPECT_EQ(fused_calls(profiling::snapshot()), 0);
    }
    const auto a = fused.to_vector(), b = plain.to_vector();
    ASSERT_EQ(a.size(), b.size());
    double scale = 0, diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      scale = std::max(scale, std::abs(b[i]));
      diff = std::max(diff, std::abs(a[i] - b[i]));
    }
    EXPECT_GT(scale, 0.0);
    EXPECT_LE(diff, 1e-4 * scale + 1e-5) << "max |fused - unfused| " << diff << " of max |logit| " << scale;
    // Gradients enabled and parameters that want them: the modules run one by one.
    profiling::reset();
    profiling::enable(true);
    const Tensor with_grad = (*model)(x);
    profiling::enable(false);
    EXPECT_EQ(fused_calls(profiling::snapshot()), 0);
    EXPECT_EQ(with_grad.to_vector(), b);
  }
}

// A tap on a BN (or a block's preact point) sees the same tensor with or without the fusion.
// Substituting a stage's output with itself leaves every family's logits bit for bit (also in eval,
// where fused paths must give way to the substituted module), and a changed feature changes them: the
// rest of the network really runs on the substitute (SoKD's refined teacher logits rely on it).
TEST(Substitute, ZooRunsTheRestOfTheNetworkFromAStage) {
  for (auto [name, tap] : std::vector<std::pair<const char*, const char*>>{
           {"resnet8", "layer2"}, {"wrn_16_1", "block2"}, {"vgg8", "block1"}, {"mobile_half", "blocks.3"},
           {"ShuffleV1", "layer2"}, {"ShuffleV2", "layer2"}, {"ResNet50", "layer2"}}) {
    SCOPED_TRACE(name);
    auto model = build(name, kCifar100, 3);
    randomise_batch_norms(*model, 4);
    model->eval();
    NoGradGuard ng;
    const Tensor x = input(kCifar100, 2, 5);
    Tensor f;
    model->tap(tap, [&](const Tensor& t) { f = t; });
    const Tensor y = (*model)(x);
    model->clear_taps();
    ASSERT_TRUE(f.defined());
    model->substitute(tap, f.clone());
    EXPECT_EQ((*model)(x).to_vector(), y.to_vector());
    model->substitute(tap, mul(f, Tensor::scalar(2.0)));
    const Tensor changed = (*model)(x);
    model->clear_substitutes();
    EXPECT_GT(max(abs(sub(changed, y))).item(), 1e-6);  // the identity above gives exactly 0
    EXPECT_EQ((*model)(x).to_vector(), y.to_vector());
  }
}

// Module::stages(): every network of the zoo names mdistiller's feats[1:] — the channels and sizes below are
// methods.md's ReviewKD table (CIFAR-100 input) — and the stage aliases resolve to them.
TEST(ModelStages, EveryFamilyNamesMdistillersFeatureStages) {
  struct Case {
    const char* arch;
    std::vector<int64_t> channels, sizes;
  };
  for (const Case& c : {Case{"resnet32x4", {64, 128, 256}, {32, 16, 8}}, Case{"resnet110", {16, 32, 64}, {32, 16, 8}},
                        Case{"wrn_40_2", {32, 64, 128}, {32, 16, 8}}, Case{"ResNet50", {256, 512, 1024, 2048}, {32, 16, 8, 4}},
                        Case{"vgg13", {128, 256, 512, 512}, {16, 8, 4, 4}}, Case{"vgg8", {128, 256, 512, 512}, {16, 8, 4, 4}},
                        Case{"MobileNetV2", {12, 16, 48, 160}, {16, 8, 4, 2}}, Case{"ShuffleV1", {240, 480, 960}, {16, 8, 4}},
                        Case{"ShuffleV2", {116, 232, 464}, {16, 8, 4}}}) {
    auto model = build(c.arch);
    const std::vector<std::string> stages = model->stages();
    ASSERT_EQ(stages.size(), c.channels.size()) << c.arch;
    std::vector<std::string> aliases;
    for (size_t k = 0; k < stages.size(); ++k) aliases.push_back("stage" + std::to_string(k + 1));
    auto seen = record_taps(*model, aliases, input(kCifar100, 2));
    for (size_t k = 0; k < stages.size(); ++k) {
      EXPECT_EQ(seen[aliases[k]], (std::vector<Shape>{{2, c.channels[k], c.sizes[k], c.sizes[k]}})) << c.arch << " " << stages[k];
      EXPECT_EQ(model->resolve_tap(aliases[k]), stages[k]);
    }
    EXPECT_EQ(model->resolve_tap("stage-1"), stages.back()) << c.arch;
    EXPECT_EQ(model->resolve_taps({"stages"}), stages) << c.arch;
  }
  // Every architecture of the registry declares stages that exist and fire once each.
  for (const std::string& arch : model_names()) {
    auto model = build(arch, kFashion);
    const std::vector<std::string> stages = model->stages();
    ASSERT_GE(stages.size(), 3u) << arch;
    auto seen = record_taps(*model, stages, input(kFashion, 1));
    for (const auto& s : stages) EXPECT_EQ(seen[s].size(), 1u) << arch << " " << s;
  }
}

TEST(ModelStages, AliasesResolveOrNameTheStages) {
  auto model = build("resnet8", kFashion);
  EXPECT_EQ(model->resolve_tap("stage2"), "layer2");
  EXPECT_EQ(model->resolve_tap("stage2:preact"), "layer2:preact");
  EXPECT_EQ(model->resolve_tap("stage-3"), "layer1");
  EXPECT_EQ(model->resolve_tap("layer2.0.bn1"), "layer2.0.bn1");  // not an alias: as it is
  EXPECT_EQ(model->resolve_tap(":pooled"), ":pooled");
  EXPECT_EQ(model->resolve_taps({":stem", "stages:preact", "stage-1"}),
            (std::vector<std::string>{":stem", "layer1:preact", "layer2:preact", "layer3:preact", "layer3"}));
  EXPECT_TRUE(Module::expands_stages({"layer1", "stages:preact"}));
  EXPECT_FALSE(Module::expands_stages({"stage1", "stage-1"}));
  for (const std::string bad : {"stage0", "stage4", "stage-4"}) {
    const std::string msg = error_of([&] { model->resolve_tap(bad); });
    EXPECT_NE(msg.find("tap '" + bad + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ResNet has 3 stages: layer1, layer2, layer3"), std::string::npos) << msg;
  }
  expect_error([&] { model->resolve_tap("stages"); }, {"\"stages\" names every stage", "stage<k>"});
  expect_error([&] { model->tap("stage7", [](const Tensor&) {}); }, {"tap 'stage7'", "3 stages"});
  Sequential plain;
  plain.push_back(std::make_shared<ReLU>());
  expect_error([&] { plain.resolve_tap("stage1"); }, {"Sequential declares no stages", "retort-inspect"});
  expect_error([&] { plain.resolve_taps({"stages"}); }, {"Sequential declares no stages"});

  // An alias taps, substitutes and finds the batch norm of the same point as the path it names.
  Tensor by_alias, by_path, pre_alias, pre_path;
  model->tap("stage2", [&](const Tensor& t) { by_alias = t; });
  model->tap("layer2", [&](const Tensor& t) { by_path = t; });
  model->tap("stage-1:preact", [&](const Tensor& t) { pre_alias = t; });
  model->tap("layer3:preact", [&](const Tensor& t) { pre_path = t; });
  (*model)(input(kFashion, 2));
  ASSERT_TRUE(by_alias.defined() && pre_alias.defined());
  EXPECT_EQ(by_alias.to_vector(), by_path.to_vector());
  EXPECT_EQ(pre_alias.to_vector(), pre_path.to_vector());
  model->clear_taps();
  EXPECT_EQ(model->batch_norm_before("stage2:preact"), model->batch_norm_before("layer2:preact"));
  Tensor layer3;
  model->tap("layer3", [&](const Tensor& t) { layer3 = t; });
  model->substitute("stage-1", Tensor::zeros({2, 64, 7, 7}));
  (*model)(input(kFashion, 2));
  EXPECT_EQ(layer3.to_vector(), std::vector<double>(2 * 64 * 7 * 7, 0.0));
}

TEST(EvalFusion, TapsStillSeeTheirTensors) {
  auto model = build("resnet8", kCifar100, 3);
  randomise_batch_norms(*model, 4);
  model->eval();
  const Tensor x = input(kCifar100, 2, 5);
  auto taps = [&](bool fuse) {
    set_eval_fusion(fuse);
    Tensor bn, pre, out;
    model->tap("layer2.0.bn1", [&](const Tensor& t) { bn = t; });
    model->tap("layer3:preact", [&](const Tensor& t) { pre = t; });
    NoGradGuard ng;
    out = (*model)(x);
    model->clear_taps();
    set_eval_fusion(true);
    return std::vector<Tensor>{bn, pre, out};
  };
  const auto f = taps(true), u = taps(false);
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_TRUE(f[i].defined() && u[i].defined()) << i;
    const auto a = f[i].to_vector(), b = u[i].to_vector();
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j) EXPECT_NEAR(a[j], b[j], 1e-4 * (1 + std::abs(b[j]))) << i << "," << j;
  }
}

// ShuffleNetV2 blocks end in shuffle(cat(a, b)) written as one copy (cat along a new axis); a tap on
// a block's shuffle module makes that block run the module instead. Both give the same logits and the
// same gradients, bit for bit (both are pure copies), and the tapped module really delivers its output.
TEST(ShuffleV2, OneCopyCatShuffleMatchesTheShuffleModule) {
  auto model = build("ShuffleV2", kCifar100, 3);
  const Tensor x = input(kCifar100, 2, 5);
  auto run = [&](bool tapped) {
    Tensor seen;
    if (tapped) {
      model->tap("layer1.0.shuffle", [&](const Tensor& t) { seen = t; });
      model->tap("layer2.1.shuffle", [](const Tensor&) {});
    }
    model->zero_grad();
    Tensor out = (*model)(x);
    sum(out * out).backward();
    model->clear_taps();
    if (tapped) {
      EXPECT_TRUE(seen.defined());
    }
    return std::make_pair(out.to_vector(), model->find("layer1.0.conv1").parameters()[0].grad().to_vector());
  };
  const auto one_copy = run(false), module = run(true);
  EXPECT_EQ(one_copy.first, module.first);
  EXPECT_EQ(one_copy.second, module.second);
}

// ---- tensor names and updates between forward and backward -----------------------------------------

TEST(ModelTensors, NamedByTheirStateDictKeysThroughDtypeAndDeviceMoves) {
  auto m = build("resnet8", kFashion);
  for (const auto& [k, t] : m->state_dict()) EXPECT_EQ(t.name(), k);
  m->to(DType::F64);
  m->to(Device::cpu());
  for (const auto& [k, t] : m->state_dict()) EXPECT_EQ(t.name(), k);
  const Tensor loss = cross_entropy((*m)(input(kFashion, 2).to(DType::F64)), Tensor::from_int64({0, 1}, {2}));
  const std::string dot = graph_to_dot(loss);
  EXPECT_NE(dot.find("layer1.0.conv1.weight"), std::string::npos);
  EXPECT_NE(dot.find("fc.bias"), std::string::npos);
}

TEST(ModelTensors, AnOptimizerStepOrLoadBetweenForwardAndBackwardIsRefused) {
  auto m = build("resnet8", kFashion);
  const Tensor x = input(kFashion, 4);
  const Tensor y = Tensor::from_int64({0, 1, 2, 3}, {4});
  cross_entropy((*m)(x), y).backward();
  SGD opt({{m->parameters(), 0.1}});

  // The common slip: the step taken after the next forward instead of after the last backward.
  const Tensor loss = cross_entropy((*m)(x), y);
  opt.step();
  const std::string msg = error_of([&] { loss.backward(); });
  EXPECT_NE(msg.find("tensor 'fc.weight' (f32[10, 64] cpu) saved by the forward for LinearBackward"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("optimizer step"), std::string::npos) << msg;

  const Tensor loss2 = cross_entropy((*m)(x), y);
  m->load_state_dict(build("resnet8", kFashion, 1)->state_dict());
  EXPECT_NE(error_of([&] { loss2.backward(); }).find("updated in place"), std::string::npos);
}

TEST(ModelTensors, TwoTrainingForwardsBeforeTheirBackwardsGoThrough) {
  // Each forward in training mode updates the batch norms' running statistics in place; no backward
  // reads them, so a second forward (two views of a batch, a teacher run twice) leaves the first
  // graph usable — and its gradients equal those of the graph taken alone.
  auto a = build("resnet8", kFashion), b = build("resnet8", kFashion);
  const Tensor x1 = input(kFashion, 4, 1), x2 = input(kFashion, 4, 2);
  const Tensor y = Tensor::from_int64({0, 1, 2, 3}, {4});
  const Tensor l1 = cross_entropy((*a)(x1), y), l2 = cross_entropy((*a)(x2), y);
  l2.backward();
  for (auto& p : a->parameters()) p.zero_grad();
  l1.backward();
  cross_entropy((*b)(x1), y).backward();
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_EQ(pa[i].second.grad().to_vector(), pb[i].second.grad().to_vector()) << pa[i].first;
}
