// The autograd engine: recording nodes, walking them backward, exporting the graph (see autograd.h).
#include "engine/autograd.h"

#include <atomic>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "engine/backend.h"
#include "engine/functions/elementwise.h"

namespace retort {

namespace {
std::atomic<uint64_t> g_next_seq{0};
thread_local bool t_grad_enabled = true;
}  // namespace

Node::Node(std::string name) : name_(std::move(name)), seq_(g_next_seq.fetch_add(1)) {}

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

// ---- AccumulateGrad ----------------------------------------------------------------------------------

AccumulateGrad::AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : Node("AccumulateGrad"), leaf_(std::move(leaf)) {}

std::vector<Tensor> AccumulateGrad::apply(const Tensor& g) {
  Tensor leaf(leaf_);
  Tensor old = leaf.grad();
  // A fresh tensor either way: the incoming gradient may alias a tensor the caller still owns.
  leaf.set_grad(old.defined() ? add(old, g) : g.clone());
  return {};
}

std::vector<Tensor> FunctionNode::apply(const Tensor& grad_output) {
  RETORT_CHECK(fn_ != nullptr, "backward through ", name(),
               " a second time: its saved tensors were freed after the first backward "
               "(pass retain_graph=true to the first backward to keep them)");
  return fn_(grad_output, *this);
}

// ---- recording ---------------------------------------------------------------------------------------

bool should_record(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool should_record(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
// The node a gradient for `t` flows into: its grad_fn, or the leaf's (shared) AccumulateGrad.
std::shared_ptr<Node> gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  if (t.grad_fn()) return t.grad_fn();
  TensorImpl& impl = t.impl();
  if (auto acc = impl.grad_accumulator.lock()) return acc;
  auto acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
  impl.grad_accumulator = acc;
  return acc;
}
}  // namespace

Tensor saved(const Tensor& t) {
  if (!t.defined()) return Tensor();
  Tensor alias = t.detach();
  alias.impl().saved_version = t.version();
  alias.impl().saved_shape = t.shape();
  return alias;
}

namespace {
thread_local const char* t_backward_node = "";
}  // namespace

const char* running_backward_node() { return t_backward_node; }

Tensor record(Tensor out, const char* name, const std::vector<Tensor>& inputs, BackwardFn backward) {
  if (!should_record(inputs)) return out;
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->next.reserve(inputs.size());
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    node->next.push_back(gradient_edge(t));
    node->inputs.push_back(t.defined() ? InputMeta{t.shape(), t.dtype(), t.device()} : InputMeta{});
  }
  out.impl().requires_grad = true;
  out.impl().grad_fn = std::move(node);
  return out;
}

// ---- backward ----------------------------------------------------------------------------------------

namespace {
struct BySeq {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr() < b->sequence_nr(); }
};

// Number of edges entering each node reachable from root (iterative: deep nets must not recurse).
std::unordered_map<Node*, int> count_dependencies(Node* root) {
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{root};
  std::unordered_set<Node*> seen{root};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& nx : n->next) {
      if (!nx) continue;
      ++deps[nx.get()];
      if (seen.insert(nx.get()).second) stack.push_back(nx.get());
    }
  }
  return deps;
}

