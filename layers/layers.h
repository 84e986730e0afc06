// The standard layers, each a Module with PyTorch's parameter and buffer names (weight, bias,
// running_mean, running_var, num_batches_tracked), PyTorch's default initialisation and a
// PyTorch-like extra_repr(), so a state_dict() key for key matches the torch.nn twin and Module::str()
// prints the tree PyTorch would.
//
// Layers that draw random numbers at construction take a Generator& (Conv2d, Linear; Dropout seeds
// its own Generator from it). Parameter accessors look the tensor up by name on every call rather
// than caching handles, because Module::to(dtype) replaces the registered tensors.
//
//   auto conv = std::make_shared<Conv2d>(3, 16, 3, gen, Conv2dOptions{.padding = 1, .bias = false});
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/generator.h"
#include "layers/module.h"

namespace retort {

// A (height, width) pair that also accepts one number for both, as PyTorch's int-or-tuple arguments.
// It remembers which form it was given only to print like PyTorch (pooling layers echo their input).
struct Size2 {
  int64_t h = 0, w = 0;
  bool given_as_pair = false;
  Size2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit on purpose, so `.stride = 2` reads naturally
  Size2(int64_t h_, int64_t w_) : h(h_), w(w_), given_as_pair(true) {}
  bool operator==(const Size2& o) const { return h == o.h && w == o.w; }
  std::string pair_str() const;  // "(3, 3)"
  std::string str() const;       // "3" or "(3, 1)", as given
};

// ---- convolution and linear ----------------------------------------------------------------------

struct Conv2dOptions {
  Size2 stride = 1;
  Size2 padding = 0;
  Size2 dilation = 1;
  int64_t groups = 1;
  bool bias = true;
};

// torch.nn.Conv2d: weight [out, in/groups, kh, kw] and optional bias [out]; initialised as PyTorch's
// reset_parameters: weight kaiming_uniform_(a = sqrt(5)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel_size, Generator& gen, Conv2dOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator& gen);

  Tensor& weight() { return param("weight"); }
  Tensor bias();  // undefined when built with bias = false
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  const Size2& kernel_size() const { return kernel_; }
  const Conv2dOptions& options() const { return options_; }
  Conv2dParams params() const;  // stride, padding, dilation, groups as the engine's conv2d takes them

 private:
  int64_t in_channels_, out_channels_;
  Size2 kernel_;
  Conv2dOptions options_;
};

// torch.nn.Linear: weight [out, in], optional bias [out]; same default initialisation as Conv2d.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator& gen);

  Tensor& weight() { return param("weight"); }
  Tensor bias();  // undefined when built with bias = false
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  int64_t in_features_, out_features_;
  bool has_bias_;
};

// ---- normalisation -------------------------------------------------------------------------------

struct BatchNormOptions {
  double eps = 1e-5;
  // nullopt = PyTorch's momentum=None: a cumulative moving average (factor 1 / num_batches_tracked).
  std::optional<double> momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

// torch.nn.BatchNorm2d. Parameters weight (1), bias (0) when affine; buffers running_mean (0),
// running_var (1) and num_batches_tracked (I64, 0-D) when tracking. Training normalises with batch
// statistics, increments num_batches_tracked and blends the batch statistics into the running ones;
// evaluation uses the running ones (or batch statistics when not tracking).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  // relu(forward(x)) through the fused kernel (engine batch_norm_relu); see bn_relu() below.
  Tensor forward_relu(const Tensor& x);
  void reset_running_stats();
  void reset_parameters();  // also resets the running statistics, as PyTorch

  Tensor weight();  // undefined when affine = false
  Tensor bias();
  Tensor running_mean();  // undefined when track_running_stats = false
  Tensor running_var();
  Tensor num_batches_tracked();
  int64_t num_features() const { return num_features_; }
  const BatchNormOptions& options() const { return options_; }

 private:
  Tensor run(const Tensor& x, bool fuse_relu);
  int64_t num_features_;
  BatchNormOptions options_;
};

