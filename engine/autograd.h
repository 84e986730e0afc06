// Define-by-run autograd.
//
// Each differentiable function computes its output with backend kernels and, when grad mode is on and
// some input requires grad, records a Node: a name ("Conv2dBackward"), one edge per input (null where
// that input needs no gradient), the inputs' shapes (every produced gradient is checked against them),
// and a hand-written backward. backward() walks the nodes in reverse creation order (a max-heap on the
// sequence number, which is a valid reverse topological order and makes the walk deterministic),
// summing gradients that meet at a node, and accumulates into leaves through AccumulateGrad nodes.
// Backward functions run with grad mode off: they are plain tensor code, not recorded.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace retort {

struct InputMeta {
  Shape shape;
  DType dtype;
  Device device;
};

class Node {
 public:
  explicit Node(std::string name);
  virtual ~Node() = default;

  const std::string& name() const { return name_; }
  uint64_t sequence_nr() const { return seq_; }
  // Gradient of each input given the gradient of the output. An entry may be undefined when that
  // input needs no gradient (check needs_grad(i) to skip the work).
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  // Frees saved tensors once the graph will not be walked again (backward without retain_graph).
  virtual void release() {}
  virtual bool released() const { return false; }

  bool needs_grad(size_t i) const { return i < next.size() && next[i] != nullptr; }

  std::vector<std::shared_ptr<Node>> next;  // one per input
  std::vector<InputMeta> inputs;            // one per input

 private:
  std::string name_;
  uint64_t seq_;
};

// Leaf sink: adds the incoming gradient to the leaf's .grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf);
  std::vector<Tensor> apply(const Tensor& grad_output) override;
  const std::shared_ptr<TensorImpl>& leaf() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// Backward given as a function; saved tensors live in its captures (save them with saved()).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output, const Node& node)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : Node(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(const Tensor& grad_output) override;
  void release() override { fn_ = nullptr; }
  bool released() const override { return !fn_; }

 private:
  BackwardFn fn_;
};

// ---- grad mode -------------------------------------------------------------------------------------
bool grad_enabled();
void set_grad_enabled(bool on);

// RAII: no graph is recorded while it lives (teacher forward, evaluation, optimizer steps).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// ---- recording (used by functions) -----------------------------------------------------------------
// True when grad mode is on and any input requires grad.
bool should_record(std::initializer_list<const Tensor*> inputs);
bool should_record(const std::vector<Tensor>& inputs);
// Attaches a FunctionNode named `name` to `out` when should_record(inputs); returns `out`.
// Undefined tensors in `inputs` are allowed (optional arguments such as a missing bias).
Tensor record(Tensor out, const char* name, const std::vector<Tensor>& inputs, BackwardFn backward);
// What a backward captures: a detached alias (shares data, drops history, so no reference cycles)
// that remembers its storage's version: reading its data after an in-place update of the storage
// (an optimizer step or load_state_dict between the forward and backward(), say) throws, naming the
// tensor and the backward reading it, instead of computing a gradient from the changed values.
Tensor saved(const Tensor& t);
// The name of the node whose backward is running on this thread ("" outside backward()).
const char* running_backward_node();

// ---- running backward ------------------------------------------------------------------------------
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

// The graph that produced `root` as Graphviz DOT: one box per node, leaves labelled with their name
// and shape. `dot -Tsvg graph.dot > graph.svg` draws it.
std::string graph_to_dot(const Tensor& root);
// The node names reachable from `root`, in the order backward would run them.
std::vector<std::string> graph_node_names(const Tensor& root);

}  // namespace retort
