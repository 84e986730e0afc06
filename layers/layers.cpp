// The standard layers (see layers.h): construction with PyTorch's defaults, forward through the
// engine's differentiable functions, and PyTorch-style extra_repr().
#include "layers/layers.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/backend.h"
#include "engine/autograd.h"
#include "engine/env.h"
#include "engine/functions.h"
#include "layers/init.h"

namespace retort {

namespace {

// Python's repr of a float, close enough for extra_repr: 1e-05, 0.1, 0.0.
std::string py_float(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  std::string s(buf);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // 'n' covers inf/nan
  return s;
}

const char* py_bool(bool b) { return b ? "True" : "False"; }

// PyTorch's default for Conv2d and Linear: kaiming_uniform_(a = sqrt(5)) on the weight, which is
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
void default_reset(Tensor weight, Tensor bias, Generator& gen) {
  init::kaiming_uniform_(weight, gen, std::sqrt(5.0));
  if (!bias.defined()) return;
  const int64_t fan_in = init::calculate_fan_in_and_fan_out(weight).first;
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  init::uniform_(bias, gen, -bound, bound);
}

// ++counter for a 0-D I64 tensor on any device; returns the new value.
int64_t increment(Tensor counter) {
  counter.bump_version();
  if (counter.device().is_cpu()) return ++counter.data<int64_t>()[0];
  Backend& be = backend_for(counter.device());
  int64_t v = 0;
  be.copy_to_host(counter.raw_data(), &v, sizeof v);
  ++v;
  be.copy_from_host(&v, counter.raw_data(), sizeof v);
  return v;
}

Pool2dParams pool_params(const Size2& k, const Size2& s, const Size2& p) {
  Pool2dParams pp;
  pp.kernel_h = k.h, pp.kernel_w = k.w;
  pp.stride_h = s.h, pp.stride_w = s.w;
  pp.pad_h = p.h, pp.pad_w = p.w;
  return pp;
}

}  // namespace

std::string Size2::pair_str() const { return detail::cat("(", h, ", ", w, ")"); }
std::string Size2::str() const { return given_as_pair ? pair_str() : std::to_string(h); }

// ---- Conv2d --------------------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel_size, Generator& gen, Conv2dOptions options)
    : Module("Conv2d"), in_channels_(in_channels), out_channels_(out_channels), kernel_(kernel_size), options_(options) {
  const int64_t g = options.groups;
  RETORT_CHECK(in_channels > 0 && out_channels > 0 && g > 0, "Conv2d: channels and groups must be positive, got in ",
               in_channels, ", out ", out_channels, ", groups ", g);
  RETORT_CHECK(in_channels % g == 0 && out_channels % g == 0, "Conv2d: in_channels (", in_channels,
               ") and out_channels (", out_channels, ") must be divisible by groups (", g, ")");
  RETORT_CHECK(kernel_.h > 0 && kernel_.w > 0, "Conv2d: kernel_size must be positive, got ", kernel_.pair_str());
  register_parameter("weight", Tensor::empty({out_channels, in_channels / g, kernel_.h, kernel_.w}));
  if (options.bias) register_parameter("bias", Tensor::empty({out_channels}));
  reset_parameters(gen);
}

Tensor Conv2d::bias() { return options_.bias ? param("bias") : Tensor(); }

void Conv2d::reset_parameters(Generator& gen) { default_reset(weight(), bias(), gen); }

Conv2dParams Conv2d::params() const {
  Conv2dParams p;
  p.stride_h = options_.stride.h, p.stride_w = options_.stride.w;
  p.pad_h = options_.padding.h, p.pad_w = options_.padding.w;
  p.dilation_h = options_.dilation.h, p.dilation_w = options_.dilation.w;
  p.groups = options_.groups;
  return p;
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight(), bias(), params()); }

std::string Conv2d::extra_repr() const {
  std::string s = detail::cat(in_channels_, ", ", out_channels_, ", kernel_size=", kernel_.pair_str(),
                              ", stride=", options_.stride.pair_str());
  if (!(options_.padding == Size2(0))) s += ", padding=" + options_.padding.pair_str();
  if (!(options_.dilation == Size2(1))) s += ", dilation=" + options_.dilation.pair_str();
  if (options_.groups != 1) s += detail::cat(", groups=", options_.groups);
  if (!options_.bias) s += ", bias=False";
  return s;
}

// ---- Linear --------------------------------------------------------------------------------------

Linear::Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias)
    : Module("Linear"), in_features_(in_features), out_features_(out_features), has_bias_(bias) {
  RETORT_CHECK(in_features > 0 && out_features > 0, "Linear: features must be positive, got in ", in_features,
               ", out ", out_features);
  register_parameter("weight", Tensor::empty({out_features, in_features}));
  if (bias) register_parameter("bias", Tensor::empty({out_features}));
  reset_parameters(gen);
}

Tensor Linear::bias() { return has_bias_ ? param("bias") : Tensor(); }

void Linear::reset_parameters(Generator& gen) { default_reset(weight(), bias(), gen); }

