// Connectors (see connectors.h): conv_transpose2d and its module, FitNets' ConvReg, the 1x1 channel
// adapter and ReviewKD's ABF.
#include "distill/connectors.h"

#include "distill/nodes/contrast.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/functions.h"
#include "engine/functions/common.h"
#include "layers/init.h"

namespace retort {

namespace {

// nn.Sigmoid, so that att_conv prints and indexes as the reference's Sequential(Conv2d, Sigmoid).
class Sigmoid : public Module {
 public:
  Sigmoid() : Module("Sigmoid") {}
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};

// The conv2d whose input gradient is this transposed convolution: x plays conv2d's output gradient,
// the weight [Cin, Cout/g, KH, KW] is read as conv2d's [O = Cin, C/g = Cout/g, KH, KW].
Conv2dParams as_conv(const ConvTranspose2dParams& p) {
  Conv2dParams c;
  c.stride_h = p.stride_h, c.stride_w = p.stride_w;
  c.pad_h = p.pad_h, c.pad_w = p.pad_w;
  c.dilation_h = p.dilation_h, c.dilation_w = p.dilation_w;
  c.groups = p.groups;
  return c;
}

std::string params_str(const ConvTranspose2dParams& p) {
  return detail::cat("stride (", p.stride_h, ", ", p.stride_w, "), padding (", p.pad_h, ", ", p.pad_w,
                     "), output_padding (", p.output_pad_h, ", ", p.output_pad_w, "), dilation (", p.dilation_h, ", ",
                     p.dilation_w, "), groups ", p.groups);
}

Shape conv_transpose2d_output_shape(const Tensor& x, const Tensor& w, const Tensor& bias,
                                    const ConvTranspose2dParams& p) {
  const char* op = "conv_transpose2d";
  fn::check_float(op, x, "input");
  fn::check_dim(op, x, 4, "input", "[N, C_in, H, W]");
  fn::check_compatible(op, x, w, "input", "weight");
  fn::check_dim(op, w, 4, "weight", "[in_channels, out_channels / groups, kH, kW]");
  RETORT_CHECK(p.groups >= 1 && p.stride_h >= 1 && p.stride_w >= 1 && p.dilation_h >= 1 && p.dilation_w >= 1 &&
                   p.pad_h >= 0 && p.pad_w >= 0 && p.output_pad_h >= 0 && p.output_pad_w >= 0,
               "conv_transpose2d: invalid settings ", params_str(p));
  // PyTorch also allows output_padding < dilation; with a larger padding than the stride the
  // forward conv2d no longer maps the output back onto the input's size, so it is not offered.
  RETORT_CHECK(p.output_pad_h < p.stride_h && p.output_pad_w < p.stride_w,
               "conv_transpose2d: output_padding must be smaller than the stride, got ", params_str(p));
  const Shape& xs = x.shape();
  const Shape& ws = w.shape();
  RETORT_CHECK(ws[1] >= 1 && ws[2] >= 1 && ws[3] >= 1, "conv_transpose2d: weight ", w.meta_str(),
               " must have at least one output channel and a kernel of at least 1x1");
  RETORT_CHECK(xs[1] == ws[0], "conv_transpose2d: input ", x.meta_str(), " has ", xs[1], " channels but weight ",
               w.meta_str(), " expects ", ws[0]);
  RETORT_CHECK(ws[0] % p.groups == 0, "conv_transpose2d: weight ", w.meta_str(), " has ", ws[0],
               " input channels, which groups ", p.groups, " does not divide");
  const int64_t out_c = ws[1] * p.groups;
  if (bias.defined()) {
    fn::check_compatible(op, x, bias, "input", "bias");
    RETORT_CHECK(bias.dim() == 1 && bias.shape()[0] == out_c, "conv_transpose2d: bias ", bias.meta_str(),
                 " must be 1-D [", out_c, "], one value per output channel of weight ", w.meta_str(), " with groups ",
                 p.groups);
  }
  const int64_t oh = (xs[2] - 1) * p.stride_h - 2 * p.pad_h + p.dilation_h * (ws[2] - 1) + p.output_pad_h + 1;
  const int64_t ow = (xs[3] - 1) * p.stride_w - 2 * p.pad_w + p.dilation_w * (ws[3] - 1) + p.output_pad_w + 1;
  RETORT_CHECK(oh >= 1 && ow >= 1, "conv_transpose2d: output would be empty (", oh, "x", ow, "): input ",
               x.meta_str(), ", weight ", w.meta_str(), ", ", params_str(p));
  return {xs[0], out_c, oh, ow};
}

void kaiming_conv(Conv2d& conv, Generator& gen) { init::kaiming_uniform_(conv.weight(), gen, 1.0); }

}  // namespace

// ---- conv_transpose2d ----------------------------------------------------------------------------

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const ConvTranspose2dParams& params) {
  const Shape out_shape = conv_transpose2d_output_shape(x, weight, bias, params);
  const Conv2dParams cp = as_conv(params);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  backend_for(x).conv2d_backward_input(x, weight, cp, y);
  if (bias.defined()) {
    NoGradGuard ng;
    y = add(y, bias.view_as_shape({1, out_shape[1], 1, 1}));
  }
  // As conv2d: the input gradient reads the weight, the weight gradient reads the input.
  Tensor x_saved = weight.requires_grad() ? saved(x) : Tensor();
  Tensor w_saved = x.requires_grad() ? saved(weight) : Tensor();
  return record(y, "ConvTranspose2dBackward", {x, weight, bias},
                [xs = x_saved, w = w_saved, cp, x_shape = x.shape(), w_shape = weight.shape()](const Tensor& gy,
                                                                                             const Node& node) {
                  Backend& be = backend_for(gy);
                  Tensor gx, gw, gb;
                  if (node.needs_grad(0)) {
                    // The adjoint of conv2d's input gradient is conv2d itself.
                    gx = Tensor::empty(x_shape, gy.dtype(), gy.device());
                    be.conv2d_forward(gy, w, Tensor(), cp, gx);
                  }
                  if (node.needs_grad(1)) {
                    // <x, conv2d(gy, W)> differentiated in W: conv2d's weight gradient with the
                    // roles of input (gy) and output gradient (x).
                    gw = Tensor::empty(w_shape, gy.dtype(), gy.device());
                    be.conv2d_backward_weight(xs, gy, cp, gw);
                  }
                  if (node.needs_grad(2)) gb = sum(gy, {0, 2, 3});
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding,
                        int64_t output_padding, int64_t groups, int64_t dilation) {
  ConvTranspose2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = padding;
  p.output_pad_h = p.output_pad_w = output_padding;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return conv_transpose2d(x, weight, bias, p);
}

ConvTranspose2d::ConvTranspose2d(int64_t in_channels, int64_t out_channels, Size2 kernel_size, Generator& gen,
                                 ConvTranspose2dOptions options)
    : Module("ConvTranspose2d"),
      in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_(kernel_size),
      options_(options) {
  const int64_t g = options.groups;
  RETORT_CHECK(in_channels > 0 && out_channels > 0 && g > 0,
               "ConvTranspose2d: channels and groups must be positive, got in ", in_channels, ", out ", out_channels,
               ", groups ", g);
  RETORT_CHECK(in_channels % g == 0 && out_channels % g == 0, "ConvTranspose2d: in_channels (", in_channels,
               ") and out_channels (", out_channels, ") must be divisible by groups (", g, ")");
  RETORT_CHECK(kernel_.h > 0 && kernel_.w > 0, "ConvTranspose2d: kernel_size must be positive, got ",
               kernel_.pair_str());
  register_parameter("weight", Tensor::empty({in_channels, out_channels / g, kernel_.h, kernel_.w}));
  if (options.bias) register_parameter("bias", Tensor::empty({out_channels}));
  init::kaiming_uniform_(weight(), gen, std::sqrt(5.0));
  if (options.bias) {
    const int64_t fan_in = init::calculate_fan_in_and_fan_out(weight()).first;
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    init::uniform_(bias(), gen, -bound, bound);
  }
}

Tensor ConvTranspose2d::bias() { return options_.bias ? param("bias") : Tensor(); }

Tensor ConvTranspose2d::forward(const Tensor& x) {
  ConvTranspose2dParams p;
  p.stride_h = options_.stride.h, p.stride_w = options_.stride.w;
  p.pad_h = options_.padding.h, p.pad_w = options_.padding.w;
  p.output_pad_h = options_.output_padding.h, p.output_pad_w = options_.output_padding.w;
  p.dilation_h = options_.dilation.h, p.dilation_w = options_.dilation.w;
  p.groups = options_.groups;
  return conv_transpose2d(x, weight(), bias(), p);
}

std::string ConvTranspose2d::extra_repr() const {
  std::string s = detail::cat(in_channels_, ", ", out_channels_, ", kernel_size=", kernel_.pair_str(),
                              ", stride=", options_.stride.pair_str());
  if (!(options_.padding == Size2(0))) s += ", padding=" + options_.padding.pair_str();
  if (!(options_.dilation == Size2(1))) s += ", dilation=" + options_.dilation.pair_str();
  if (!(options_.output_padding == Size2(0))) s += ", output_padding=" + options_.output_padding.pair_str();
  if (options_.groups != 1) s += detail::cat(", groups=", options_.groups);
  if (!options_.bias) s += ", bias=False";
  return s;
}

// ---- ConvReg -------------------------------------------------------------------------------------

ConvReg::ConvReg(const Shape& student_shape, const Shape& teacher_shape, Generator& gen, bool use_relu)
    : Module("ConvReg"), student_(student_shape), teacher_(teacher_shape), kind_(Kind::Kernel), use_relu_(use_relu) {
  const std::string both =
      detail::cat("student ", shape_str(student_shape), " and teacher ", shape_str(teacher_shape));
  RETORT_CHECK(student_shape.size() == 4 && teacher_shape.size() == 4,
               "ConvReg: shapes must be 4-D [N, C, H, W], got ", both);
  for (size_t i = 0; i < 4; ++i)
    RETORT_CHECK(student_shape[i] > 0 && teacher_shape[i] > 0, "ConvReg: shapes must be positive, got ", both);
  RETORT_CHECK(student_shape[0] == teacher_shape[0], "ConvReg: ", both, " have different batch sizes");
  const int64_t sc = student_shape[1], sh = student_shape[2], sw = student_shape[3];
  const int64_t tc = teacher_shape[1], th = teacher_shape[2], tw = teacher_shape[3];
  // The reference decides on the height alone; the width must then come out right as well.
  int64_t oh = 0, ow = 0;
  if (sh == 2 * th) {
    kind_ = Kind::Stride2;
    conv_ = register_module("conv", std::make_shared<Conv2d>(sc, tc, 3, gen, Conv2dOptions{.stride = 2, .padding = 1}));
    oh = (sh - 1) / 2 + 1, ow = (sw - 1) / 2 + 1;
  } else if (2 * sh == th) {
    kind_ = Kind::Transposed;
    conv_ = register_module(
        "conv", std::make_shared<ConvTranspose2d>(sc, tc, 4, gen, ConvTranspose2dOptions{.stride = 2, .padding = 1}));
    oh = 2 * sh, ow = 2 * sw;
  } else if (sh >= th) {
    RETORT_CHECK(sw >= tw, "ConvReg: no regressor maps ", both, ": the student is narrower than the teacher");
    kind_ = Kind::Kernel;
    conv_ = register_module("conv", std::make_shared<Conv2d>(sc, tc, Size2(1 + sh - th, 1 + sw - tw), gen));
    oh = th, ow = tw;
  } else {
    RETORT_FAIL("ConvReg: no regressor maps ", both, ": a student smaller than the teacher must be exactly half its ",
                "height (a transposed 4x4 stride-2 conv)");
  }
  RETORT_CHECK(oh == th && ow == tw, "ConvReg: no regressor maps ", both, ": the conv chosen from the heights gives ",
               oh, "x", ow, ", not the teacher's ", th, "x", tw);
  bn_ = register_module("bn", std::make_shared<BatchNorm2d>(tc));
  relu_ = register_module("relu", std::make_shared<ReLU>());
}

Tensor ConvReg::forward(const Tensor& x) {
  RETORT_CHECK(x.dim() == 4 && x.shape()[1] == student_[1] && x.shape()[2] == student_[2] &&
                   x.shape()[3] == student_[3],
               "ConvReg: built for student features [*, ", student_[1], ", ", student_[2], ", ", student_[3],
               "] (teacher ", shape_str(teacher_), "), got ", x.meta_str());
  const Tensor y = (*bn_)((*conv_)(x));
  return use_relu_ ? (*relu_)(y) : y;
}

// ---- LinearEmbed ---------------------------------------------------------------------------------

LinearEmbed::LinearEmbed(const Shape& feature_shape, int64_t out, bool normalize, Generator& gen)
    : Module(normalize ? "Embed" : "LinearEmbed"), normalize_(normalize) {
  RETORT_CHECK(feature_shape.size() >= 2, "LinearEmbed: the feature must be [N, ...], got ", shape_str(feature_shape));
  linear_ = register_module("linear", std::make_shared<Linear>(shape_numel(feature_shape) / feature_shape[0], out, gen));
}

Tensor LinearEmbed::forward(const Tensor& x) {
  const Tensor e = (*linear_)(flatten(x, 1));
  return normalize_ ? l2_normalize_rows(e) : e;
}

// ---- factor transfer -----------------------------------------------------------------------------

int64_t ft_factor_channels(int64_t teacher_channels, double rate) {
  RETORT_CHECK(std::isfinite(rate) && rate > 0, "FT: rate must be > 0, got ", rate);
  const auto f = static_cast<int64_t>(static_cast<double>(teacher_channels) * rate);  // Python's int(): truncation
  RETORT_CHECK(f >= 1, "FT: rate ", rate, " leaves no factor channel of the teacher's ", teacher_channels);
  return f;
}

namespace {

// Three 3x3 stride-1 padding-1 layers, channels[0] -> channels[1] -> channels[2] -> channels[3], each
// followed by [BN] and LeakyReLU(0.1), at the indices of RepDistiller's nn.Sequential (an empty
// Sequential standing in for the BN without use_bn).
std::shared_ptr<Sequential> factor_chain(const std::array<int64_t, 4>& channels, bool transposed, bool use_bn,
                                         Generator& gen) {
  auto chain = std::make_shared<Sequential>();
  for (size_t i = 0; i < 3; ++i) {
    const int64_t in = channels[i], out = channels[i + 1];
    if (transposed)
      chain->push_back(std::make_shared<ConvTranspose2d>(in, out, 3, gen, ConvTranspose2dOptions{.padding = 1}));
    else
      chain->push_back(std::make_shared<Conv2d>(in, out, 3, gen, Conv2dOptions{.padding = 1}));
    if (use_bn) chain->push_back(std::make_shared<BatchNorm2d>(out));
    else chain->push_back(std::make_shared<Sequential>());
    chain->push_back(std::make_shared<LeakyReLU>(0.1));
  }
  return chain;
}

}  // namespace

Paraphraser::Paraphraser(int64_t channels, double rate, bool use_bn, Generator& gen) : Module("Paraphraser") {
  RETORT_CHECK(channels >= 1, "Paraphraser: channels must be >= 1, got ", channels);
  const int64_t f = ft_factor_channels(channels, rate);
  encoder_ = register_module("encoder", factor_chain({channels, channels, f, f}, false, use_bn, gen));
  decoder_ = register_module("decoder", factor_chain({f, f, channels, channels}, true, use_bn, gen));
}

Tensor Paraphraser::factor(const Tensor& x) { return (*encoder_)(x); }
Tensor Paraphraser::forward(const Tensor& x) { return (*decoder_)((*encoder_)(x)); }

Translator::Translator(int64_t student_channels, int64_t factor_channels, bool use_bn, Generator& gen)
    : Module("Translator") {
  RETORT_CHECK(student_channels >= 1 && factor_channels >= 1, "Translator: channels must be >= 1, got ",
               student_channels, " -> ", factor_channels);
  encoder_ = register_module(
      "encoder", factor_chain({student_channels, student_channels, factor_channels, factor_channels}, false, use_bn, gen));
}

Tensor Translator::forward(const Tensor& x) { return (*encoder_)(x); }

// ---- Adapter1x1 ----------------------------------------------------------------------------------

Adapter1x1::Adapter1x1(int64_t in_channels, int64_t out_channels, bool relu, Generator& gen) : Module("Adapter1x1") {
  conv_ = register_module("conv", std::make_shared<Conv2d>(in_channels, out_channels, 1, gen,
                                                           Conv2dOptions{.bias = false}));
  bn_ = register_module("bn", std::make_shared<BatchNorm2d>(out_channels));
  if (relu) relu_ = register_module("relu", std::make_shared<ReLU>());
}

Tensor Adapter1x1::forward(const Tensor& x) {
  const Tensor y = (*bn_)((*conv_)(x));
  return relu_ ? (*relu_)(y) : y;
}

// ---- AuxClassifier --------------------------------------------------------------------------------

AuxClassifier::AuxClassifier(const Shape& stage_shape, int64_t final_channels, int64_t final_h, int64_t final_w,
                             int64_t num_classes, Generator& gen)
    : Module("AuxClassifier") {
  RETORT_CHECK(stage_shape.size() == 4 && final_channels > 0 && final_h > 0 && final_w > 0 && num_classes > 0,
               "AuxClassifier: stage feature ", shape_str(stage_shape), " must be [N, C, H, W], and the final stage (",
               final_channels, " channels, ", final_h, "x", final_w, ") and ", num_classes, " classes positive");
  int64_t n = 0, h = stage_shape[2];
  while (h > final_h && h % 2 == 0) h /= 2, ++n;
  RETORT_CHECK(h == final_h && stage_shape[3] == final_w << n, "AuxClassifier: stage feature ", shape_str(stage_shape),
               " cannot be brought to the final stage's ", final_h, "x", final_w,
               " by stride-2 convolutions (its height and width must be the final ones times the same power of 2)");
  features_ = register_module("features", std::make_shared<Sequential>());
  const int64_t c0 = stage_shape[1];
  const int64_t blocks = std::max<int64_t>(n, 1);
  int64_t c = c0;
  for (int64_t i = 1; i <= blocks; ++i) {
    const int64_t next = i == blocks ? final_channels
                                     : static_cast<int64_t>(std::llround(
                                           static_cast<double>(c0) *
                                           std::pow(static_cast<double>(final_channels) / static_cast<double>(c0),
                                                    static_cast<double>(i) / static_cast<double>(blocks))));
    features_->push_back(std::make_shared<Conv2d>(
        c, next, 3, gen, Conv2dOptions{.stride = n > 0 ? 2 : 1, .padding = 1, .bias = false}));
    features_->push_back(std::make_shared<BatchNorm2d>(next));
    features_->push_back(std::make_shared<ReLU>());
    c = next;
  }
  fc_ = register_module("fc", std::make_shared<Linear>(final_channels, num_classes, gen));
}

Tensor AuxClassifier::forward(const Tensor& x) {
  return (*fc_)(flatten(adaptive_avg_pool2d((*features_)(x), 1, 1), 1));
}

// ---- StageCopyClassifier -------------------------------------------------------------------------

StageCopyClassifier::StageCopyClassifier(Module& fresh, const std::string& from_spec, const std::string& to_spec,
                                         const Shape& sample_shape, int64_t num_classes, Generator& gen)
    : Module("StageCopyClassifier") {
  const std::string arch = fresh.type_name();
  const std::string from = fresh.resolve_tap(from_spec), to = fresh.resolve_tap(to_spec);  // "stage2" -> its path
  for (const auto& tap : {from, to})
    RETORT_CHECK(tap.find(':') == std::string::npos, "stage-copy head on ", arch, ": '", tap,
                 "' is a named point; the head copies whole modules (give a module path such as layer2)");
  fresh.find(from);  // both must exist (the error lists the children)
  fresh.find(to);
  // The units: top-level children, opening every ancestor of `from` and `to`.
  std::vector<std::pair<std::string, ModulePtr>> units;
  std::function<void(const std::string&, Module&)> open = [&](const std::string& prefix, Module& m) {
    for (const auto& [name, child] : m.children()) {
      const std::string path = prefix.empty() ? name : prefix + "." + name;
      if (from.rfind(path + ".", 0) == 0 || to.rfind(path + ".", 0) == 0) open(path, *child);
      else units.emplace_back(path, child);
    }
  };
  open("", fresh);
  // Which units run, in what order, and their outputs on a probe batch.
  std::vector<size_t> order;
  std::vector<Tensor> outputs(units.size());
  for (size_t i = 0; i < units.size(); ++i)
    fresh.tap(units[i].first, [&order, &outputs, i](const Tensor& t) {
      order.push_back(i);
      outputs[i] = t;
    });
  NoGradGuard no_grad;
  fresh.eval();
  Generator probe_gen(0x5eed);
  Shape in{2};
  in.insert(in.end(), sample_shape.begin(), sample_shape.end());
  fresh(Tensor::randn(in, probe_gen));
  fresh.clear_taps();
  auto position = [&](const std::string& path) {
    for (size_t k = 0; k < order.size(); ++k)
      if (units[order[k]].first == path) return k;
    RETORT_FAIL("stage-copy head on ", arch, ": '", path, "' never runs in its forward");
  };
  const size_t a = position(from), b = position(to);
  RETORT_CHECK(a < b, "stage-copy head on ", arch, ": '", to, "' must run after '", from, "'");
  for (size_t k = a + 1; k <= b; ++k) {
    const auto& [path, m] = units[order[k]];
    RETORT_CHECK(std::count(order.begin(), order.end(), order[k]) == 1, "stage-copy head on ", arch, ": '", path,
                 "' runs more than once in the forward; cannot copy it as a stage");
    std::string name = path;
    std::replace(name.begin(), name.end(), '.', '_');
    unit_paths_.push_back(path);
    units_.push_back(m);
    register_module(name, m);
  }
  // The copy must reproduce the network from `from` to `to`.
  Tensor x = outputs[order[a]];
  for (auto& m : units_) x = (*m)(x);
  const Tensor& want = outputs[order[b]];
  RETORT_CHECK(x.shape() == want.shape() && want.dim() == 4, "stage-copy head on ", arch, ": running ",
               unit_paths_.size(), " modules after '", from, "' gives ", shape_str(x.shape()), ", but '", to, "' gives ",
               shape_str(want.shape()), " (a [N, C, H, W] feature is needed)");
  const std::vector<double> got = x.to_vector(), ref = want.to_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, std::abs(got[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  RETORT_CHECK(diff <= 1e-4 * (1 + scale), "stage-copy head on ", arch, ": the modules after '", from, "' through '",
               to, "' do not reproduce '", to, "' (max difference ", diff, "): its forward does more between them "
               "than calling them in order; use head \"conv\"");
  fc_ = register_module("fc", std::make_shared<Linear>(want.size(1), num_classes, gen));
}

Tensor StageCopyClassifier::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : units_) h = (*m)(h);
  return (*fc_)(flatten(adaptive_avg_pool2d(h, 1, 1), 1));
}

// ---- DistinctiveAreaDetector ----------------------------------------------------------------------

namespace {
std::shared_ptr<Sequential> dam_branch(int64_t c, int64_t out, bool trailing_relu, Generator& gen) {
  auto s = std::make_shared<Sequential>();
  s->push_back(std::make_shared<Conv2d>(c, c, 3, gen, Conv2dOptions{.padding = 1}));
  s->push_back(std::make_shared<ReLU>());
  s->push_back(std::make_shared<Conv2d>(c, out, 1, gen));
  if (trailing_relu) s->push_back(std::make_shared<ReLU>());
  return s;
}
}  // namespace

DistinctiveAreaDetector::DistinctiveAreaDetector(int64_t channels, int64_t heatmap_classes, bool trailing_relu,
                                                 Generator& gen)
    : Module("DistinctiveAreaDetector") {
  RETORT_CHECK(channels > 0 && heatmap_classes > 0, "DistinctiveAreaDetector: channels (", channels,
               ") and heatmap_classes (", heatmap_classes, ") must be positive");
  heatmap_ = register_module("heatmap_head", dam_branch(channels, heatmap_classes, trailing_relu, gen));
  wh_ = register_module("wh_head", dam_branch(channels, 2, trailing_relu, gen));
  offset_ = register_module("offset_head", dam_branch(channels, 2, trailing_relu, gen));
}

DistinctiveAreaDetector::Output DistinctiveAreaDetector::heads(const Tensor& x) {
  return {sigmoid((*heatmap_)(x)), (*wh_)(x), (*offset_)(x)};
}

Tensor DistinctiveAreaDetector::forward(const Tensor& x) {
  const Output o = heads(x);
  return cat({o.heatmap, o.wh, o.offset}, 1);
}

// ---- ABF -----------------------------------------------------------------------------------------

ABF::ABF(int64_t in_channels, int64_t mid_channels, int64_t out_channels, bool fuse, Generator& gen)
    : Module("ABF"), in_channels_(in_channels), mid_channels_(mid_channels) {
  // Built in the reference's order (conv1, conv2, att_conv, then conv1/conv2 re-initialised), so
  // one seed draws the same numbers in the same places.
  auto c1 = std::make_shared<Conv2d>(in_channels, mid_channels, 1, gen, Conv2dOptions{.bias = false});
  conv1_ = register_module("conv1", std::make_shared<Sequential>(
                                        std::vector<ModulePtr>{c1, std::make_shared<BatchNorm2d>(mid_channels)}));
  auto c2 = std::make_shared<Conv2d>(mid_channels, out_channels, 3, gen, Conv2dOptions{.padding = 1, .bias = false});
  conv2_ = register_module("conv2", std::make_shared<Sequential>(
                                        std::vector<ModulePtr>{c2, std::make_shared<BatchNorm2d>(out_channels)}));
  if (fuse)
    att_conv_ = register_module(
        "att_conv", std::make_shared<Sequential>(std::vector<ModulePtr>{
                        std::make_shared<Conv2d>(2 * mid_channels, 2, 1, gen), std::make_shared<Sigmoid>()}));
  kaiming_conv(*c1, gen);
  kaiming_conv(*c2, gen);
}

std::pair<Tensor, Tensor> ABF::fuse(const Tensor& x, const Tensor& residual, int64_t out_h, int64_t out_w) {
  if (out_w < 0) out_w = out_h;
  RETORT_CHECK(x.defined() && x.dim() == 4 && x.shape()[1] == in_channels_, "ABF: input must be [N, ", in_channels_,
               ", H, W], got ", x.defined() ? x.meta_str() : std::string("an undefined tensor"));
  RETORT_CHECK(out_h > 0 && out_w > 0, "ABF: output size must be positive, got ", out_h, "x", out_w);
  Tensor mid = (*conv1_)(x);
  if (att_conv_) {
    RETORT_CHECK(residual.defined() && residual.dim() == 4 && residual.shape()[0] == x.shape()[0] &&
                     residual.shape()[1] == mid_channels_,
                 "ABF: built with fuse, so the residual must be [", x.shape()[0], ", ", mid_channels_,
                 ", h, w] (input ", x.meta_str(), "), got ",
                 residual.defined() ? residual.meta_str() : std::string("an undefined tensor"));
    const int64_t h = x.shape()[2], w = x.shape()[3];
    const Tensor r = interpolate_nearest(residual, h, w);
    const Tensor att = (*att_conv_)(cat({mid, r}, 1));  // [N, 2, h, w]
    mid = add(mul(mid, slice(att, 1, 0, 1)), mul(r, slice(att, 1, 1, 2)));
  } else {
    RETORT_CHECK(!residual.defined(), "ABF: built without fuse (the deepest level), so it takes no residual; got ",
                 residual.meta_str(), " with input ", x.meta_str());
  }
  if (mid.shape()[2] != out_h || mid.shape()[3] != out_w) mid = interpolate_nearest(mid, out_h, out_w);
  return {(*conv2_)(mid), mid};
}

Tensor ABF::forward(const Tensor& x) {
  RETORT_CHECK(!att_conv_, "ABF: built with fuse, so it needs the deeper level's residual: call fuse(x, residual, "
                           "out_size), not forward (input ",
               x.defined() ? x.meta_str() : std::string("undefined"), ")");
  RETORT_CHECK(x.defined() && x.dim() == 4, "ABF: input must be [N, ", in_channels_, ", H, W], got ",
               x.defined() ? x.meta_str() : std::string("an undefined tensor"));
  return fuse(x, Tensor(), x.shape()[2], x.shape()[3]).first;
}

}  // namespace retort
