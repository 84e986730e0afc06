// The standard layers and the Module machinery they rely on: PyTorch names, shapes and state_dict
// order, strict loading errors, BatchNorm's train/eval behaviour and counters, initialisation
// statistics, Sequential taps and named-point forwarding, path errors and the printed tree.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/functions.h"
#include "layers/init.h"
#include "layers/layers.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::error_of;

namespace {

std::vector<std::string> keys(const StateDict& sd) {
  std::vector<std::string> out;
  for (const auto& [k, t] : sd) out.push_back(k);
  return out;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()); }
double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

// conv -> bn -> relu -> pool -> flatten -> fc: a small model with every kind of state.
std::shared_ptr<Sequential> small_net(Generator& gen) {
  auto net = std::make_shared<Sequential>();
  net->push_back(std::make_shared<Conv2d>(3, 16, 3, gen, Conv2dOptions{.padding = 1, .bias = false}));
  net->push_back(std::make_shared<BatchNorm2d>(16));
  net->push_back(std::make_shared<ReLU>());
  net->push_back(std::make_shared<AdaptiveAvgPool2d>(1));
  net->push_back(std::make_shared<Flatten>());
  net->push_back(std::make_shared<Linear>(16, 10, gen));
  return net;
}

// Emits its input (as "pre") and returns x + tag, so a test can tell which module a value came from.
class Emitter : public Module {
 public:
  explicit Emitter(double tag) : Module("Emitter"), tag_(tag) { declare_points({"pre"}); }
  Tensor forward(const Tensor& x) override {
    emit("pre", x);
    return x + tag_;
  }

 private:
  double tag_;
};

}  // namespace

// ---- names, shapes, order ------------------------------------------------------------------------

