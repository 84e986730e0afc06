// gradcheck: the analytic backward of a function against central finite differences, in float64.
//
// The output is reduced by a random projection, L = sum(f(x) * r) with r ~ N(0, 1) from a fixed seed
// (a plain sum would hide errors that cancel, e.g. a broadcast gradient summed the wrong way). For each
// checked element x_i: numeric = (L(x_i + eps) - L(x_i - eps)) / (2 eps), and it must match the
// analytic dL/dx_i within atol + rtol * |numeric| (PyTorch's gradcheck defaults); a NaN or infinite
// analytic or numeric value fails. Inputs with requires_grad set are checked (float64 CPU leaves); large
// inputs are sampled (max_elements_per_input). The inputs' own .grad is restored afterwards.
//
// Every differentiable function registers at least one named case (engine/functions/*_checks.cpp);
// `retort-gradcheck --list` lists them and the test suite runs each as its own test.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace retort {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  int64_t max_elements_per_input = 300;  // sampled uniformly beyond this many elements
  uint64_t seed = 1234;                  // projection and sampling seed
  // Where the function runs. Inputs stay float64 CPU leaves (the finite differences perturb them);
  // on another device each evaluation copies them there (differentiably) and the output back, so both
  // the forward kernels and, through backward, the gradient kernels of that device are checked.
  Device device = Device::cpu();
};

struct GradcheckResult {
  bool passed = false;
  int64_t checked = 0;        // elements compared
  double max_abs_error = 0;   // largest |analytic - numeric|
  std::string detail;         // the element with the largest |diff| / tolerance (the furthest over it, or
                              // the nearest to it when all pass), readable; not always the one of
                              // max_abs_error, whose tolerance may be larger
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

struct GradcheckCase {
  std::string name;      // unique, "<function>.<variant>", e.g. "conv2d.depthwise"
  std::string function;  // the public function this covers, e.g. "conv2d"
  // Builds fresh float64 inputs; the ones to check have requires_grad set. Choose values away from
  // kinks (relu at 0, ties in max) so finite differences are meaningful.
  std::function<std::vector<Tensor>(Generator&)> make_inputs;
  GradcheckFn fn;
  GradcheckOptions options = {};
};

GradcheckResult run_gradcheck(const GradcheckCase& c, Device device = Device::cpu());
// Every registered case, in registration order: the engine's families, then any family registered
// with add_gradcheck_family() (the distillation nodes live above the engine and register themselves
// this way from the binaries and tests that link them).
const std::vector<GradcheckCase>& all_gradchecks();
const GradcheckCase* find_gradcheck(const std::string& name);
// The differentiable public functions; each must be covered by at least one case.
const std::vector<std::string>& differentiable_functions();
// Registers a family of cases and the differentiable functions it covers. Idempotent per `add`. A case
// named like one already registered (or twice in the family), or covering a function neither registered
// nor in `functions`, is refused with an Error and nothing of the family is added.
using GradcheckFamily = void (*)(std::vector<GradcheckCase>&);
void add_gradcheck_family(GradcheckFamily add, const std::vector<std::string>& functions);

// Registration, one function per family (called once by all_gradchecks()).
void add_elementwise_checks(std::vector<GradcheckCase>& out);
void add_reduce_checks(std::vector<GradcheckCase>& out);
void add_shape_checks(std::vector<GradcheckCase>& out);
void add_linalg_checks(std::vector<GradcheckCase>& out);
void add_conv_checks(std::vector<GradcheckCase>& out);
void add_norm_checks(std::vector<GradcheckCase>& out);
void add_pool_checks(std::vector<GradcheckCase>& out);
void add_sample_checks(std::vector<GradcheckCase>& out);
void add_loss_checks(std::vector<GradcheckCase>& out);

// Helpers for writing cases: float64 leaves that require grad.
Tensor gc_randn(const Shape& shape, Generator& gen, double std = 1.0);
Tensor gc_uniform(const Shape& shape, Generator& gen, double lo, double hi);
// Values at least `gap` apart from each other and from zero (a shuffled, signed grid): no ties and
// no kinks for relu/abs/max/max-pool.
Tensor gc_separated(const Shape& shape, Generator& gen, double gap = 0.05);

}  // namespace retort
