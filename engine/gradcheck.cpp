// gradcheck facility and the registry of cases (see gradcheck.h).
#include "engine/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "engine/autograd.h"

namespace retort {

namespace {

double projected(const Tensor& out, const std::vector<double>& r) {
  const double* p = out.data<double>();
  double acc = 0;
  for (size_t i = 0; i < r.size(); ++i) acc += p[i] * r[i];
  return acc;
}

std::vector<int64_t> pick_elements(int64_t n, int64_t max_n, Generator& gen) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  if (n <= max_n) return idx;
  for (int64_t i = 0; i < max_n; ++i) std::swap(idx[i], idx[i + static_cast<int64_t>(gen.randint(n - i))]);
  idx.resize(static_cast<size_t>(max_n));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& fn_on_inputs, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& o) {
  RETORT_CHECK(o.eps > 0 && std::isfinite(o.eps), "gradcheck: eps ", o.eps, " must be a positive finite step");
  RETORT_CHECK(o.atol >= 0 && o.rtol >= 0, "gradcheck: atol ", o.atol, " and rtol ", o.rtol, " must be >= 0");
  RETORT_CHECK(o.max_elements_per_input >= 1, "gradcheck: max_elements_per_input ", o.max_elements_per_input,
               " must be at least 1");
  GradcheckResult res;
  GradcheckFn fn = fn_on_inputs;
  if (!o.device.is_cpu()) {
    fn = [&fn_on_inputs, dev = o.device](const std::vector<Tensor>& in) {
      std::vector<Tensor> moved;
      moved.reserve(in.size());
      for (const Tensor& t : in) moved.push_back(t.defined() ? t.to(dev) : t);
      return fn_on_inputs(moved).to(Device::cpu());
    };
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    RETORT_CHECK(t.dtype() == DType::F64 && t.device().is_cpu(), "gradcheck: input ", i, " is ", t.meta_str(),
                 "; checked inputs must be float64 CPU tensors (GradcheckOptions::device says where the function runs)");
    RETORT_CHECK(t.is_leaf(), "gradcheck: input ", i, " (", t.meta_str(), ") is not a leaf: it was computed from other ",
                 "tensors (", t.impl().grad_fn ? t.impl().grad_fn->name() : "?", "); pass a leaf, e.g. (x * 2).detach()"
                 ".set_requires_grad(), and compute inside the function");
  }
  // The inputs' own gradients are put back afterwards: checking a function does not touch them.
  std::vector<std::shared_ptr<TensorImpl>> kept_grads;
  for (const Tensor& t : inputs) {
    kept_grads.push_back(t.defined() ? t.impl().grad : nullptr);
    if (t.defined()) t.impl().grad.reset();
  }
  struct PutBack {
    const std::vector<Tensor>& in;
    std::vector<std::shared_ptr<TensorImpl>>& grads;
    ~PutBack() {  // in reverse: a tensor passed twice saved its own gradient at its first place
      for (size_t i = in.size(); i-- > 0;)
        if (in[i].defined()) in[i].impl().grad = grads[i];
    }
  } put_back{inputs, kept_grads};

  Tensor out = fn(inputs);
  RETORT_CHECK(out.dtype() == DType::F64, "gradcheck: function output is ", out.meta_str(), ", expected f64");
  Generator gen(o.seed);
  std::vector<double> r(static_cast<size_t>(out.numel()));
  for (double& v : r) v = gen.normal();
  Tensor r_t = Tensor::from_vector(r, out.shape(), DType::F64);
  if (out.requires_grad()) out.backward(r_t);

  // Each element's |diff| over its tolerance: passed when every ratio is at most 1. A NaN or infinite
  // analytic or numeric value fails (ratio +inf), as in PyTorch. The worst element is the largest ratio.
  double worst_ratio = -1, worst_err = -1;
  bool all_within = true;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    const Tensor g = x.grad();
    double* xp = const_cast<Tensor&>(x).data<double>();
    for (int64_t k : pick_elements(x.numel(), o.max_elements_per_input, gen)) {
      const double orig = xp[k];
      double lp, lm;
      {
        NoGradGuard ng;
        xp[k] = orig + o.eps;
        lp = projected(fn(inputs), r);
        xp[k] = orig - o.eps;
        lm = projected(fn(inputs), r);
        xp[k] = orig;
      }
      const double numeric = (lp - lm) / (2 * o.eps);
      const double analytic = g.defined() ? g.data<double>()[k] : 0.0;
      const double err = std::abs(analytic - numeric);
      const double tol = o.atol + o.rtol * std::abs(numeric);
      const bool finite = std::isfinite(analytic) && std::isfinite(numeric);
      const double ratio = !finite ? HUGE_VAL : tol > 0 ? err / tol : err > 0 ? HUGE_VAL : 0.0;
      ++res.checked;
      if (!(err <= res.max_abs_error)) res.max_abs_error = err;  // (a NaN sticks)
      if (!finite || err > tol) all_within = false;
      if (ratio > worst_ratio || (ratio == worst_ratio && err > worst_err)) {  // (ties: tolerance 0, non-finite)
        worst_ratio = ratio;
        worst_err = err;
        char buf[320];
        std::snprintf(buf, sizeof buf,
                      "input %zu %s element %lld: analytic %.10g, numeric %.10g, |diff| %.3g against its tolerance "
                      "%.3g (atol + rtol*|numeric|)%s%s",
                      i, shape_str(x.shape()).c_str(), static_cast<long long>(k), analytic, numeric, err, tol,
                      g.defined() ? "" : " (no gradient was produced)",
                      finite ? "" : " (not finite: a NaN or infinite value fails)");
        res.detail = buf;
      }
    }
  }
  RETORT_CHECK(res.checked > 0, "gradcheck: no input requires grad, nothing was checked");
  res.passed = all_within;
  return res;
}