TEST(LayerNames, Conv2dWeightAndOptionalBias) {
  Generator gen(1);
  Conv2d no_bias(3, 16, 3, gen, {.padding = 1, .bias = false});
  EXPECT_EQ(keys(no_bias.state_dict()), (std::vector<std::string>{"weight"}));
  EXPECT_EQ(no_bias.weight().shape(), (Shape{16, 3, 3, 3}));
  EXPECT_FALSE(no_bias.bias().defined());

  Conv2d grouped(8, 4, {3, 1}, gen, {.groups = 2});
  EXPECT_EQ(keys(grouped.state_dict()), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(grouped.weight().shape(), (Shape{4, 4, 3, 1}));
  EXPECT_EQ(grouped.bias().shape(), (Shape{4}));
  EXPECT_TRUE(grouped.weight().requires_grad());
  EXPECT_TRUE(contains(error_of([&] { Conv2d bad(6, 4, 3, gen, {.groups = 4}); }), "divisible by groups"));
}

TEST(LayerNames, LinearAndBatchNorm) {
  Generator gen(2);
  Linear fc(64, 100, gen);
  EXPECT_EQ(keys(fc.state_dict()), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(fc.weight().shape(), (Shape{100, 64}));
  EXPECT_EQ(Linear(4, 2, gen, false).num_parameters(), 8);

  BatchNorm2d bn(16);
  EXPECT_EQ(keys(bn.state_dict()),
            (std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_EQ(bn.num_parameters(), 32);  // running statistics are buffers, not parameters
  EXPECT_EQ(bn.num_batches_tracked().dtype(), DType::I64);
  EXPECT_EQ(bn.num_batches_tracked().dim(), 0);
  EXPECT_EQ(bn.running_var().to_vector(), std::vector<double>(16, 1.0));
  EXPECT_FALSE(bn.running_mean().requires_grad());

  BatchNorm2d plain(4, {.affine = false, .track_running_stats = false});
  EXPECT_TRUE(plain.state_dict().empty());
}

TEST(ModuleState, StateDictOrderIsRegistrationOrder) {
  Generator gen(3);
  auto net = small_net(gen);
  EXPECT_EQ(keys(net->state_dict()),
            (std::vector<std::string>{"0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                      "1.num_batches_tracked", "5.weight", "5.bias"}));
  EXPECT_EQ(net->num_parameters(), 16 * 3 * 9 + 2 * 16 + 16 * 10 + 10);
  EXPECT_EQ(keys(net->named_buffers()),
            (std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"}));
}

TEST(ModuleState, StrictLoadListsEveryProblem) {
  Generator gen(4);
  auto net = small_net(gen);
  StateDict sd = net->state_dict();
  sd.erase(sd.begin() + 2);                                   // 1.bias missing
  sd.emplace_back("head.weight", Tensor::zeros({1}));         // unexpected
  sd[0].second = Tensor::zeros({16, 3, 5, 5});                // 0.weight mismatched
  const std::string msg = error_of([&] { net->load_state_dict(sd); });
  EXPECT_TRUE(contains(msg, "1.bias")) << msg;
  EXPECT_TRUE(contains(msg, "head.weight")) << msg;
  EXPECT_TRUE(contains(msg, "0.weight: expected [16, 3, 3, 3], got [16, 3, 5, 5]")) << msg;

  const auto report = net->load_state_dict(sd, /*strict=*/false);
  EXPECT_EQ(report.missing, (std::vector<std::string>{"1.bias"}));
  EXPECT_EQ(report.unexpected, (std::vector<std::string>{"head.weight"}));
  EXPECT_EQ(report.mismatched.size(), 1u);
}

TEST(ModuleState, LoadCopiesInPlaceAndConvertsDtype) {
  Generator gen(5), other(6);
  auto a = small_net(gen), b = small_net(other);
  const Tensor a_weight = a->state_dict()[0].second;  // the handle an optimizer would hold
  StateDict sd = b->state_dict();
  for (auto& [k, t] : sd)
    if (is_floating(t.dtype())) t = t.to(DType::F64);
  a->load_state_dict(sd);
  EXPECT_EQ(a_weight.to_vector(), b->state_dict()[0].second.to_vector());
  EXPECT_EQ(a_weight.dtype(), DType::F32);
}

// ---- BatchNorm2d -----------------------------------------------------------------------------------

TEST(LayerBatchNorm, TrainingUpdatesRunningStatsEvalDoesNot) {
  Generator gen(7);
  BatchNorm2d bn(3);
  const Tensor x = Tensor::randn({4, 3, 5, 5}, gen, DType::F32, 2.0, 3.0);
  const Tensor batch_mean = mean(x, {0, 2, 3});
  const Tensor batch_var = var(x, {0, 2, 3}, /*unbiased=*/true);

  Tensor y = bn(x);
  EXPECT_EQ(bn.num_batches_tracked().item(), 1);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(bn.running_mean().at(c), 0.1 * batch_mean.at(c), 1e-5);
    EXPECT_NEAR(bn.running_var().at(c), 0.9 + 0.1 * batch_var.at(c), 1e-4);
  }
  const auto ym = mean(y, {0, 2, 3}).to_vector();
  for (double m : ym) EXPECT_NEAR(m, 0.0, 1e-5);  // batch statistics normalise the batch

  bn.eval();
  const auto rm = bn.running_mean().to_vector(), rv = bn.running_var().to_vector();
  y = bn(x);
  EXPECT_EQ(bn.num_batches_tracked().item(), 1);
  EXPECT_EQ(bn.running_mean().to_vector(), rm);
  EXPECT_EQ(bn.running_var().to_vector(), rv);
  // eval: (x - running_mean) / sqrt(running_var + eps)
  EXPECT_NEAR(y.at(0), (x.at(0) - rm[0]) / std::sqrt(rv[0] + 1e-5), 1e-4);

  bn.train();
  bn(x);
  EXPECT_EQ(bn.num_batches_tracked().item(), 2);
}

TEST(LayerBatchNorm, MomentumNoneIsCumulativeAverage) {
  Generator gen(8);
  BatchNorm2d bn(2, {.momentum = std::nullopt});
  const Tensor x1 = Tensor::randn({3, 2, 4, 4}, gen, DType::F64, 1.0);
  const Tensor x2 = Tensor::randn({3, 2, 4, 4}, gen, DType::F64, -4.0);
  bn.to(DType::F64);
  bn(x1);
  bn(x2);
  EXPECT_EQ(bn.num_batches_tracked().item(), 2);
  EXPECT_EQ(bn.num_batches_tracked().dtype(), DType::I64);  // to(F64) leaves the counter alone
  const auto m1 = mean(x1, {0, 2, 3}).to_vector(), m2 = mean(x2, {0, 2, 3}).to_vector();
  for (int c = 0; c < 2; ++c) EXPECT_NEAR(bn.running_mean().at(c), 0.5 * (m1[c] + m2[c]), 1e-12);
  EXPECT_TRUE(contains(bn.extra_repr(), "momentum=None"));
}

TEST(LayerBatchNorm, UntrackedUsesBatchStatsInEval) {
  Generator gen(9);
  BatchNorm2d bn(2, {.track_running_stats = false});
  bn.eval();
  const Tensor y = bn(Tensor::randn({4, 2, 3, 3}, gen, DType::F32, 5.0));
  for (double m : mean(y, {0, 2, 3}).to_vector()) EXPECT_NEAR(m, 0.0, 1e-5);
  EXPECT_TRUE(contains(error_of([&] { bn(Tensor::zeros({4, 3, 2, 2})); }), "3 channels"));
}

TEST(ModuleState, TrainEvalPropagates) {
  Generator gen(10);
  auto net = small_net(gen);
  net->eval();
  for (auto& [name, m] : net->named_modules()) EXPECT_FALSE(m->is_training()) << name;
  net->train();
  EXPECT_TRUE((*net)[1].is_training());
}

TEST(ModuleState, ConversionsKeepRequiresGradAndNames) {
  // A frozen parameter (a distillation teacher's) stays frozen through to(DType) and to(Device);
  // the others keep requiring gradients, and every tensor keeps its name.
  Generator gen(11);
  auto net = small_net(gen);
  net->name_tensors("");
  auto params = net->named_parameters();
  ASSERT_GE(params.size(), 2u);
  params.front().second.set_requires_grad(false);
  net->to(DType::F64);
  net->to(Device::cpu());
  auto after = net->named_parameters();
  ASSERT_EQ(after.size(), params.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].second.dtype(), DType::F64) << after[i].first;
    EXPECT_EQ(after[i].second.requires_grad(), i != 0) << after[i].first;
    EXPECT_EQ(after[i].second.name(), after[i].first);
  }
  net->to(DType::F32);
  EXPECT_FALSE(net->named_parameters().front().second.requires_grad());
  EXPECT_TRUE(net->named_parameters().back().second.requires_grad());
}

// ---- initialisation --------------------------------------------------------------------------------

TEST(InitSchemes, FansAndGains) {
  EXPECT_EQ(init::calculate_fan_in_and_fan_out(Tensor::zeros({64, 32, 3, 3})), (std::pair<int64_t, int64_t>{288, 576}));
  EXPECT_EQ(init::calculate_fan_in_and_fan_out(Tensor::zeros({10, 20})), (std::pair<int64_t, int64_t>{20, 10}));
  EXPECT_TRUE(contains(error_of([] { init::calculate_fan_in_and_fan_out(Tensor::zeros({5})); }), "fewer than 2"));
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::ReLU), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::LeakyReLU, std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
}

TEST(InitSchemes, KaimingNormalFanOutStd) {
  Generator gen(11);
  Tensor w = Tensor::empty({256, 128, 3, 3});
  init::kaiming_normal_(w, gen, 0.0, init::FanMode::FanOut, init::Nonlinearity::ReLU);
  const auto v = w.to_vector();
  const double want = std::sqrt(2.0 / (256 * 9));
  EXPECT_NEAR(std_of(v) / want, 1.0, 0.02);
  EXPECT_NEAR(mean_of(v), 0.0, 0.02 * want);
}

TEST(InitSchemes, UniformFamiliesRespectBounds) {
  Generator gen(12);
  Tensor w = Tensor::empty({200, 300}, DType::F64);
  init::xavier_uniform_(w, gen);
  const double a = std::sqrt(6.0 / 500.0);
  auto v = w.to_vector();
  for (double x : v) ASSERT_LE(std::abs(x), a);
  EXPECT_NEAR(std_of(v), a / std::sqrt(3.0), 0.02 * a);

  init::kaiming_uniform_(w, gen, 0.0, init::FanMode::FanIn, init::Nonlinearity::ReLU);
  const double bound = std::sqrt(2.0) * std::sqrt(3.0 / 300.0);
  v = w.to_vector();
  for (double x : v) ASSERT_LE(std::abs(x), bound);
  EXPECT_GT(*std::max_element(v.begin(), v.end()), 0.99 * bound);

  init::normal_(w, gen, 3.0, 0.5);
  v = w.to_vector();
  EXPECT_NEAR(mean_of(v), 3.0, 0.01);
  EXPECT_NEAR(std_of(v), 0.5, 0.01);
  init::constant_(w, 0.25);
  EXPECT_EQ(w.to_vector(), std::vector<double>(60000, 0.25));
}

TEST(InitSchemes, LinearDefaultBoundsAndSeeds) {
  Generator gen(13);
  Linear fc(400, 300, gen);
  const double bound = 1.0 / std::sqrt(400.0);  // kaiming_uniform(a = sqrt(5)) == U(-1/sqrt(fan_in), ...)
  const auto w = fc.weight().to_vector(), b = fc.bias().to_vector();
  for (double x : w) ASSERT_LE(std::abs(x), bound);
  for (double x : b) ASSERT_LE(std::abs(x), bound);
  EXPECT_NEAR(std_of(w), bound / std::sqrt(3.0), 0.02 * bound);
  EXPECT_GT(std_of(b), 0.3 * bound);  // the bias is drawn too, not left at zero

  Generator g1(99), g2(99);
  EXPECT_EQ(Conv2d(3, 8, 3, g1).weight().to_vector(), Conv2d(3, 8, 3, g2).weight().to_vector());
}

// ---- forward of the simple layers ------------------------------------------------------------------

TEST(LayerForward, MatchesFunctions) {
  Generator gen(14);
  const Tensor x = Tensor::randn({2, 4, 6, 6}, gen);
  Conv2d conv(4, 6, 3, gen, {.stride = 2, .padding = 1});
  EXPECT_EQ(conv(x).to_vector(), conv2d(x, conv.weight(), conv.bias(), 2, 1).to_vector());
  EXPECT_EQ(MaxPool2d(2)(x).shape(), (Shape{2, 4, 3, 3}));
  EXPECT_EQ(MaxPool2d(3, 2, 1)(x).shape(), (Shape{2, 4, 3, 3}));
  EXPECT_EQ(AvgPool2d(3)(x).to_vector(), avg_pool2d(x, 3).to_vector());
  EXPECT_EQ(AdaptiveAvgPool2d({2, 3})(x).shape(), (Shape{2, 4, 2, 3}));
  EXPECT_EQ(Flatten()(x).shape(), (Shape{2, 144}));
  EXPECT_EQ(Identity()(x).to_vector(), x.to_vector());
  for (double v : ReLU()(x).to_vector()) EXPECT_GE(v, 0.0);
  Linear fc(144, 5, gen);
  EXPECT_EQ(fc(Flatten()(x)).to_vector(), linear(flatten(x, 1), fc.weight(), fc.bias()).to_vector());
}

TEST(LayerForward, DropoutOwnsReproducibleGenerator) {
  Generator gen(15);
  Dropout drop(0.5, gen);
  const Tensor x = Tensor::ones({1000});
  const std::string saved = drop.generator().state();
  const auto first = drop(x).to_vector();
  int zeros = 0;
  for (double v : first) zeros += v == 0.0;
  EXPECT_GT(zeros, 400);
  EXPECT_LT(zeros, 600);
  drop.generator().set_state(saved);
  EXPECT_EQ(drop(x).to_vector(), first);  // a restored generator draws the same mask
  drop.eval();
  EXPECT_EQ(drop(x).to_vector(), x.to_vector());
  EXPECT_EQ(drop.extra_repr(), "p=0.5, inplace=False");
}

TEST(LayerForward, GradientsReachEveryParameter) {
  Generator gen(16);
  auto net = small_net(gen);
  const Tensor loss = cross_entropy((*net)(Tensor::randn({4, 3, 8, 8}, gen)), Tensor::from_int64({1, 2, 3, 4}, {4}));
  loss.backward();
  for (const auto& [name, p] : net->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_EQ(p.grad().shape(), p.shape()) << name;
  }
}

// ---- Sequential and taps ---------------------------------------------------------------------------

TEST(SeqContainer, IndexingAndTaps) {
  Generator gen(17);
  auto net = small_net(gen);
  EXPECT_EQ(net->size(), 6u);
  EXPECT_EQ(net->children()[3].first, "3");
  EXPECT_EQ((*net)[5].type_name(), "Linear");
  EXPECT_TRUE(contains(error_of([&] { (*net)[6]; }), "out of range"));

  std::vector<Shape> seen;
  net->tap("0", [&](const Tensor& t) { seen.push_back(t.shape()); });
  net->tap("4", [&](const Tensor& t) { seen.push_back(t.shape()); });
  net->tap("", [&](const Tensor& t) { seen.push_back(t.shape()); });
  (*net)(Tensor::randn({2, 3, 8, 8}, gen));
  EXPECT_EQ(seen, (std::vector<Shape>{{2, 16, 8, 8}, {2, 16}, {2, 10}}));
  net->clear_taps();
  (*net)(Tensor::randn({2, 3, 8, 8}, gen));
  EXPECT_EQ(seen.size(), 3u);
}

// A substituted module returns the given tensor instead of running: the rest of the network runs on it
// (what SoKD's refined teacher logits need); taps on it see the substitute; clearing restores the net.
TEST(SeqContainer, SubstituteRunsTheRestOfTheNetworkOnTheGivenTensor) {
  Generator gen(5);
  auto net = small_net(gen);
  net->eval();
  const Tensor x = Tensor::randn({2, 3, 8, 8}, gen);
  const Tensor before = (*net)(x);
  const Tensor z = Tensor::randn({2, 16, 8, 8}, gen);
  net->substitute("1", z);  // the BatchNorm's output
  std::vector<Shape> seen;
  double tapped_sum = 0;
  net->tap("1", [&](const Tensor& t) { tapped_sum = sum(t).item(); });
  const Tensor got = (*net)(x);
  Tensor want = z;
  for (size_t i = 2; i < net->size(); ++i) want = (*net)[i](want);
  EXPECT_EQ(got.to_vector(), want.to_vector());
  EXPECT_DOUBLE_EQ(tapped_sum, sum(z).item());
  net->clear_taps();
  net->clear_substitutes();
  EXPECT_EQ((*net)(x).to_vector(), before.to_vector());
  EXPECT_TRUE(contains(error_of([&] { net->substitute("1:pre", z); }), "only a module's output"));
  net->substitute("1", Tensor::randn({3, 16, 8, 8}, gen));
  EXPECT_TRUE(contains(error_of([&] { (*net)(x); }), "does not match the batch"));
  net->clear_substitutes();
}

TEST(SeqContainer, NamedPointsGoToTheLastChild) {
  // outer = [Emitter(1), inner = [Emitter(10), Emitter(100)]]: "1:pre" reaches inner's last child,
  // whose input is x + 1 + 10; the root's ":pre" reaches the same module.
  auto inner = std::make_shared<Sequential>(std::vector<ModulePtr>{std::make_shared<Emitter>(10), std::make_shared<Emitter>(100)});
  Sequential outer({std::make_shared<Emitter>(1), inner});
  std::vector<double> got;
  outer.tap("1:pre", [&](const Tensor& t) { got.push_back(t.item()); });
  outer.tap(":pre", [&](const Tensor& t) { got.push_back(t.item()); });
  outer.tap("1.0:pre", [&](const Tensor& t) { got.push_back(t.item()); });
  const Tensor y = outer(Tensor::zeros({}));
  EXPECT_EQ(y.item(), 111);
  EXPECT_EQ(got, (std::vector<double>{1, 11, 11}));  // 1.0 fires first (input 1), then the two on 1.1
}

TEST(ModuleState, FindAndTapErrorsNameTheChildren) {
  Generator gen(18);
  Sequential outer({small_net(gen)});
  EXPECT_EQ(outer.find("0.5").type_name(), "Linear");
  const std::string msg = error_of([&] { outer.find("0.9.weight"); });
  EXPECT_TRUE(contains(msg, "'0.9.weight'")) << msg;
  EXPECT_TRUE(contains(msg, "no child '9'")) << msg;
  EXPECT_TRUE(contains(msg, "0, 1, 2, 3, 4, 5")) << msg;
  EXPECT_TRUE(contains(error_of([&] { outer.tap("head", [](const Tensor&) {}); }), "no child 'head'"));
}

// ---- printing --------------------------------------------------------------------------------------

TEST(ModuleState, StrPrintsPyTorchLikeTree) {
  Generator gen(19);
  auto net = small_net(gen);
  EXPECT_EQ(net->str(),
            "Sequential(\n"
            "  (0): Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
            "  (1): BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
            "  (2): ReLU()\n"
            "  (3): AdaptiveAvgPool2d(output_size=1)\n"
            "  (4): Flatten(start_dim=1, end_dim=-1)\n"
            "  (5): Linear(in_features=16, out_features=10, bias=True)\n"
            ")");
  EXPECT_EQ(Conv2d(8, 8, {3, 1}, gen, {.stride = 2, .dilation = 2, .groups = 8}).extra_repr(),
            "8, 8, kernel_size=(3, 1), stride=(2, 2), dilation=(2, 2), groups=8");
  EXPECT_EQ(MaxPool2d(3, 2, 1).extra_repr(), "kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False");
  EXPECT_EQ(AvgPool2d(8).extra_repr(), "kernel_size=8, stride=8, padding=0");
  EXPECT_EQ(AdaptiveAvgPool2d({1, 1}).extra_repr(), "output_size=(1, 1)");
}

// ---- fused BN + ReLU ------------------------------------------------------------------------------

namespace {
// dst's values := src's (same shape and dtype), in place.
void assign(Tensor dst, const Tensor& src) {
  ASSERT_EQ(dst.nbytes(), src.nbytes());
  backend_for(dst).copy(src.raw_data(), dst.raw_data(), dst.nbytes());
}

// Max |a - b| / (1 + |b|) over all elements.
double max_rel_diff(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  EXPECT_EQ(va.size(), vb.size());
  double worst = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i)
    worst = std::max(worst, std::abs(va[i] - vb[i]) / (1.0 + std::abs(vb[i])));
  return worst;
}
}  // namespace

// bn_relu gives relu(bn(x)): the same output, input/weight/bias gradients and running statistics,
// in training and in eval mode, in f32 and f64.
TEST(BnRelu, FusedEqualsBatchNormThenRelu) {
  for (DType dt : {DType::F32, DType::F64}) {
    for (bool training : {true, false}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (training ? " train" : " eval"));
      Generator gen(5);
      BatchNorm2d fused(6), plain(6);
      fused.to(dt);
      plain.to(dt);
      Tensor w = Tensor::rand({6}, gen, dt, 0.5, 1.5), b = Tensor::randn({6}, gen, dt, 0.0, 0.3);
      Tensor rm = Tensor::randn({6}, gen, dt), rv = Tensor::rand({6}, gen, dt, 0.5, 2.0);
      for (BatchNorm2d* m : {&fused, &plain}) {
        assign(m->weight(), w);
        assign(m->bias(), b);
        assign(m->running_mean(), rm);
        assign(m->running_var(), rv);
        m->train(training);
      }
      Tensor x = Tensor::randn({4, 6, 5, 5}, gen, dt, 0.5, 1.0);
      Tensor gy = Tensor::randn({4, 6, 5, 5}, gen, dt);
      Tensor x1 = x.clone().set_requires_grad(), x2 = x.clone().set_requires_grad();
      Tensor y1 = bn_relu(fused, x1);
      Tensor y2 = relu(plain(x2));
      EXPECT_EQ(y1.grad_fn()->name(), "BatchNormReluBackward");
      const double tol = dt == DType::F32 ? 1e-6 : 1e-14;
      EXPECT_LE(max_rel_diff(y1, y2), tol);
      y1.backward(gy);
      y2.backward(gy);
      EXPECT_LE(max_rel_diff(x1.grad(), x2.grad()), 10 * tol);
      EXPECT_LE(max_rel_diff(fused.weight().grad(), plain.weight().grad()), 10 * tol);
      EXPECT_LE(max_rel_diff(fused.bias().grad(), plain.bias().grad()), 10 * tol);
      EXPECT_LE(max_rel_diff(fused.running_mean(), plain.running_mean()), tol);
      EXPECT_LE(max_rel_diff(fused.running_var(), plain.running_var()), tol);
      // Some outputs really were clipped, so the mask mattered.
      const auto v = y1.to_vector();
      EXPECT_GT(std::count(v.begin(), v.end(), 0.0), 10);
    }
  }
}

// A tap on the BN still sees the BN's own output (negative values included): with a tap attached
// the fused path steps aside.
TEST(BnRelu, TapOnTheBatchNormSeesItsOutput) {
  Generator gen(9);
  BatchNorm2d bn(3);
  ReLU act;
  Tensor seen;
  bn.tap("", [&](const Tensor& t) { seen = t; });
  Tensor y = bn_relu(bn, act, Tensor::randn({2, 3, 4, 4}, gen));
  ASSERT_TRUE(seen.defined());
  const auto v = seen.to_vector();
  EXPECT_LT(*std::min_element(v.begin(), v.end()), 0.0);
  EXPECT_EQ(max_rel_diff(y, relu(seen)), 0.0);
}