Tensor Linear::forward(const Tensor& x) { return linear(x, weight(), bias()); }

std::string Linear::extra_repr() const {
  return detail::cat("in_features=", in_features_, ", out_features=", out_features_, ", bias=", py_bool(has_bias_));
}

// ---- BatchNorm2d ---------------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(int64_t num_features, BatchNormOptions options)
    : Module("BatchNorm2d"), num_features_(num_features), options_(options) {
  RETORT_CHECK(num_features > 0, "BatchNorm2d: num_features must be positive, got ", num_features);
  if (options.affine) {
    register_parameter("weight", Tensor::ones({num_features}));
    register_parameter("bias", Tensor::zeros({num_features}));
  }
  if (options.track_running_stats) {
    register_buffer("running_mean", Tensor::zeros({num_features}));
    register_buffer("running_var", Tensor::ones({num_features}));
    register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
  }
}

Tensor BatchNorm2d::weight() { return options_.affine ? param("weight") : Tensor(); }
Tensor BatchNorm2d::bias() { return options_.affine ? param("bias") : Tensor(); }
Tensor BatchNorm2d::running_mean() { return options_.track_running_stats ? buffer("running_mean") : Tensor(); }
Tensor BatchNorm2d::running_var() { return options_.track_running_stats ? buffer("running_var") : Tensor(); }
Tensor BatchNorm2d::num_batches_tracked() {
  return options_.track_running_stats ? buffer("num_batches_tracked") : Tensor();
}

void BatchNorm2d::reset_running_stats() {
  if (!options_.track_running_stats) return;
  init::zeros_(running_mean());
  init::ones_(running_var());
  init::zeros_(num_batches_tracked());
}

void BatchNorm2d::reset_parameters() {
  reset_running_stats();
  if (!options_.affine) return;
  init::ones_(weight());
  init::zeros_(bias());
}

Tensor BatchNorm2d::forward(const Tensor& x) { return run(x, false); }
Tensor BatchNorm2d::forward_relu(const Tensor& x) { return run(x, true); }

Tensor bn_relu(BatchNorm2d& bn, const Tensor& x) {
  if (bn.has_taps()) return relu(bn(x));
  return bn.forward_relu(x);
}

Tensor bn_relu(BatchNorm2d& bn, ReLU& relu_module, const Tensor& x) {
  if (bn.has_taps() || relu_module.has_taps()) return relu_module(bn(x));
  return bn.forward_relu(x);
}

namespace {

bool& eval_fusion_setting() {
  static bool on = env_switch("RETORT_FUSE_EVAL", true);
  return on;
}

bool wants_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

// True when conv -> bn [-> relu] may run as one conv2d_bn_eval call (see layers.h).
bool fusible(Conv2d& conv, BatchNorm2d& bn, const ReLU* relu, const Tensor& x) {
  if (!eval_fusion_setting() || bn.is_training() || !bn.options().track_running_stats) return false;
  if (conv.has_taps() || bn.has_taps() || (relu && relu->has_taps())) return false;
  if (grad_enabled() && (wants_grad(x) || wants_grad(conv.weight()) || wants_grad(conv.bias()) ||
                         wants_grad(bn.weight()) || wants_grad(bn.bias())))
    return false;
  return x.dim() == 4 && x.shape()[1] == conv.in_channels() && conv.out_channels() == bn.num_features();
}

Tensor fused(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool relu) {
  return conv2d_bn_eval(x, conv.weight(), conv.bias(), conv.params(), bn.weight(), bn.bias(), bn.running_mean(),
                        bn.running_var(), bn.options().eps, relu);
}

}  // namespace

bool eval_fusion_enabled() { return eval_fusion_setting(); }
void set_eval_fusion(bool on) { eval_fusion_setting() = on; }

Tensor conv_bn(Conv2d& conv, BatchNorm2d& bn, const Tensor& x) {
  if (fusible(conv, bn, nullptr, x)) return fused(conv, bn, x, false);
  return bn(conv(x));
}

Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x) {
  if (fusible(conv, bn, nullptr, x)) return fused(conv, bn, x, true);
  return bn_relu(bn, conv(x));
}

Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, ReLU& relu, const Tensor& x) {
  if (fusible(conv, bn, &relu, x)) return fused(conv, bn, x, true);
  return bn_relu(bn, relu, conv(x));
}

Tensor BatchNorm2d::run(const Tensor& x, bool fuse_relu) {
  RETORT_CHECK(x.dim() == 4, "BatchNorm2d(", num_features_, "): expected 4-D input [N, C, H, W], got ", x.meta_str());
  RETORT_CHECK(x.shape()[1] == num_features_, "BatchNorm2d(", num_features_, "): input has ", x.shape()[1],
               " channels (", x.meta_str(), ")");
  // As torch.nn.modules.batchnorm._BatchNorm.forward: the counter moves on every training forward,
  // and with momentum=None the blend factor is the cumulative average 1/num_batches_tracked.
  double factor = options_.momentum.value_or(0.0);
  if (is_training() && options_.track_running_stats) {
    const int64_t n = increment(num_batches_tracked());
    if (!options_.momentum) factor = 1.0 / static_cast<double>(n);
  }
  const bool use_batch_stats = is_training() || !options_.track_running_stats;
  if (fuse_relu)
    return batch_norm_relu(x, running_mean(), running_var(), weight(), bias(), use_batch_stats, factor, options_.eps);
  return batch_norm(x, running_mean(), running_var(), weight(), bias(), use_batch_stats, factor, options_.eps);
}