GradcheckResult run_gradcheck(const GradcheckCase& c, Device device) {
  Generator gen(c.options.seed);
  std::vector<Tensor> inputs = c.make_inputs(gen);
  GradcheckOptions o = c.options;
  o.device = device;
  return gradcheck(c.fn, inputs, o);
}

namespace {
struct Registry {
  std::vector<GradcheckCase> cases;
  std::vector<std::string> functions;
  std::vector<GradcheckFamily> families;
};

Registry& registry() {
  static Registry r = [] {
    Registry reg;
    for (GradcheckFamily f : {add_elementwise_checks, add_reduce_checks, add_shape_checks, add_linalg_checks,
                              add_conv_checks, add_norm_checks, add_pool_checks, add_sample_checks, add_loss_checks}) {
      f(reg.cases);
      reg.families.push_back(f);
    }
    reg.functions = {
        "add", "add_relu", "sub", "mul", "div", "maximum", "minimum", "xlogy", "affine", "neg", "exp", "log", "sqrt", "pow",
        "abs", "clamp", "relu", "leaky_relu", "sigmoid", "tanh", "to_dtype", "clone",
        "sum", "mean", "max", "min", "var", "stddev",
        "reshape", "flatten", "unsqueeze", "squeeze", "permute", "transpose", "slice", "cat", "pad", "expand",
        "matmul", "linear", "eigh",
        "conv2d", "batch_norm", "batch_norm_relu",
        "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "interpolate_nearest",
        "affine_grid", "grid_sample",
        "softmax", "log_softmax", "cross_entropy", "kl_div", "mse_loss", "smooth_l1_loss", "dropout"};
    return reg;
  }();
  return r;
}
}  // namespace

void add_gradcheck_family(GradcheckFamily add, const std::vector<std::string>& functions) {
  Registry& r = registry();
  if (std::find(r.families.begin(), r.families.end(), add) != r.families.end()) return;
  // Checked before anything is added: names stay unique (find_gradcheck and the CLI select by name) and
  // every case covers a function the registry knows.
  std::vector<GradcheckCase> added;
  add(added);
  auto known = [&](const std::string& f) {
    return std::find(r.functions.begin(), r.functions.end(), f) != r.functions.end() ||
           std::find(functions.begin(), functions.end(), f) != functions.end();
  };
  for (size_t i = 0; i < added.size(); ++i) {
    const GradcheckCase& c = added[i];
    RETORT_CHECK(!c.name.empty() && c.fn && c.make_inputs, "add_gradcheck_family: case ", i, " ('", c.name,
                 "') needs a name, a function and make_inputs");
    RETORT_CHECK(!find_gradcheck(c.name), "add_gradcheck_family: a check named '", c.name, "' is already registered");
    for (size_t j = 0; j < i; ++j)
      RETORT_CHECK(added[j].name != c.name, "add_gradcheck_family: the family names '", c.name, "' twice");
    RETORT_CHECK(known(c.function), "add_gradcheck_family: check '", c.name, "' covers '", c.function,
                 "', which is neither a registered function nor in this family's list");
  }
  r.families.push_back(add);
  r.cases.insert(r.cases.end(), added.begin(), added.end());
  r.functions.insert(r.functions.end(), functions.begin(), functions.end());
}

const std::vector<GradcheckCase>& all_gradchecks() { return registry().cases; }

const GradcheckCase* find_gradcheck(const std::string& name) {
  for (const auto& c : all_gradchecks())
    if (c.name == name) return &c;
  return nullptr;
}

const std::vector<std::string>& differentiable_functions() { return registry().functions; }

// ---- input helpers ---------------------------------------------------------------------------------

Tensor gc_randn(const Shape& shape, Generator& gen, double std) {
  return Tensor::randn(shape, gen, DType::F64, 0.0, std).set_requires_grad();
}

Tensor gc_uniform(const Shape& shape, Generator& gen, double lo, double hi) {
  return Tensor::rand(shape, gen, DType::F64, lo, hi).set_requires_grad();
}

Tensor gc_separated(const Shape& shape, Generator& gen, double gap) {
  const int64_t n = shape_numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = (static_cast<double>(i) - static_cast<double>(n) / 2.0 + 0.5) * gap;
  for (int64_t i = n - 1; i > 0; --i) std::swap(v[i], v[static_cast<size_t>(gen.randint(i + 1))]);
  for (double& x : v)
    if (std::abs(x) < gap / 2) x += gap / 2;  // keep away from 0
  return Tensor::from_vector(v, shape, DType::F64).set_requires_grad();
}

}  // namespace retort