void check_gradient(const Node& node, size_t i, const Tensor& g) {
  const InputMeta& m = node.inputs[i];
  RETORT_CHECK(g.shape() == m.shape && g.dtype() == m.dtype && g.device() == m.device, node.name(),
               " produced a gradient ", g.meta_str(), " for input ", i, " which is ", dtype_name(m.dtype),
               shape_str(m.shape), " ", m.device.str());
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_in, bool retain_graph) {
  RETORT_CHECK(root.requires_grad(), "backward: tensor ", root.meta_str(),
               " does not require grad and has no grad_fn (did any input require grad? was NoGradGuard active?)");
  Tensor grad = grad_in;
  if (!grad.defined()) {
    RETORT_CHECK(root.numel() == 1, "backward: an implicit gradient only exists for one-element outputs; "
                 "this output is ", root.meta_str(), ", pass a gradient of that shape");
    grad = Tensor::ones_like(root);
  }
  RETORT_CHECK(grad.shape() == root.shape() && grad.dtype() == root.dtype() && grad.device() == root.device(),
               "backward: gradient ", grad.meta_str(), " does not match output ", root.meta_str());

  NoGradGuard no_grad;
  std::shared_ptr<Node> root_node = gradient_edge(root);
  auto deps = count_dependencies(root_node.get());
  std::unordered_map<Node*, Tensor> pending{{root_node.get(), grad}};
  std::priority_queue<Node*, std::vector<Node*>, BySeq> ready;
  ready.push(root_node.get());

  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    Tensor g = std::move(pending[node]);
    pending.erase(node);
    std::vector<Tensor> grads;
    {
      struct Running {  // names the node for errors raised inside its backward (saved tensors updated in place)
        const char* prev = t_backward_node;
        explicit Running(const Node& n) { t_backward_node = n.name().c_str(); }
        ~Running() { t_backward_node = prev; }
      } running(*node);
      grads = node->apply(g);
    }
    if (!retain_graph) node->release();
    RETORT_CHECK(grads.empty() || grads.size() == node->next.size(), node->name(), " returned ", grads.size(),
                 " gradients for ", node->next.size(), " inputs");
    for (size_t i = 0; i < node->next.size(); ++i) {
      Node* nx = node->next[i].get();
      if (!nx) continue;
      if (i < grads.size() && grads[i].defined()) {
        check_gradient(*node, i, grads[i]);
        auto it = pending.find(nx);
        if (it == pending.end()) pending.emplace(nx, std::move(grads[i]));
        else it->second = add(it->second, grads[i]);
      }
      if (--deps[nx] == 0) {
        if (pending.count(nx)) ready.push(nx);
        else {  // nothing flowed in (all contributions undefined): skip it but release its inputs
          std::vector<Node*> skip{nx};
          while (!skip.empty()) {
            Node* s = skip.back();
            skip.pop_back();
            if (!retain_graph) s->release();
            for (const auto& sn : s->next)
              if (sn && --deps[sn.get()] == 0) {
                if (pending.count(sn.get())) ready.push(sn.get());
                else skip.push_back(sn.get());
              }
          }
        }
      }
    }
  }
}

// ---- graph export ------------------------------------------------------------------------------------

namespace {
std::vector<Node*> backward_order(Node* root) {
  auto deps = count_dependencies(root);
  std::vector<Node*> order;
  std::priority_queue<Node*, std::vector<Node*>, BySeq> ready;
  ready.push(root);
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    order.push_back(n);
    for (const auto& nx : n->next)
      if (nx && --deps[nx.get()] == 0) ready.push(nx.get());
  }
  return order;
}

// " cuda:0" for a tensor off the host (a CPU graph's labels stay as they were).
std::string device_suffix(const Device& d) { return d.is_cpu() ? std::string() : " " + d.str(); }

std::string node_label(const Node* n) {
  if (auto acc = dynamic_cast<const AccumulateGrad*>(n)) {
    const TensorImpl& leaf = *acc->leaf();
    std::string name = leaf.name.empty() ? std::string("leaf") : leaf.name;
    return detail::cat(name, "\\n", dtype_name(leaf.dtype), shape_str(leaf.shape), leaf.storage ? device_suffix(leaf.storage->device) : std::string());
  }
  return n->name();
}
}  // namespace

std::vector<std::string> graph_node_names(const Tensor& root) {
  std::vector<std::string> names;
  if (!root.defined() || !root.requires_grad()) return names;
  std::shared_ptr<Node> r = gradient_edge(root);
  for (Node* n : backward_order(r.get())) names.push_back(n->name());
  return names;
}

std::string graph_to_dot(const Tensor& root) {
  std::ostringstream os;
  os << "digraph retort {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n";
  if (root.defined() && root.requires_grad()) {
    std::shared_ptr<Node> r = gradient_edge(root);
    std::unordered_map<const Node*, int> id;
    const auto order = backward_order(r.get());
    for (Node* n : order) id.emplace(n, static_cast<int>(id.size()));
    for (Node* n : order) {
      const bool leaf = dynamic_cast<AccumulateGrad*>(n) != nullptr;
      os << "  n" << id[n] << " [label=\"" << node_label(n) << "\"" << (leaf ? ", style=filled, fillcolor=lightblue" : "")
         << "];\n";
    }
    os << "  out [label=\"output\\n" << dtype_name(root.dtype()) << shape_str(root.shape())
       << device_suffix(root.device()) << "\", shape=ellipse];\n  n" << id[r.get()] << " -> out;\n";
    for (Node* n : order)
      for (const auto& nx : n->next)
        if (nx) os << "  n" << id[nx.get()] << " -> n" << id[n] << ";\n";
  }
  os << "}\n";
  return os.str();
}

}  // namespace retort
