// Optimizer: the base of SGD, Adam and AdamW — parameter groups, step/zero_grad, learning rates, and
// the state a checkpoint needs to resume bit for bit.
//
// Parameters are numbered 0, 1, 2, ... across all groups in order (PyTorch's numbering in
// optimizer.state_dict()), and each parameter's state is allocated when the optimizer is built
// (zeros of the parameter's shape and dtype), so state_dict() always has the same keys:
//
//   state.<i>.step              I64 0-D: updates applied to parameter i (parameters whose grad was
//                               undefined at a step are not counted — they were not updated)
//   state.<i>.momentum_buffer   SGD with momentum != 0         (meaningless while step == 0)
//   state.<i>.exp_avg           Adam/AdamW first moment
//   state.<i>.exp_avg_sq        Adam/AdamW second moment
//
// hyperparams() is the rest of a checkpoint's optimizer record: the type, the construction options,
// and each group's lr / weight_decay / parameter count. Build the optimizer after the model has its
// final dtype (Module::to replaces parameter tensors, so an optimizer built before would hold stale
// handles).
//
// Steps run as one fused backend kernel per parameter (Backend::sgd_step / adam_step), on the device
// the parameter lives on.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>  // callers of hyperparams() include <nlohmann/json.hpp>

#include "engine/state_dict.h"
#include "engine/tensor.h"

namespace retort {

struct ParamGroup {
  std::vector<Tensor> params;
  double lr = std::numeric_limits<double>::quiet_NaN();  // NaN = not set: the optimizer refuses it
  double weight_decay = 0.0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const std::string& type() const { return type_; }  // "sgd", "adam", "adamw"

  // Updates every parameter whose grad is defined (under NoGradGuard). Gradients are checked first
  // (dtype, shape, device), so a failing step changes nothing.
  void step();
  // Drops every parameter's grad (PyTorch's set_to_none=True).
  void zero_grad();

  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  size_t num_params() const { return state_.size(); }
  double lr(size_t group = 0) const;
  void set_lr(double lr);                // every group
  void set_lr(size_t group, double lr);  // one group

  // A snapshot (copies) of the per-parameter state, keyed as described at the top of this file.
  StateDict state_dict() const;
  // Restores state saved by state_dict() of an optimizer of the same type and parameter shapes.
  // Validates everything first (missing, unexpected and wrongly shaped keys are all listed in one
  // retort::Error) and changes nothing when it throws. Values are converted to the parameter dtype.
  void load_state_dict(const StateDict& state);

  // {"type": "sgd", "momentum": 0.9, ..., "param_groups": [{"lr": .., "weight_decay": .., "num_params": ..}]}
  nlohmann::ordered_json hyperparams() const;
  // Restores each group's lr and weight_decay from hyperparams(). The type, the options and the group
  // sizes must equal this optimizer's (they are fixed at construction); a difference is an error.
  void load_hyperparams(const nlohmann::ordered_json& h);

 protected:
  // `buffers`: the names of each parameter's state tensors (besides step), allocated as zeros.
  Optimizer(std::string type, std::vector<ParamGroup> groups, std::vector<std::string> buffers);

  // One parameter's fused update. `buffers` follow the constructor's names; `step` counts this
  // update (1 on the first). param, grad and buffers are contiguous, on one device, of one float dtype.
  virtual void update(const ParamGroup& group, Tensor& param, const Tensor& grad, std::vector<Tensor>& buffers,
                      int64_t step) = 0;
  // The construction options as JSON ({"momentum": 0.9, ...}), written into hyperparams().
  virtual nlohmann::ordered_json options() const = 0;

  std::string where() const;  // "SGD" etc., for error messages

 private:
  struct ParamState {
    int64_t step = 0;
    std::vector<Tensor> buffers;
  };
  std::string type_;
  std::vector<ParamGroup> groups_;
  std::vector<std::string> buffer_names_;
  std::vector<ParamState> state_;  // one per parameter, numbered across groups
};

// Builds a one-group optimizer from a JSON object, strictly (unknown keys are errors):
//   {"type": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4, "nesterov": false}
//   {"type": "adam" | "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0}
// Defaults are PyTorch's (AdamW's weight_decay defaults to 0.01); lr is required.
std::unique_ptr<Optimizer> make_optimizer(const nlohmann::ordered_json& cfg, std::vector<Tensor> params);

}  // namespace retort
