// Module: the base of every layer and model. A module owns named parameters (trainable leaves),
// named buffers (state that is saved but not trained, e.g. BatchNorm's running statistics) and named
// submodules, so every tensor has a dotted PyTorch name ("layer1.0.conv1.weight",
// "bn1.running_mean") — the names of state_dict(), of checkpoints, and of the models' PyTorch twins.
//
// Feature taps: distillation reads intermediate features by module path. tap("layer3", fn) calls fn
// with layer3's output every time it runs; tap("layer3:preact", fn) with the named point "preact"
// that layer3 emits during its forward (a Sequential forwards named points to its last child, so a
// stage's pre-activation is its last block's). Taps are removed with clear_taps().
//
// Stages: a network names its stages (stages(): where the literature reads "feature k", mdistiller's
// feats[1:]), and a tap may name a stage instead of a module path: "stage2" is the second stage
// ("layer2" on a CIFAR ResNet, "block2" on a WRN or VGG, "blocks.2" on MobileNetV2), "stage-1" the last,
// "stage2:preact" its pre-activation, and in a list "stages" (or "stages:preact") every stage in order —
// so one config works for a teacher and a student of different families.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/state_dict.h"
#include "engine/tensor.h"

namespace retort {

using TapFn = std::function<void(const Tensor&)>;

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation. Call modules through operator(), which also delivers taps.
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x);

  const std::string& type_name() const { return type_name_; }

  // ---- train / eval ------------------------------------------------------------------------------
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- named state -------------------------------------------------------------------------------
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;  // recursive, dotted names
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, Module*>> named_modules() const;   // "" is this module
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  // Parameters then buffers of each module, in registration order (PyTorch's state_dict order).
  StateDict state_dict() const;
  // Names every parameter and buffer tensor (Tensor::name) prefix + its state_dict key, so that the
  // graph export (retort-inspect --graph) and autograd's errors say "layer1.0.conv1.weight", not
  // "leaf". create_model calls it; to(DType) and to(Device) keep the names.
  void name_tensors(const std::string& prefix = "");
  // Copies values into the registered tensors (in place, so optimizers keep their references).
  // strict: every key must match a tensor of the same shape, and every tensor must get a value;
  // otherwise a retort::Error lists the missing, unexpected and wrongly shaped keys. dtype is
  // converted. Non-strict loads what matches and returns the report.
  struct LoadReport {
    std::vector<std::string> missing, unexpected, mismatched;
    bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
    std::string str() const;
  };
  LoadReport load_state_dict(const StateDict& state, bool strict = true);

  // The submodule at a dotted path ("layer3.0.bn1"); "" is this module. Throws listing the
  // available children when the path does not exist.
  Module& find(const std::string& path);
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

  // Converts every parameter and buffer to dtype (F32/F64), keeping requires_grad.
  void to(DType dtype);
  // Moves every parameter and buffer to `device`, keeping requires_grad. Like to(DType), this replaces
  // the tensors: build optimizers after moving the model.
  void to(Device device);
  // The device of the first parameter (or buffer); CPU for a module without tensors.
  Device device() const;
  bool has_tensors() const;  // any parameter or buffer here or below
  void zero_grad();

  // ---- stages and taps ---------------------------------------------------------------------------
  // The network's stages in order, as module paths (mdistiller's feats[1:]: resnet layer1..layer3, wrn
  // block1..block3, vgg block1..block4, MobileNetV2 blocks.1/.2/.4/.6, ShuffleNet layer1..layer3,
  // ResNet50 layer1..layer4). Empty for a module that does not declare them.
  virtual std::vector<std::string> stages() const { return {}; }
  // `spec` with a stage alias replaced by the stage's path: "stage<k>" (k from 1) and "stage-<k>" (k-th
  // from the end), each with an optional ":point"; any other spec is returned as it is. An alias this
  // network cannot answer, or "stages" (which names several taps), is an error listing the stages.
  std::string resolve_tap(const std::string& spec) const;
  // Each spec resolved, "stages" / "stages:<point>" expanded to every stage in order (with the point).
  std::vector<std::string> resolve_taps(const std::vector<std::string>& specs) const;
  // Whether a list of specs holds "stages" / "stages:<point>" (its length then depends on the network).
  static bool expands_stages(const std::vector<std::string>& specs);
  // path: "module.path" (its output), "module.path:point" (a named point it emits) or a stage alias.
  // A point the module does not emit (points()) is refused, naming the ones it has.
  void tap(const std::string& path, TapFn fn);
  // The named points this module emits besides its output: a block's "preact", a network's "stem" and
  // "pooled" (declare_points); a Sequential's are its last child's.
  virtual std::vector<std::string> points() const { return points_; }
  void clear_taps();  // recursively
  // The batch norm whose output (plus a shortcut, where the block has one) makes the tapped point
  // `path` — the BN before the point's ReLU, whose affine parameters describe the point's distribution
  // (OFD's margins). Null where the module does not say (point_batch_norm's default).
  std::shared_ptr<Module> batch_norm_before(const std::string& path);
  // This module's answer for one of its named points ("preact"); blocks that emit one override it.
  virtual std::shared_ptr<Module> point_batch_norm(const std::string& point) { return nullptr; }
  // Whether this module (not its children) has taps or a substitute: a forward that fuses it away must
  // then call it through operator().
  bool has_taps() const { return !taps_.empty() || substitute_.defined(); }

  // ---- substitution ------------------------------------------------------------------------------
  // Makes the module at `path` skip its forward and return `t` instead (its output taps see `t`), so
  // that running the whole network runs the rest of it from that point on a changed feature: SoKD's
  // refined teacher logits. `t`'s batch size must be the input's. Removed with clear_substitutes().
  void substitute(const std::string& path, Tensor t);
  void clear_substitutes();  // recursively

  // A readable tree: "ResNet(\n  (conv1): Conv2d(3, 16, kernel_size=3, ...)\n ...)".
  std::string str() const;
  virtual std::string extra_repr() const { return ""; }

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  // Inside forward: delivers `t` to the taps listening on the named point (declared with declare_points).
  void emit(const std::string& point, const Tensor& t);
  void declare_points(std::vector<std::string> points) { points_ = std::move(points); }
  // Whether a tap listens on the named point (a forward may then skip a fusion that would hide it).
  bool has_point_tap(const std::string& point) const { return taps_.count(point) > 0; }
  // Attaches a tap on a named point; Sequential overrides it to forward to its last child.
  virtual void add_point_tap(const std::string& point, TapFn fn);

  Tensor& param(const std::string& name);   // registered parameter by local name
  Tensor& buffer(const std::string& name);  // registered buffer by local name

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, bool params, bool buffers,
               std::vector<std::pair<std::string, Tensor>>& out) const;
  void str_into(std::string& out, int indent) const;

  std::string type_name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::multimap<std::string, TapFn> taps_;  // point ("output" or a name) -> listeners
  Tensor substitute_;                       // returned in place of forward() when defined
  std::vector<std::string> points_;         // the named points emit() delivers (points())
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace retort