// ---- parameter-free layers -----------------------------------------------------------------------

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override;
};

// torch.nn.LeakyReLU: x > 0 ? x : negative_slope * x.
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : Module("LeakyReLU"), negative_slope_(negative_slope) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

 private:
  double negative_slope_;
};

// relu(bn(x)) in one fused kernel pass each way, for the conv -> BN -> ReLU blocks of the zoo. When
// the BN (or the ReLU module) has a tap attached, both run as separate modules instead, so the tap
// still receives the BN's output: fusion never changes what a tap sees, nor any value or gradient.
Tensor bn_relu(BatchNorm2d& bn, const Tensor& x);
Tensor bn_relu(BatchNorm2d& bn, ReLU& relu, const Tensor& x);

// bn(conv(x)) and relu(bn(conv(x))) for the conv -> BN [-> ReLU] blocks of the zoo. In inference
// they are one fused call (engine conv2d_bn_eval: on the CPU the BN and the ReLU are the convolution's
// epilogue, no separate passes over the activations) when nothing observable depends on the
// intermediate tensors: the BN is in eval mode and tracks running statistics, no module of the chain
// has a tap, and no gradient is wanted (gradients disabled, or neither x nor any parameter requires
// one) — the case of evaluation and of a frozen teacher's forward. Otherwise the modules run one after
// the other exactly as (*bn)((*conv)(x)) and bn_relu would. Fused results differ from the separate
// ones only by rounding (where the BN's multiply happens). RETORT_FUSE_EVAL=0 in the environment, or
// set_eval_fusion(false), turns the fusion off.
Tensor conv_bn(Conv2d& conv, BatchNorm2d& bn, const Tensor& x);
Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x);
Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, ReLU& relu, const Tensor& x);
bool eval_fusion_enabled();
void set_eval_fusion(bool on);

class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};

// Flattens dims start_dim..end_dim (torch.nn.Flatten defaults: 1, -1).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : Module("Flatten"), start_dim_(start_dim), end_dim_(end_dim) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

 private:
  int64_t start_dim_, end_dim_;
};

// Pooling. stride defaults to the kernel size, as PyTorch.
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Size2 kernel_size, std::optional<Size2> stride = std::nullopt, Size2 padding = 0);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

 private:
  Size2 kernel_, stride_, padding_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Size2 kernel_size, std::optional<Size2> stride = std::nullopt, Size2 padding = 0,
                     bool count_include_pad = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

 private:
  Size2 kernel_, stride_, padding_;
  bool count_include_pad_;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Size2 output_size) : Module("AdaptiveAvgPool2d"), output_(output_size) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

 private:
  Size2 output_;
};

// Zeroes elements with probability p while training (scaling the rest by 1/(1-p)). The mask comes
// from a Generator the layer owns, seeded from `gen` at construction; checkpoints save and restore
// it through generator().state() / set_state() so a resumed run draws the same masks.
class Dropout : public Module {
 public:
  Dropout(double p, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Generator& generator() { return gen_; }
  double p() const { return p_; }

 private:
  double p_;
  Generator gen_;
};

// ---- containers ----------------------------------------------------------------------------------

// torch.nn.Sequential: children named "0", "1", ... run in order (through operator(), so taps on
// them fire). A tap on a named point of the Sequential ("layer3:preact") is forwarded to its last
// child at the time the tap is attached, so a stage's pre-activation is its last block's.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(const std::vector<ModulePtr>& modules);
  Tensor forward(const Tensor& x) override;

  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    return register_module(std::to_string(children().size()), std::move(m));
  }
  size_t size() const { return children().size(); }
  bool empty() const { return children().empty(); }
  Module& operator[](size_t i) const;  // throws when out of range
  ModulePtr ptr(size_t i) const;

  std::shared_ptr<Module> point_batch_norm(const std::string& point) override;  // the last child's
  std::vector<std::string> points() const override;                             // the last child's

 protected:
  void add_point_tap(const std::string& point, TapFn fn) override;
};

}  // namespace retort