std::string BatchNorm2d::extra_repr() const {
  return detail::cat(num_features_, ", eps=", py_float(options_.eps),
                     ", momentum=", options_.momentum ? py_float(*options_.momentum) : std::string("None"),
                     ", affine=", py_bool(options_.affine), ", track_running_stats=",
                     py_bool(options_.track_running_stats));
}

// ---- parameter-free layers -----------------------------------------------------------------------

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

Tensor LeakyReLU::forward(const Tensor& x) { return leaky_relu(x, negative_slope_); }
std::string LeakyReLU::extra_repr() const { return detail::cat("negative_slope=", negative_slope_); }

Tensor Flatten::forward(const Tensor& x) { return flatten(x, start_dim_, end_dim_); }
std::string Flatten::extra_repr() const { return detail::cat("start_dim=", start_dim_, ", end_dim=", end_dim_); }

MaxPool2d::MaxPool2d(Size2 kernel_size, std::optional<Size2> stride, Size2 padding)
    : Module("MaxPool2d"), kernel_(kernel_size), stride_(stride.value_or(kernel_size)), padding_(padding) {}

Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, pool_params(kernel_, stride_, padding_)); }

std::string MaxPool2d::extra_repr() const {
  return detail::cat("kernel_size=", kernel_.str(), ", stride=", stride_.str(), ", padding=", padding_.str(),
                     ", dilation=1, ceil_mode=False");
}

AvgPool2d::AvgPool2d(Size2 kernel_size, std::optional<Size2> stride, Size2 padding, bool count_include_pad)
    : Module("AvgPool2d"),
      kernel_(kernel_size),
      stride_(stride.value_or(kernel_size)),
      padding_(padding),
      count_include_pad_(count_include_pad) {}

Tensor AvgPool2d::forward(const Tensor& x) {
  Pool2dParams p = pool_params(kernel_, stride_, padding_);
  p.count_include_pad = count_include_pad_;
  return avg_pool2d(x, p);
}

std::string AvgPool2d::extra_repr() const {
  return detail::cat("kernel_size=", kernel_.str(), ", stride=", stride_.str(), ", padding=", padding_.str());
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) { return adaptive_avg_pool2d(x, output_.h, output_.w); }
std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + output_.str(); }

Dropout::Dropout(double p, Generator& gen) : Module("Dropout"), p_(p), gen_(gen.next_u64()) {
  RETORT_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability must be in [0, 1], got ", p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), gen_); }
std::string Dropout::extra_repr() const { return "p=" + py_float(p_) + ", inplace=False"; }

// ---- Sequential ----------------------------------------------------------------------------------

Sequential::Sequential(const std::vector<ModulePtr>& modules) : Module("Sequential") {
  for (const auto& m : modules) push_back(m);
}

// Conv2d, BatchNorm2d [, ReLU] runs of children go through conv_bn / conv_bn_relu, which fuse them in
// inference and otherwise call the modules one by one, as the plain loop would.
Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  const auto& kids = children();
  for (size_t i = 0; i < kids.size(); ++i) {
    auto* conv = dynamic_cast<Conv2d*>(kids[i].second.get());
    auto* bn = conv && i + 1 < kids.size() ? dynamic_cast<BatchNorm2d*>(kids[i + 1].second.get()) : nullptr;
    if (!bn) {
      y = (*kids[i].second)(y);
      continue;
    }
    auto* relu = i + 2 < kids.size() ? dynamic_cast<ReLU*>(kids[i + 2].second.get()) : nullptr;
    y = relu ? conv_bn_relu(*conv, *bn, *relu, y) : conv_bn(*conv, *bn, y);
    i += relu ? 2 : 1;
  }
  return y;
}

ModulePtr Sequential::ptr(size_t i) const {
  RETORT_CHECK(i < children().size(), "Sequential: index ", i, " out of range (size ", children().size(), ")");
  return children()[i].second;
}

Module& Sequential::operator[](size_t i) const { return *ptr(i); }

void Sequential::add_point_tap(const std::string& point, TapFn fn) {
  if (children().empty()) return Module::add_point_tap(point, std::move(fn));
  // tap() with an empty path attaches to the child itself, through its own add_point_tap, so
  // nested Sequentials keep forwarding to their last child.
  children().back().second->tap(":" + point, std::move(fn));
}

std::vector<std::string> Sequential::points() const {
  return children().empty() ? Module::points() : children().back().second->points();
}

std::shared_ptr<Module> Sequential::point_batch_norm(const std::string& point) {
  return children().empty() ? nullptr : children().back().second->point_batch_norm(point);
}

}  // namespace retort
