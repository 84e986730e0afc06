// CPU-vs-CUDA parity: every kernel of engine/backend.h, reached through the public differentiable
// functions (and, for GEMM and the optimizer steps, through the Backend interface directly), runs on
// the CPU and on cuda:0 with the same inputs; outputs, every input gradient and every input left
// behind (running statistics are updated in place) must agree within a per-op tolerance. Then the
// infrastructure: bitwise device round trips, a warm training step that makes no cudaMalloc, clear
// errors for out-of-memory and bad device indices, deterministic mode and TF32.
//
// Tolerances (|cuda - cpu| <= atol * max(1, max|cpu|) + rtol * |cpu|, per element; I64 exact):
//   exact        copies, casts, fills, max/min selection, comparisons       0
//   elementwise  unary/binary ops, optimizer steps    F32 1e-5 / 1e-6     F64 1e-10 / 1e-12
//   reduction    sums, softmax, losses, BN, pooling   F32 1e-4 / 1e-5     F64 1e-9  / 1e-11
//   gemm         matmul, linear, conv                 F32 1e-3 / 1e-4     F64 1e-9  / 1e-10
// The CUDA side runs with TF32 off (IEEE single precision, the default), except in the TF32 test.
//
// Every test skips on machines without a GPU (or builds without the CUDA backend).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <sstream>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "distill/connectors.h"
#include "distill/nodes/contrast.h"
#include "distill/nodes/feature.h"
#include "distill/nodes/kdsvd.h"
#include "distill/nodes/logit.h"
#include "distill/nodes/relation.h"
#include "distill/nodes/sokd.h"
#include "distill/nodes/stage.h"
#include "models/registry.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/functions.h"
#include "engine/optim/optim.h"
#include "tests/common/expect.h"
#include "tests/common/golden.h"

#ifdef RETORT_WITH_CUDA
#include "engine/cuda/context.h"
#endif

using namespace retort;
using retort::testing::expect_error;

namespace {

bool have_gpu() { return cuda_built() && cuda_device_count() > 0; }

// Parity is measured against IEEE single precision: TF32 off, whatever the environment asked for.
void prepare_gpu() {
#ifdef RETORT_WITH_CUDA
  cuda::set_allow_tf32(false);
#endif
}

#define REQUIRE_GPU()                                                                          \
  do {                                                                                         \
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device (cuda_built() = " << cuda_built() << ")"; \
    prepare_gpu();                                                                             \
  } while (0)

const Device kCuda = Device::cuda(0);
const std::vector<DType> kFloatTypes = {DType::F32, DType::F64};

// ---- tolerances -------------------------------------------------------------------------------------

struct Tol {
  double rtol = 0, atol = 0;
};
enum class Kind { Exact, Elementwise, Reduction, Gemm };

Tol tol(Kind k, DType dt) {
  const bool f64 = dt == DType::F64;
  switch (k) {
    case Kind::Exact: return {0, 0};
    case Kind::Elementwise: return f64 ? Tol{1e-10, 1e-12} : Tol{1e-5, 1e-6};
    case Kind::Reduction: return f64 ? Tol{1e-9, 1e-11} : Tol{1e-4, 1e-5};
    case Kind::Gemm: return f64 ? Tol{1e-9, 1e-10} : Tol{1e-3, 1e-4};
  }
  return {};
}

std::string index_str(const Shape& shape, int64_t flat) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] > 0 ? flat % shape[d] : 0;
    flat = shape[d] > 0 ? flat / shape[d] : 0;
  }
  std::ostringstream os;
  os << "[";
  for (size_t d = 0; d < idx.size(); ++d) os << (d ? ", " : "") << idx[d];
  os << "]";
  return os.str();
}

// Compares a CPU reference with its CUDA counterpart; on failure names the op, the tensor, how many
// elements differ, and the worst one (index, both values, difference, allowance).
::testing::AssertionResult tensors_close(const std::string& op, const std::string& what, const Tensor& ref,
                                         const Tensor& got, Kind kind) {
  if (!ref.defined() && !got.defined()) return ::testing::AssertionSuccess();
  if (ref.defined() != got.defined())
    return ::testing::AssertionFailure() << op << ": " << what << " is " << (ref.defined() ? "defined" : "undefined")
                                         << " on the CPU but " << (got.defined() ? "defined" : "undefined")
                                         << " on CUDA";
  if (ref.shape() != got.shape() || ref.dtype() != got.dtype())
    return ::testing::AssertionFailure() << op << ": " << what << " is " << ref.meta_str() << " on the CPU but "
                                         << got.meta_str() << " on CUDA";
  const Tol t = ref.dtype() == DType::I64 ? Tol{} : tol(kind, ref.dtype());
  const std::vector<double> a = ref.to_vector(), b = got.to_vector();
  double scale = 1.0;
  for (double v : a)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  const double inf = std::numeric_limits<double>::infinity();
  int64_t bad = 0, worst = -1;
  double worst_ratio = 0, worst_err = 0, worst_allowed = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double err;
    if (std::isnan(a[i]) || std::isnan(b[i])) err = std::isnan(a[i]) && std::isnan(b[i]) ? 0.0 : inf;
    else if (a[i] == b[i]) err = 0.0;  // also equal infinities
    else err = std::abs(a[i] - b[i]);
    const double allowed = t.atol * scale + t.rtol * std::abs(a[i]);
    if (err > allowed) {
      ++bad;
      const double ratio = allowed > 0 ? err / allowed : inf;
      if (worst < 0 || ratio > worst_ratio) {
        worst = static_cast<int64_t>(i);
        worst_ratio = ratio;
        worst_err = err;
        worst_allowed = allowed;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(17);
  os << op << ": " << what << " " << ref.meta_str() << ": " << bad << " of " << a.size()
     << " elements differ beyond rtol " << t.rtol << " + atol " << t.atol << " x scale " << scale
     << "; worst at index " << index_str(ref.shape(), worst) << " (flat " << worst << "): CPU " << a[worst]
     << ", CUDA " << b[worst] << ", |diff| " << worst_err << " > allowed " << worst_allowed;
  return ::testing::AssertionFailure() << os.str();
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  return ha.dtype() == hb.dtype() && ha.shape() == hb.shape() &&
         (ha.nbytes() == 0 || std::memcmp(ha.raw_data(), hb.raw_data(), ha.nbytes()) == 0);
}

// ---- the parity harness -----------------------------------------------------------------------------

using Ts = std::vector<Tensor>;
using Fn = std::function<Tensor(const Ts&)>;

// One input of a case: a CPU tensor (possibly undefined: an optional argument), whether it requires
// grad (ignored for I64), and a name for messages.
struct In {
  Tensor t;
  bool grad = true;
  std::string name;
  In(Tensor t_, bool grad_ = true, std::string name_ = "") : t(std::move(t_)), grad(grad_), name(std::move(name_)) {}
};
In fixed(Tensor t, std::string name = "") { return In(std::move(t), false, std::move(name)); }

// Runs f on CPU copies and on cuda:0 copies of the inputs, compares the outputs, back-propagates one
// random upstream gradient on both sides and compares every input gradient, then compares every input
// that did not require grad (in-place updates such as BN running statistics must match too).
void check_parity(const std::string& op, const std::vector<In>& ins, const Fn& f, Kind fwd, Kind bwd,
                  uint64_t seed = 1234) {
  SCOPED_TRACE(op);
  Ts cpu, gpu;
  std::vector<std::string> names;
  for (size_t i = 0; i < ins.size(); ++i) {
    const In& in = ins[i];
    names.push_back(in.name.empty() ? "input " + std::to_string(i) : in.name);
    if (!in.t.defined()) {
      cpu.emplace_back();
      gpu.emplace_back();
      continue;
    }
    Tensor c = in.t.detach().clone();  // a fresh leaf with its own storage
    Tensor g = c.to(kCuda);
    ASSERT_TRUE(g.device() == kCuda) << op << ": " << names.back() << " copied to " << g.device().str();
    ASSERT_TRUE(g.is_leaf());
    if (in.grad && is_floating(c.dtype())) {
      c.set_requires_grad();
      g.set_requires_grad();
    }
    cpu.push_back(c);
    gpu.push_back(g);
  }
  const Tensor yc = f(cpu);
  const Tensor yg = f(gpu);
  ASSERT_TRUE(yg.defined()) << op << ": undefined output on CUDA";
  EXPECT_TRUE(yg.device() == kCuda) << op << ": output is on " << yg.device().str();
  EXPECT_TRUE(tensors_close(op, "output", yc, yg, fwd));
  ASSERT_EQ(yc.requires_grad(), yg.requires_grad()) << op << ": requires_grad differs between devices";
  if (yc.requires_grad()) {
    Generator gen(seed);
    const Tensor gy = Tensor::randn(yc.shape(), gen, yc.dtype());
    yc.backward(gy);
    yg.backward(gy.to(kCuda));
    for (size_t i = 0; i < cpu.size(); ++i) {
      if (!cpu[i].defined() || !cpu[i].requires_grad()) continue;
      const Tensor gg = gpu[i].grad();
      if (gg.defined()) {
        EXPECT_TRUE(gg.device() == kCuda) << op << ": gradient of " << names[i] << " on " << gg.device().str();
      }
      EXPECT_TRUE(tensors_close(op, "gradient of " + names[i], cpu[i].grad(), gg, bwd));
    }
  }
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!cpu[i].defined() || cpu[i].requires_grad()) continue;
    EXPECT_TRUE(tensors_close(op, names[i] + " after the call", cpu[i], gpu[i], fwd));
  }
}

std::string label(const std::string& op, DType dt, const Shape& s) {
  return op + " " + dtype_name(dt) + shape_str(s);
}

// Values on a grid of multiples of `step` in [-range*step, range*step]: ties, zeros, exact boundaries.
Tensor quantized(const Shape& s, Generator& gen, DType dt, double step = 0.5, int range = 3) {
  std::vector<double> v(static_cast<size_t>(shape_numel(s)));
  for (double& x : v) x = step * (static_cast<double>(gen.randint(2 * range + 1)) - range);
  return Tensor::from_vector(v, s, dt);
}

Tensor labels(int64_t n, int64_t classes, Generator& gen) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t& x : v) x = static_cast<int64_t>(gen.randint(static_cast<uint64_t>(classes)));
  return Tensor::from_int64(v, {n});
}

Conv2dParams conv_params(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh = 1, int64_t dw = 1,
                         int64_t groups = 1) {
  Conv2dParams p;
  p.stride_h = sh;
  p.stride_w = sw;
  p.pad_h = ph;
  p.pad_w = pw;
  p.dilation_h = dh;
  p.dilation_w = dw;
  p.groups = groups;
  return p;
}

Pool2dParams pool_params(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                         bool count_include_pad = true) {
  Pool2dParams p;
  p.kernel_h = kh;
  p.kernel_w = kw;
  p.stride_h = sh;
  p.stride_w = sw;
  p.pad_h = ph;
  p.pad_w = pw;
  p.count_include_pad = count_include_pad;
  return p;
}

}  // namespace

// ---- elementwise ------------------------------------------------------------------------------------

TEST(CudaParity, UnaryOps) {
  REQUIRE_GPU();
  struct Op {
    const char* name;
    bool positive;  // needs inputs > 0 (log, sqrt, fractional powers)
    Fn f;
  };
  const std::vector<Op> ops = {
      {"neg", false, [](const Ts& t) { return retort::neg(t[0]); }},
      {"-x", false, [](const Ts& t) { return -t[0]; }},
      {"exp", false, [](const Ts& t) { return retort::exp(t[0]); }},
      {"log", true, [](const Ts& t) { return retort::log(t[0]); }},
      {"sqrt", true, [](const Ts& t) { return retort::sqrt(t[0]); }},
      {"pow(x, 2)", false, [](const Ts& t) { return retort::pow(t[0], 2.0); }},
      {"pow(x, 3)", false, [](const Ts& t) { return retort::pow(t[0], 3.0); }},
      {"pow(x, 0.5)", true, [](const Ts& t) { return retort::pow(t[0], 0.5); }},
      {"pow(x, -1.5)", true, [](const Ts& t) { return retort::pow(t[0], -1.5); }},
      {"abs", false, [](const Ts& t) { return retort::abs(t[0]); }},
      {"sign", false, [](const Ts& t) { return retort::sign(t[0]); }},
      {"clamp(-0.5, 0.5)", false, [](const Ts& t) { return retort::clamp(t[0], -0.5, 0.5); }},
      {"clamp(-inf, 1)", false,
       [](const Ts& t) { return retort::clamp(t[0], -std::numeric_limits<double>::infinity(), 1.0); }},
      {"relu", false, [](const Ts& t) { return retort::relu(t[0]); }},
      {"leaky_relu(0.1)", false, [](const Ts& t) { return retort::leaky_relu(t[0], 0.1); }},
      {"sigmoid", false, [](const Ts& t) { return retort::sigmoid(t[0]); }},
      {"tanh", false, [](const Ts& t) { return retort::tanh(t[0]); }},
      {"affine(2.5, -0.75)", false, [](const Ts& t) { return retort::affine(t[0], 2.5, -0.75); }},
      {"x + 1.5", false, [](const Ts& t) { return t[0] + 1.5; }},
      {"x - 2", false, [](const Ts& t) { return t[0] - 2.0; }},
      {"x * 3", false, [](const Ts& t) { return t[0] * 3.0; }},
      {"x / 4", false, [](const Ts& t) { return t[0] / 4.0; }},
      {"0.5 * x", false, [](const Ts& t) { return 0.5 * t[0]; }},
      {"clone", false, [](const Ts& t) { return t[0].clone(); }},
  };
  Generator gen(1);
  for (DType dt : kFloatTypes) {
    std::vector<Shape> shapes = {{}, {7}, {3, 4, 5}};
    if (dt == DType::F32) shapes.push_back({(1 << 20) + 3});  // many blocks and a ragged tail
    for (const Shape& s : shapes) {
      const Tensor x = Tensor::randn(s, gen, dt, 0.0, 2.0);
      const Tensor xpos = Tensor::rand(s, gen, dt, 0.2, 3.0);
      for (const Op& op : ops) check_parity(label(op.name, dt, s), {op.positive ? xpos : x}, op.f, Kind::Elementwise, Kind::Elementwise);
    }
    // Zeros, ties and the clamp bounds themselves: where the subgradient conventions live.
    const Tensor q = quantized({4, 9}, gen, dt, 0.25, 4);
    for (const Op& op : ops)
      if (!op.positive) check_parity(label(std::string(op.name) + " (grid values)", dt, {4, 9}), {q}, op.f, Kind::Elementwise, Kind::Elementwise);
  }
}

// A NaN reaching a ReLU stays NaN on the device as on the CPU (Relu.NaNStaysNaNOnEveryPath): the op,
// add+ReLU and batch norm + ReLU in training and eval mode.
TEST(CudaParity, ReluKeepsNaN) {
  REQUIRE_GPU();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto nans = [](const Tensor& t) {
    int n = 0;
    for (double v : t.to(Device::cpu()).to_vector()) n += std::isnan(v) ? 1 : 0;
    return n;
  };
  const Tensor x = Tensor::from_vector({nan, -1.0, 2.0, 0.0, -3.0, 4.0, 5.0, -6.0}, {1, 2, 2, 2}, DType::F32).to(kCuda);
  EXPECT_EQ(nans(retort::relu(x)), 1);
  EXPECT_EQ(retort::relu(x).to(Device::cpu()).to_vector()[1], 0.0);
  EXPECT_EQ(nans(retort::add_relu(x, Tensor::ones({1, 2, 2, 2}).to(kCuda))), 1);
  const Tensor rm = Tensor::zeros({2}).to(kCuda), rv = Tensor::ones({2}).to(kCuda), w = Tensor::ones({2}).to(kCuda),
               b = Tensor::zeros({2}).to(kCuda);
  NoGradGuard ng;
  EXPECT_GE(nans(retort::batch_norm_relu(x, rm, rv, w, b, false)), 1);
  EXPECT_GE(nans(retort::batch_norm_relu(x, rm.clone(), rv.clone(), w, b, true)), 1);
}

// Max, min, sign, the max/min reductions and max-pooling keep NaN on the device as on the CPU
// (NaN.MaxMinSignReductionsAndPoolingKeepIt): the same NaNs in the same places.
TEST(CudaParity, MaxMinSignReductionsAndPoolingKeepNaN) {
  REQUIRE_GPU();
  Generator gen(5);
  for (DType dt : {DType::F32, DType::F64}) {
    SCOPED_TRACE(dtype_name(dt));
    std::vector<double> v = Tensor::randn({4, 6, 8, 8}, gen, DType::F64).to_vector();
    for (size_t i : {0, 77, 200, 1023, 1500, 2047}) v[i] = std::nan("");
    const Tensor x = Tensor::from_vector(v, {4, 6, 8, 8}, DType::F64).to(dt), y = Tensor::randn({4, 6, 8, 8}, gen, dt);
    const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&)>>> ops = {
        {"maximum(x, y)", [](const Tensor& a, const Tensor& b) { return retort::maximum(a, b); }},
        {"maximum(y, x)", [](const Tensor& a, const Tensor& b) { return retort::maximum(b, a); }},
        {"minimum(x, y)", [](const Tensor& a, const Tensor& b) { return retort::minimum(a, b); }},
        {"sign", [](const Tensor& a, const Tensor&) { return retort::sign(a); }},
        {"max over dims 2, 3", [](const Tensor& a, const Tensor&) { return retort::max(a, {2, 3}); }},
        {"min over dim 0", [](const Tensor& a, const Tensor&) { return retort::min(a, {0}); }},
        {"max over dim 1", [](const Tensor& a, const Tensor&) { return retort::max(a, {1}); }},
        {"max of all", [](const Tensor& a, const Tensor&) { return retort::max(a); }},
        {"max_pool2d 3x3 / 2, padding 1", [](const Tensor& a, const Tensor&) { return retort::max_pool2d(a, 3, 2, 1); }},
    };
    NoGradGuard ng;
    for (const auto& [name, f] : ops) {
      SCOPED_TRACE(name);
      const std::vector<double> c = f(x, y).to_vector(), g = f(x.to(kCuda), y.to(kCuda)).to(Device::cpu()).to_vector();
      ASSERT_EQ(c.size(), g.size());
      int nans = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        nans += std::isnan(c[i]) ? 1 : 0;
        ASSERT_EQ(std::isnan(c[i]), std::isnan(g[i])) << i;
        if (!std::isnan(c[i])) {
          EXPECT_EQ(c[i], g[i]) << i;
        }
      }
      EXPECT_GE(nans, 1);
    }
  }
}

TEST(CudaParity, BinaryOps) {
  REQUIRE_GPU();
  enum Domain { Any, PositiveB, XlogyArgs };
  struct Op {
    const char* name;
    Domain domain;
    Fn f;
  };
  const std::vector<Op> ops = {
      {"add", Any, [](const Ts& t) { return retort::add(t[0], t[1]); }},
      {"add_relu", Any, [](const Ts& t) { return retort::add_relu(t[0], t[1]); }},
      {"sub", Any, [](const Ts& t) { return retort::sub(t[0], t[1]); }},
      {"mul", Any, [](const Ts& t) { return retort::mul(t[0], t[1]); }},
      {"div", PositiveB, [](const Ts& t) { return retort::div(t[0], t[1]); }},
      {"maximum", Any, [](const Ts& t) { return retort::maximum(t[0], t[1]); }},
      {"minimum", Any, [](const Ts& t) { return retort::minimum(t[0], t[1]); }},
      {"xlogy", XlogyArgs, [](const Ts& t) { return retort::xlogy(t[0], t[1]); }},
      {"a + b", Any, [](const Ts& t) { return t[0] + t[1]; }},
      {"a - b", Any, [](const Ts& t) { return t[0] - t[1]; }},
      {"a * b", Any, [](const Ts& t) { return t[0] * t[1]; }},
      {"a / b", PositiveB, [](const Ts& t) { return t[0] / t[1]; }},
  };
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{3, 4, 5}, {3, 4, 5}}, {{4, 1, 5}, {3, 1}}, {{3, 1}, {4, 1, 5}}, {{}, {3, 4}},
      {{3, 4}, {}},           {{2, 3, 4, 5}, {4, 1}}, {{5}, {2, 3, 5}}, {{1, 6}, {5, 1}},
  };
  Generator gen(2);
  for (DType dt : kFloatTypes) {
    auto run = [&](const Shape& sa, const Shape& sb) {
      const Tensor a = Tensor::randn(sa, gen, dt), b = Tensor::randn(sb, gen, dt);
      const Tensor bpos = Tensor::rand(sb, gen, dt, 0.5, 2.0);
      const Tensor apos0 = retort::relu(Tensor::randn(sa, gen, dt));  // exact zeros: xlogy's 0 * log(b) = 0
      const Kind bwd = sa == sb ? Kind::Elementwise : Kind::Reduction;  // broadcast gradients are summed
      for (const Op& op : ops) {
        const std::string name = std::string(op.name) + " " + dtype_name(dt) + shape_str(sa) + " vs " + shape_str(sb);
        switch (op.domain) {
          case Any: check_parity(name, {In(a, true, "a"), In(b, true, "b")}, op.f, Kind::Elementwise, bwd); break;
          case PositiveB: check_parity(name, {In(a, true, "a"), In(bpos, true, "b")}, op.f, Kind::Elementwise, bwd); break;
          case XlogyArgs: check_parity(name, {In(apos0, true, "a"), In(bpos, true, "b")}, op.f, Kind::Elementwise, bwd); break;
        }
      }
    };
    for (const auto& [sa, sb] : pairs) run(sa, sb);
    if (dt == DType::F32) run({1000, 1}, {1, 1025});  // a million outputs from two vectors
    // Ties: maximum/minimum send the gradient to a where a >= b (a <= b); grid values tie often.
    const Tensor qa = quantized({6, 7}, gen, dt), qb = quantized({6, 7}, gen, dt), qr = quantized({7}, gen, dt);
    for (const char* which : {"maximum", "minimum"}) {
      const bool is_max = std::string(which) == "maximum";
      const Fn f = [is_max](const Ts& t) { return is_max ? retort::maximum(t[0], t[1]) : retort::minimum(t[0], t[1]); };
      check_parity(std::string(which) + " ties " + dtype_name(dt), {In(qa, true, "a"), In(qb, true, "b")}, f,
                   Kind::Exact, Kind::Exact);
      check_parity(std::string(which) + " a vs a " + dtype_name(dt), {In(qa, true, "a"), In(qa, true, "a copy")}, f,
                   Kind::Exact, Kind::Exact);
      check_parity(std::string(which) + " ties broadcast " + dtype_name(dt), {In(qa, true, "a"), In(qr, true, "b")},
                   f, Kind::Exact, Kind::Reduction);
    }
  }
}

TEST(CudaParity, Comparisons) {
  REQUIRE_GPU();
  const std::vector<std::pair<const char*, Fn>> ops = {
      {"gt", [](const Ts& t) { return retort::gt(t[0], t[1]); }},
      {"ge", [](const Ts& t) { return retort::ge(t[0], t[1]); }},
      {"lt", [](const Ts& t) { return retort::lt(t[0], t[1]); }},
      {"le", [](const Ts& t) { return retort::le(t[0], t[1]); }},
      {"eq", [](const Ts& t) { return retort::eq(t[0], t[1]); }},
  };
  const std::vector<std::pair<Shape, Shape>> pairs = {{{3, 4, 5}, {3, 4, 5}}, {{4, 1, 5}, {3, 1}}, {{3, 4}, {}}, {{}, {2, 2}}};
  Generator gen(3);
  for (DType dt : kFloatTypes)
    for (const auto& [sa, sb] : pairs) {
      const Tensor a = quantized(sa, gen, dt), b = quantized(sb, gen, dt);  // many ties
      for (const auto& [name, f] : ops)
        check_parity(std::string(name) + " " + dtype_name(dt) + shape_str(sa) + " vs " + shape_str(sb),
                     {In(a, true, "a"), In(b, true, "b")}, f, Kind::Exact, Kind::Exact);
    }
}

// ---- reductions -------------------------------------------------------------------------------------

TEST(CudaParity, Reductions) {
  REQUIRE_GPU();
  using RFn = std::function<Tensor(const Tensor&, std::vector<int64_t>, bool)>;
  struct Op {
    const char* name;
    Kind fwd;
    RFn f;
  };
  const std::vector<Op> ops = {
      {"sum", Kind::Reduction, [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::sum(x, d, k); }},
      {"mean", Kind::Reduction, [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::mean(x, d, k); }},
      {"max", Kind::Exact, [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::max(x, d, k); }},
      {"min", Kind::Exact, [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::min(x, d, k); }},
      {"var", Kind::Reduction, [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::var(x, d, true, k); }},
      {"var(biased)", Kind::Reduction,
       [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::var(x, d, false, k); }},
      {"stddev", Kind::Reduction,
       [](const Tensor& x, std::vector<int64_t> d, bool k) { return retort::stddev(x, d, true, k); }},
  };
  const std::vector<std::vector<int64_t>> dim_sets = {{}, {0}, {1}, {2}, {-1}, {0, 2}, {2, 0}, {1, 2}, {0, 1, 2}};
  auto dims_str = [](const std::vector<int64_t>& d) {
    std::ostringstream os;
    os << "{";
    for (size_t i = 0; i < d.size(); ++i) os << (i ? "," : "") << d[i];
    os << "}";
    return os.str();
  };
  Generator gen(4);
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({4, 5, 6}, gen, dt);
    const Tensor q = quantized({4, 5, 6}, gen, dt, 1.0, 2);  // ties: max/min share the gradient equally
    for (const Op& op : ops)
      for (const auto& dims : dim_sets)
        for (bool keep : {false, true}) {
          const std::string name = std::string(op.name) + " " + dtype_name(dt) + "[4, 5, 6] dims " + dims_str(dims) +
                                   (keep ? " keepdim" : "");
          const RFn f = op.f;
          const Fn fn = [f, dims, keep](const Ts& t) { return f(t[0], dims, keep); };
          check_parity(name, {x}, fn, op.fwd, Kind::Reduction);
          const std::string oname = op.name;
          if (oname == "max" || oname == "min" || oname == "sum")
            check_parity(name + " (ties)", {q}, fn, op.fwd, Kind::Reduction);
        }
    // Long rows and columns, and everything at once: multi-block reductions.
    const std::vector<std::pair<Shape, std::vector<int64_t>>> big = {
        {{3, 100003}, {1}}, {{100003, 3}, {0}}, {{64, 129, 33}, {1}}, {{(1 << 20) + 7}, {}}, {{7, 11, 13, 17}, {0, 2}}};
    for (const auto& [s, dims] : big) {
      const Tensor xb = Tensor::randn(s, gen, dt);
      for (const char* name : {"sum", "max", "min", "mean"}) {
        const std::string n = name;
        const Fn fn = [n, dims = dims](const Ts& t) {
          if (n == "sum") return retort::sum(t[0], dims);
          if (n == "max") return retort::max(t[0], dims);
          if (n == "min") return retort::min(t[0], dims);
          return retort::mean(t[0], dims);
        };
        check_parity(label(n + " dims " + dims_str(dims), dt, s), {xb}, fn,
                     n == "max" || n == "min" ? Kind::Exact : Kind::Reduction, Kind::Reduction);
      }
    }
    // sum_to, the backward of every broadcast, directly.
    const Tensor g = Tensor::randn({4, 3, 5}, gen, dt);
    for (const Shape& to : std::vector<Shape>{{3, 1}, {4, 1, 5}, {5}, {}, {1, 3, 1}, {3, 5}})
      check_parity("sum_to " + shape_str(to) + " " + dtype_name(dt), {g},
                   [to](const Ts& t) { return retort::sum_to(t[0], to); }, Kind::Reduction, Kind::Exact);
  }
}

// ---- strided copies ---------------------------------------------------------------------------------

TEST(CudaParity, ShapeOps) {
  REQUIRE_GPU();
  Generator gen(5);
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({2, 3, 4, 5}, gen, dt);
    const std::vector<std::pair<std::string, Fn>> unary = {
        {"permute {0,2,3,1}", [](const Ts& t) { return retort::permute(t[0], {0, 2, 3, 1}); }},
        {"permute {3,2,1,0}", [](const Ts& t) { return retort::permute(t[0], {3, 2, 1, 0}); }},
        {"permute {1,0,2,3}", [](const Ts& t) { return retort::permute(t[0], {1, 0, 2, 3}); }},
        {"permute {-1,0,1,2}", [](const Ts& t) { return retort::permute(t[0], {-1, 0, 1, 2}); }},
        {"transpose(1, 3)", [](const Ts& t) { return retort::transpose(t[0], 1, 3); }},
        {"transpose(-1, -2)", [](const Ts& t) { return retort::transpose(t[0], -1, -2); }},
        {"slice(1, 0, 2)", [](const Ts& t) { return retort::slice(t[0], 1, 0, 2); }},
        {"slice(3, 1, 5, 2)", [](const Ts& t) { return retort::slice(t[0], 3, 1, 5, 2); }},
        {"slice(2, -3, 100)", [](const Ts& t) { return retort::slice(t[0], 2, -3, 100); }},
        {"slice(-1, 0, 5, 3)", [](const Ts& t) { return retort::slice(t[0], -1, 0, 5, 3); }},
        {"slice(0, 1, 2)", [](const Ts& t) { return retort::slice(t[0], 0, 1, 2); }},
        {"pad {1,2,0,1}", [](const Ts& t) { return retort::pad(t[0], {1, 2, 0, 1}); }},
        {"pad {2,2,1,1} value 0.5", [](const Ts& t) { return retort::pad(t[0], {2, 2, 1, 1}, 0.5); }},
        {"pad crop {-1,1,2,-2}", [](const Ts& t) { return retort::pad(t[0], {-1, 1, 2, -2}); }},
        {"pad 3 dims {1,0,0,1,1,1}", [](const Ts& t) { return retort::pad(t[0], {1, 0, 0, 1, 1, 1}); }},
        {"flatten(1)", [](const Ts& t) { return retort::flatten(t[0], 1); }},
        {"reshape(permute)", [](const Ts& t) { return retort::reshape(retort::permute(t[0], {0, 3, 1, 2}), {10, -1}); }},
        {"unsqueeze/squeeze",
         [](const Ts& t) { return retort::squeeze(retort::permute(retort::unsqueeze(t[0], 2), {2, 0, 1, 3, 4}), 0); }},
        {"slice(permute)", [](const Ts& t) { return retort::slice(retort::permute(t[0], {3, 1, 0, 2}), 0, 1, 4, 2); }},
    };
    for (const auto& [name, f] : unary) check_parity(label(name, dt, x.shape()), {x}, f, Kind::Exact, Kind::Exact);

    // expand (the backward is a sum).
    const Tensor e = Tensor::randn({3, 1, 5}, gen, dt);
    check_parity(label("expand -> [2, 3, 4, 5]", dt, e.shape()), {e},
                 [](const Ts& t) { return retort::expand(t[0], {2, 3, 4, 5}); }, Kind::Exact, Kind::Reduction);
    const Tensor e2 = Tensor::randn({1, 4}, gen, dt);
    check_parity(label("expand -> [3, -1]", dt, e2.shape()), {e2},
                 [](const Ts& t) { return retort::expand(t[0], {3, -1}); }, Kind::Exact, Kind::Reduction);
    const Tensor e3 = Tensor::randn({}, gen, dt);
    check_parity(label("expand -> [2, 3]", dt, e3.shape()), {e3},
                 [](const Ts& t) { return retort::expand(t[0], {2, 3}); }, Kind::Exact, Kind::Reduction);

    // cat along the first, a middle and the last dimension.
    const std::vector<std::pair<int64_t, std::vector<Shape>>> cats = {
        {0, {{2, 3, 4}, {1, 3, 4}, {3, 3, 4}}},
        {1, {{2, 3, 4}, {2, 1, 4}, {2, 2, 4}}},
        {-1, {{2, 3, 4}, {2, 3, 1}, {2, 3, 2}}},
        {2, {{2, 3, 4}, {2, 3, 4}}},
    };
    for (const auto& [dim, shapes] : cats) {
      std::vector<In> ins;
      for (const Shape& s : shapes) ins.emplace_back(Tensor::randn(s, gen, dt));
      check_parity("cat dim " + std::to_string(dim) + " of " + std::to_string(shapes.size()) + " " + dtype_name(dt),
                   ins, [d = dim](const Ts& t) { return retort::cat(t, d); }, Kind::Exact, Kind::Exact);
    }
  }
}

// ---- matrix products --------------------------------------------------------------------------------

TEST(CudaParity, MatmulAndLinear) {
  REQUIRE_GPU();
  Generator gen(6);
  const Fn mm = [](const Ts& t) { return retort::matmul(t[0], t[1]); };
  for (DType dt : kFloatTypes) {
    const std::vector<std::pair<Shape, Shape>> pairs = {
        {{5, 7}, {7, 3}},       {{4, 5, 7}, {4, 7, 3}},  {{2, 1, 5, 7}, {3, 7, 4}}, {{7}, {7, 3}},
        {{5, 7}, {7}},          {{7}, {7}},              {{3, 5, 7}, {7, 2}},       {{1, 1}, {1, 1}},
        {{64, 128}, {128, 96}}, {{1, 300}, {300, 257}},  {{257, 300}, {300, 1}},
    };
    for (const auto& [sa, sb] : pairs)
      check_parity("matmul " + std::string(dtype_name(dt)) + shape_str(sa) + " @ " + shape_str(sb),
                   {In(Tensor::randn(sa, gen, dt), true, "a"), In(Tensor::randn(sb, gen, dt), true, "b")}, mm,
                   Kind::Gemm, Kind::Gemm);
    // Transposed operands (the GEMM's trans flags run in both backwards as well).
    const Tensor at = Tensor::randn({3, 7, 5}, gen, dt), bt = Tensor::randn({3, 4, 7}, gen, dt);
    const Tensor a = Tensor::randn({3, 5, 7}, gen, dt), b = Tensor::randn({3, 7, 4}, gen, dt);
    check_parity(label("matmul(a^T, b)", dt, at.shape()), {In(at, true, "a"), In(b, true, "b")},
                 [](const Ts& t) { return retort::matmul(retort::transpose(t[0], -1, -2), t[1]); }, Kind::Gemm, Kind::Gemm);
    check_parity(label("matmul(a, b^T)", dt, a.shape()), {In(a, true, "a"), In(bt, true, "b")},
                 [](const Ts& t) { return retort::matmul(t[0], retort::transpose(t[1], -1, -2)); }, Kind::Gemm, Kind::Gemm);
    check_parity(label("matmul(a^T, b^T)", dt, at.shape()), {In(at, true, "a"), In(bt, true, "b")},
                 [](const Ts& t) { return retort::matmul(retort::transpose(t[0], 1, 2), retort::transpose(t[1], 1, 2)); },
                 Kind::Gemm, Kind::Gemm);
    // linear with and without bias, 2-D and 3-D inputs.
    const Tensor w = Tensor::randn({10, 16}, gen, dt), bias = Tensor::randn({10}, gen, dt);
    for (const Shape& xs : std::vector<Shape>{{8, 16}, {2, 5, 16}, {16}}) {
      const Tensor x = Tensor::randn(xs, gen, dt);
      check_parity(label("linear", dt, xs), {In(x, true, "x"), In(w, true, "weight"), In(bias, true, "bias")},
                   [](const Ts& t) { return retort::linear(t[0], t[1], t[2]); }, Kind::Gemm, Kind::Gemm);
      check_parity(label("linear (no bias)", dt, xs), {In(x, true, "x"), In(w, true, "weight")},
                   [](const Ts& t) { return retort::linear(t[0], t[1]); }, Kind::Gemm, Kind::Gemm);
    }
    // A frozen weight: only the input gradient is asked for.
    check_parity(label("linear (frozen weight)", dt, {8, 16}),
                 {In(Tensor::randn({8, 16}, gen, dt), true, "x"), fixed(w, "weight"), fixed(bias, "bias")},
                 [](const Ts& t) { return retort::linear(t[0], t[1], t[2]); }, Kind::Gemm, Kind::Gemm);
  }
}

// eigh (cuSOLVER's batched syev against LAPACK's syevd): values, sign-fixed vectors and the gradient
// through both, n below and above 32 (cuSOLVER switches algorithms there); then the kernel directly on
// a matrix that is not symmetric, where both backends must read the same (lower, row-major) triangle.
TEST(CudaParity, SymmetricEigendecomposition) {
  REQUIRE_GPU();
  Generator gen(21);
  for (DType dt : kFloatTypes) {
    for (const Shape& s : std::vector<Shape>{{3, 3}, {6, 8, 8}, {2, 33, 33}}) {
      const Tensor a = Tensor::randn(s, gen, dt);
      check_parity(label("eigh values", dt, s), {In(a, true, "a")}, [](const Ts& t) { return retort::eigh(t[0]).values; },
                   Kind::Gemm, Kind::Gemm);
      check_parity(label("eigh vectors", dt, s), {In(a, true, "a")},
                   [](const Ts& t) { return retort::eigh(t[0]).vectors; }, Kind::Gemm, Kind::Gemm);
      check_parity(label("eigh vectors gap_eps 0.01", dt, s), {In(a, true, "a")},
                   [](const Ts& t) { return retort::eigh(t[0], 0.01).vectors; }, Kind::Gemm, Kind::Gemm);
    }
    // The kernel itself on both devices, for a [B, n, n] batch (it reads the lower triangle only).
    const auto kernel_parity = [&](const Tensor& a, const std::string& what) {
      const int64_t b = a.shape()[0], n = a.shape()[1];
      Tensor wc = Tensor::empty({b, n}, dt), vc = Tensor::empty({b, n, n}, dt);
      Tensor wg = Tensor::empty({b, n}, dt, kCuda), vg = Tensor::empty({b, n, n}, dt, kCuda);
      backend_for(Device::cpu()).symeig(a, wc, vc);
      backend_for(kCuda).symeig(a.to(kCuda), wg, vg);
      EXPECT_TRUE(tensors_close(label(what, dt, a.shape()), "values", wc, wg, Kind::Gemm));
      EXPECT_TRUE(tensors_close(label(what, dt, a.shape()), "vectors", vc, vg, Kind::Gemm));
    };
    const Tensor a = Tensor::randn({4, 6, 6}, gen, dt);
    kernel_parity(a, "symeig kernel (lower triangle)");
#ifdef RETORT_WITH_CUDA
    {
      // More matrices than one cuSOLVER call takes (its INT32_MAX elements, lowered here to three 6x6
      // matrices): calls of 3, 3 and 1, the same results, and a NaN in the last call still named.
      struct Limit {
        Limit() { cuda::set_symeig_max_elements_per_call(3 * 36); }
        ~Limit() { cuda::set_symeig_max_elements_per_call(0); }
      } limit;
      const Tensor many = Tensor::randn({7, 6, 6}, gen, dt);
      kernel_parity(many, "symeig in 3 calls");
      std::vector<double> m = many.to(DType::F64).to_vector();
      m[6 * 36 + 1] = std::numeric_limits<double>::infinity();
      expect_error([&] { retort::eigh(Tensor::from_vector(m, many.shape(), dt).to(kCuda)); },
                   {"symeig: matrix 6 of ", "non-finite"});
      cuda::set_symeig_max_elements_per_call(35);  // not even one 6x6 matrix per call
      expect_error([&] { retort::eigh(many.to(kCuda)); }, {"matrices of 6 x 6", "at most 35 elements per call"});
    }
#endif
    // A NaN in one matrix is refused on both devices with the same message.
    std::vector<double> v = a.to(DType::F64).to_vector();
    v[2 * 36 + 7] = std::nan("");
    const Tensor bad = Tensor::from_vector(v, a.shape(), dt);
    for (const Device dev : {Device::cpu(), kCuda}) {
      try {
        retort::eigh(bad.to(dev));
        ADD_FAILURE() << "expected an error on " << dev.str();
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("symeig: matrix 2 of "), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("has non-finite entries"), std::string::npos) << e.what();
      }
    }
  }
}

// The GEMM kernel through the Backend interface: every trans_a/trans_b combination, alpha and beta,
// leading dimensions wider than the matrices (the padding columns must stay untouched), batch strides
// including a shared (stride 0) operand.
TEST(CudaParity, GemmKernelDirect) {
  REQUIRE_GPU();
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(kCuda);
  Generator gen(7);
  struct Dims {
    int64_t m, n, k, batch;
    bool share_b;
    double alpha, beta;
  };
  const std::vector<Dims> dims = {
      {13, 9, 17, 3, false, 0.75, -0.5}, {1, 33, 8, 2, true, 1.0, 0.0}, {40, 1, 65, 1, false, -2.0, 1.0},
      {128, 96, 200, 2, false, 1.0, 0.25}, {6, 5, 0, 2, false, 1.0, 0.5}};
  for (DType dt : kFloatTypes)
    for (const Dims& d : dims)
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const int64_t a_rows = ta ? d.k : d.m, a_cols = ta ? d.m : d.k, lda = a_cols + 3;
          const int64_t b_rows = tb ? d.n : d.k, b_cols = tb ? d.k : d.n, ldb = b_cols + 1;
          const int64_t ldc = d.n + 2;
          Tensor A = Tensor::randn({d.batch, a_rows, lda}, gen, dt);
          Tensor B = Tensor::randn({d.share_b ? 1 : d.batch, b_rows, ldb}, gen, dt);
          Tensor C = Tensor::randn({d.batch, d.m, ldc}, gen, dt);
          GemmArgs g;
          g.trans_a = ta;
          g.trans_b = tb;
          g.m = d.m;
          g.n = d.n;
          g.k = d.k;
          g.alpha = d.alpha;
          g.beta = d.beta;
          g.lda = lda;
          g.ldb = ldb;
          g.ldc = ldc;
          g.dtype = dt;
          g.batch = d.batch;
          g.stride_a = a_rows * lda;
          g.stride_b = d.share_b ? 0 : b_rows * ldb;
          g.stride_c = d.m * ldc;
          // k == 0 (C = beta C) with leading dimensions of 0, as a caller with nothing to read may pass.
          if (d.k == 0) g.lda = g.ldb = 0;
          Tensor Cc = C.clone();
          g.a = A.raw_data();
          g.b = B.raw_data();
          g.c = Cc.raw_data();
          cpu.gemm(g);
          Tensor Ag = A.to(kCuda), Bg = B.to(kCuda), Cg = C.to(kCuda);
          g.a = Ag.raw_data();
          g.b = Bg.raw_data();
          g.c = Cg.raw_data();
          gpu.gemm(g);
          std::ostringstream name;
          name << "gemm " << dtype_name(dt) << " m" << d.m << " n" << d.n << " k" << d.k << " batch " << d.batch
               << (d.share_b ? " (B shared)" : "") << (ta ? " A^T" : " A") << (tb ? " B^T" : " B") << " alpha "
               << d.alpha << " beta " << d.beta;
          EXPECT_TRUE(tensors_close(name.str(), "C", Cc, Cg, Kind::Gemm));
        }
}

// ---- convolution ------------------------------------------------------------------------------------

TEST(CudaParity, Conv2d) {
  REQUIRE_GPU();
  struct Case {
    const char* name;
    Shape x, w;
    bool bias;
    Conv2dParams p;
  };
  const std::vector<Case> cases = {
      {"3x3 pad 1", {2, 4, 8, 8}, {6, 4, 3, 3}, true, conv_params(1, 1, 1, 1)},
      {"3x3 pad 1 no bias", {2, 4, 8, 8}, {6, 4, 3, 3}, false, conv_params(1, 1, 1, 1)},
      {"3x3 stride 2 pad 1", {2, 4, 9, 9}, {8, 4, 3, 3}, false, conv_params(2, 2, 1, 1)},
      {"3x3 stride 2 pad 1 even input", {2, 4, 8, 8}, {8, 4, 3, 3}, true, conv_params(2, 2, 1, 1)},
      {"3x3 no pad", {3, 2, 7, 6}, {5, 2, 3, 3}, true, conv_params(1, 1, 0, 0)},
      {"1x1", {2, 8, 5, 5}, {16, 8, 1, 1}, true, conv_params(1, 1, 0, 0)},
      {"1x1 no bias", {2, 8, 5, 5}, {16, 8, 1, 1}, false, conv_params(1, 1, 0, 0)},
      {"1x1 stride 2", {2, 8, 7, 7}, {4, 8, 1, 1}, false, conv_params(2, 2, 0, 0)},
      {"groups 2", {2, 4, 7, 7}, {6, 2, 3, 3}, true, conv_params(1, 1, 1, 1, 1, 1, 2)},
      {"groups 2 stride 2 no bias", {2, 8, 9, 9}, {8, 4, 3, 3}, false, conv_params(2, 2, 1, 1, 1, 1, 2)},
      {"depthwise", {2, 6, 8, 8}, {6, 1, 3, 3}, true, conv_params(1, 1, 1, 1, 1, 1, 6)},
      {"depthwise stride 2 no bias", {2, 6, 9, 9}, {6, 1, 3, 3}, false, conv_params(2, 2, 1, 1, 1, 1, 6)},
      {"depthwise multiplier 2", {2, 6, 8, 8}, {12, 1, 3, 3}, true, conv_params(1, 1, 1, 1, 1, 1, 6)},
      {"depthwise 5x5 pad 2", {2, 4, 10, 10}, {4, 1, 5, 5}, false, conv_params(1, 1, 2, 2, 1, 1, 4)},
      {"dilation 2 pad 2", {2, 4, 9, 9}, {5, 4, 3, 3}, true, conv_params(1, 1, 2, 2, 2, 2)},
      {"dilation 2 stride 2", {2, 3, 11, 11}, {4, 3, 3, 3}, false, conv_params(2, 2, 1, 1, 2, 2)},
      {"3x5 stride (2,1) pad (1,2) dilation (1,2)", {2, 3, 9, 10}, {4, 3, 3, 5}, true, conv_params(2, 1, 1, 2, 1, 2)},
      {"7x7 stride 2 pad 3 (stem)", {2, 3, 32, 32}, {8, 3, 7, 7}, false, conv_params(2, 2, 3, 3)},
      {"5x5 pad 2 wide", {4, 16, 12, 12}, {32, 16, 5, 5}, true, conv_params(1, 1, 2, 2)},
      {"3x3 larger channels", {2, 64, 8, 8}, {64, 64, 3, 3}, false, conv_params(1, 1, 1, 1)},
      {"1x1 output", {2, 3, 3, 3}, {4, 3, 3, 3}, true, conv_params(1, 1, 0, 0)},
  };
  Generator gen(8);
  for (DType dt : kFloatTypes)
    for (const Case& c : cases) {
      const Tensor x = Tensor::randn(c.x, gen, dt);
      const Tensor w = Tensor::randn(c.w, gen, dt, 0.0, 0.5);
      const Tensor b = c.bias ? Tensor::randn({c.w[0]}, gen, dt) : Tensor();
      const Conv2dParams p = c.p;
      check_parity(label(std::string("conv2d ") + c.name, dt, c.x), {In(x, true, "x"), In(w, true, "weight"), In(b, true, "bias")},
                   [p](const Ts& t) { return retort::conv2d(t[0], t[1], t[2], p); }, Kind::Gemm, Kind::Gemm);
    }
  // The square shorthand, and a frozen weight (only the input gradient).
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({2, 4, 8, 8}, gen, dt), w = Tensor::randn({6, 4, 3, 3}, gen, dt);
    check_parity(label("conv2d shorthand stride 1 pad 1", dt, x.shape()), {In(x, true, "x"), In(w, true, "weight")},
                 [](const Ts& t) { return retort::conv2d(t[0], t[1], Tensor(), 1, 1); }, Kind::Gemm, Kind::Gemm);
    check_parity(label("conv2d frozen weight", dt, x.shape()), {In(x, true, "x"), fixed(w, "weight")},
                 [](const Ts& t) { return retort::conv2d(t[0], t[1], Tensor(), 2, 1); }, Kind::Gemm, Kind::Gemm);
    check_parity(label("conv2d frozen input", dt, x.shape()), {fixed(x, "x"), In(w, true, "weight")},
                 [](const Ts& t) { return retort::conv2d(t[0], t[1], Tensor(), 1, 1); }, Kind::Gemm, Kind::Gemm);
  }
}

// Inference-only conv -> eval BN [-> ReLU]: CUDA runs the two kernels (Backend's default), the CPU the
// oneDNN epilogue (F32) or the two kernels (F64).
TEST(CudaParity, Conv2dBnEval) {
  REQUIRE_GPU();
  Generator gen(9);
  for (DType dt : kFloatTypes)
    for (bool relu : {false, true})
      for (int64_t groups : {1, 2, 8}) {
        const Tensor x = Tensor::randn({2, 8, 9, 9}, gen, dt), w = Tensor::randn({8, 8 / groups, 3, 3}, gen, dt, 0.0, 0.5);
        const Tensor b = Tensor::randn({8}, gen, dt), gamma = Tensor::rand({8}, gen, dt, 0.5, 1.5);
        const Tensor beta = Tensor::randn({8}, gen, dt), rm = Tensor::randn({8}, gen, dt);
        const Tensor rv = Tensor::rand({8}, gen, dt, 0.2, 2.0);
        const Conv2dParams p = conv_params(1, 1, 1, 1, 1, 1, groups);
        check_parity(label("conv2d_bn_eval groups " + std::to_string(groups) + (relu ? " relu" : ""), dt, x.shape()),
                     {fixed(x, "x"), fixed(w, "weight"), fixed(b, "bias"), fixed(gamma, "bn weight"),
                      fixed(beta, "bn bias"), fixed(rm, "running_mean"), fixed(rv, "running_var")},
                     [p, relu](const Ts& t) {
                       return retort::conv2d_bn_eval(t[0], t[1], t[2], p, t[3], t[4], t[5], t[6], 1e-5, relu);
                     },
                     Kind::Gemm, Kind::Gemm);
      }
}

TEST(CudaParity, ConvTranspose2d) {
  REQUIRE_GPU();
  Generator gen(9);
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({2, 4, 5, 5}, gen, dt), w = Tensor::randn({4, 3, 3, 3}, gen, dt, 0.0, 0.5),
                 b = Tensor::randn({3}, gen, dt);
    check_parity(label("conv_transpose2d stride 2 pad 1 out_pad 1", dt, x.shape()),
                 {In(x, true, "x"), In(w, true, "weight"), In(b, true, "bias")},
                 [](const Ts& t) { return retort::conv_transpose2d(t[0], t[1], t[2], 2, 1, 1); }, Kind::Gemm, Kind::Gemm);
    const Tensor wg = Tensor::randn({4, 2, 2, 2}, gen, dt, 0.0, 0.5);
    check_parity(label("conv_transpose2d 2x2 stride 2 groups 2", dt, x.shape()), {In(x, true, "x"), In(wg, true, "weight")},
                 [](const Ts& t) { return retort::conv_transpose2d(t[0], t[1], Tensor(), 2, 0, 0, 2); }, Kind::Gemm,
                 Kind::Gemm);
  }
}

// ---- batch norm -------------------------------------------------------------------------------------

TEST(CudaParity, BatchNorm) {
  REQUIRE_GPU();
  Generator gen(10);
  for (DType dt : kFloatTypes)
    // {2, 3, 32, 32}: planes of S >= 512 values take the kernel's row-by-row sweep (norm.cu for_channel).
    for (const Shape& s : std::vector<Shape>{{4, 3, 5, 6}, {16, 7}, {3, 5, 11}, {8, 32, 16, 16}, {2, 3, 32, 32}})
      for (bool training : {true, false})
        for (bool fused_relu : {false, true})
          for (bool affine : {true, false})
            for (bool running : {true, false}) {
              if (!training && !running) continue;  // evaluation needs running statistics
              const int64_t c = s[1];
              const Tensor x = Tensor::randn(s, gen, dt, 0.5, 2.0);
              const Tensor w = affine ? Tensor::rand({c}, gen, dt, 0.5, 1.5) : Tensor();
              const Tensor b = affine ? Tensor::randn({c}, gen, dt, 0.0, 0.3) : Tensor();
              const Tensor rm = running ? Tensor::randn({c}, gen, dt, 0.0, 0.2) : Tensor();
              const Tensor rv = running ? Tensor::rand({c}, gen, dt, 0.5, 1.5) : Tensor();
              const std::string name = std::string(fused_relu ? "batch_norm_relu" : "batch_norm") +
                                       (training ? " train" : " eval") + (affine ? "" : " no affine") +
                                       (running ? "" : " no running stats");
              const Fn f = [training, fused_relu](const Ts& t) {
                return fused_relu ? retort::batch_norm_relu(t[0], t[1], t[2], t[3], t[4], training, 0.1, 1e-5)
                                  : retort::batch_norm(t[0], t[1], t[2], t[3], t[4], training, 0.1, 1e-5);
              };
              check_parity(label(name, dt, s),
                           {In(x, true, "x"), fixed(rm, "running_mean"), fixed(rv, "running_var"),
                            In(w, true, "weight"), In(b, true, "bias")},
                           f, Kind::Reduction, Kind::Reduction);
            }
  // Momentum and eps other than the defaults; a frozen affine (only the input gradient).
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({6, 4, 3, 3}, gen, dt), w = Tensor::rand({4}, gen, dt, 0.5, 1.5),
                 b = Tensor::randn({4}, gen, dt), rm = Tensor::zeros({4}, dt), rv = Tensor::ones({4}, dt);
    check_parity(label("batch_norm train momentum 0.3 eps 1e-3 frozen affine", dt, x.shape()),
                 {In(x, true, "x"), fixed(rm, "running_mean"), fixed(rv, "running_var"), fixed(w, "weight"),
                  fixed(b, "bias")},
                 [](const Ts& t) { return retort::batch_norm(t[0], t[1], t[2], t[3], t[4], true, 0.3, 1e-3); },
                 Kind::Reduction, Kind::Reduction);
  }
}

// ---- pooling and resampling -------------------------------------------------------------------------

TEST(CudaParity, Pooling) {
  REQUIRE_GPU();
  struct Case {
    const char* name;
    Pool2dParams p;
  };
  const std::vector<Case> cases = {
      {"2x2 stride 2", pool_params(2, 2, 2, 2, 0, 0)},
      {"3x3 stride 2 pad 1", pool_params(3, 3, 2, 2, 1, 1)},
      {"3x3 stride 2 pad 1 exclude pad", pool_params(3, 3, 2, 2, 1, 1, false)},
      {"3x3 stride 1 pad 1", pool_params(3, 3, 1, 1, 1, 1)},
      {"3x3 stride 1 pad 1 exclude pad", pool_params(3, 3, 1, 1, 1, 1, false)},
      {"2x3 stride (1,2) pad (1,1)", pool_params(2, 3, 1, 2, 1, 1)},
      {"2x3 stride (1,2) pad (1,1) exclude pad", pool_params(2, 3, 1, 2, 1, 1, false)},
      {"4x4 stride 3", pool_params(4, 4, 3, 3, 0, 0)},
      {"2x2 stride 3 pad 1 (gaps between windows)", pool_params(2, 2, 3, 3, 1, 1)},
  };
  Generator gen(11);
  for (DType dt : kFloatTypes)
    for (const Shape& s : std::vector<Shape>{{2, 3, 8, 8}, {2, 2, 7, 9}}) {
      const Tensor x = Tensor::randn(s, gen, dt);
      for (const Case& c : cases) {
        const Pool2dParams p = c.p;
        // The backward gathers in the CPU's scatter order, so even overlapping windows (several
        // gradients summed into one input) match bit for bit.
        check_parity(label(std::string("max_pool2d ") + c.name, dt, s), {x},
                     [p](const Ts& t) { return retort::max_pool2d(t[0], p); }, Kind::Exact, Kind::Exact);
        check_parity(label(std::string("avg_pool2d ") + c.name, dt, s), {x},
                     [p](const Ts& t) { return retort::avg_pool2d(t[0], p); }, Kind::Reduction, Kind::Reduction);
      }
      check_parity(label("max_pool2d(3, 2, 1) shorthand", dt, s), {x},
                   [](const Ts& t) { return retort::max_pool2d(t[0], 3, 2, 1); }, Kind::Exact, Kind::Exact);
      check_parity(label("avg_pool2d(2) shorthand", dt, s), {x},
                   [](const Ts& t) { return retort::avg_pool2d(t[0], 2); }, Kind::Reduction, Kind::Reduction);
      for (const auto& [oh, ow] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 3}, {2, 4}, {4, 4}, {5, 11}})
        check_parity(label("adaptive_avg_pool2d -> " + std::to_string(oh) + "x" + std::to_string(ow), dt, s), {x},
                     [oh = oh, ow = ow](const Ts& t) { return retort::adaptive_avg_pool2d(t[0], oh, ow); },
                     Kind::Reduction, Kind::Reduction);
      for (const auto& [oh, ow] : std::vector<std::pair<int64_t, int64_t>>{{16, 16}, {3, 4}, {11, 5}, {1, 1}, {8, 9}})
        check_parity(label("interpolate_nearest -> " + std::to_string(oh) + "x" + std::to_string(ow), dt, s), {x},
                     [oh = oh, ow = ow](const Ts& t) { return retort::interpolate_nearest(t[0], oh, ow); },
                     Kind::Exact, Kind::Reduction);
    }
  // Ties (a constant plane, and one of -inf): every window keeps its first maximum, so the gradient
  // goes to the same input on both devices, and overlapping windows pile several onto one.
  for (DType dt : kFloatTypes)
    for (double v : {0.5, -std::numeric_limits<double>::infinity()}) {
      const Tensor x = Tensor::full({2, 3, 7, 7}, v, dt);
      for (const Case& c : cases) {
        const Pool2dParams p = c.p;
        check_parity(label(std::string("max_pool2d of a constant ") + std::to_string(v) + ", " + c.name, dt, x.shape()),
                     {x}, [p](const Ts& t) { return retort::max_pool2d(t[0], p); }, Kind::Exact, Kind::Exact);
      }
    }
  // 7x7 -> 1x1 (ResNet's head) on more channels.
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({8, 64, 7, 7}, gen, dt);
    check_parity(label("adaptive_avg_pool2d -> 1x1", dt, x.shape()), {x},
                 [](const Ts& t) { return retort::adaptive_avg_pool2d(t[0], 1, 1); }, Kind::Reduction, Kind::Reduction);
  }
}

TEST(CudaParity, GridSample) {
  REQUIRE_GPU();
  Generator gen(12);
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({2, 3, 6, 7}, gen, dt);
    // Positions beyond [-1, 1] exercise the zero padding.
    const Tensor grid = Tensor::rand({2, 5, 4, 2}, gen, dt, -1.2, 1.2);
    check_parity(label("grid_sample", dt, x.shape()), {In(x, true, "x"), In(grid, true, "grid")},
                 [](const Ts& t) { return retort::grid_sample(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("grid_sample (frozen grid)", dt, x.shape()), {In(x, true, "x"), fixed(grid, "grid")},
                 [](const Ts& t) { return retort::grid_sample(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("grid_sample (frozen input)", dt, x.shape()), {fixed(x, "x"), In(grid, true, "grid")},
                 [](const Ts& t) { return retort::grid_sample(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    // affine_grid + grid_sample (SoKD's feature augmentation): theta near the identity.
    std::vector<double> th;
    for (int n = 0; n < 2; ++n)
      for (double v : {1.0, 0.0, 0.0, 0.0, 1.0, 0.0}) th.push_back(v + 0.2 * gen.normal());
    const Tensor theta = Tensor::from_vector(th, {2, 2, 3}, dt);
    const Tensor f = Tensor::randn({2, 4, 8, 8}, gen, dt);
    check_parity(label("grid_sample(affine_grid)", dt, f.shape()), {In(f, true, "x"), In(theta, true, "theta")},
                 [](const Ts& t) { return retort::grid_sample(t[0], retort::affine_grid(t[1], 6, 7)); }, Kind::Reduction,
                 Kind::Reduction);
    // A larger map, upsampling.
    const Tensor big = Tensor::randn({2, 16, 12, 12}, gen, dt);
    const Tensor grid2 = Tensor::rand({2, 20, 20, 2}, gen, dt, -1.0, 1.0);
    check_parity(label("grid_sample upsampling", dt, big.shape()), {In(big, true, "x"), In(grid2, true, "grid")},
                 [](const Ts& t) { return retort::grid_sample(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
  }
}

// ---- softmax family and losses ----------------------------------------------------------------------

TEST(CudaParity, Softmax) {
  REQUIRE_GPU();
  Generator gen(13);
  for (DType dt : kFloatTypes) {
    const std::vector<std::pair<Shape, double>> inputs = {{{4, 5, 6}, 1.0}, {{2, 1000}, 10.0}, {{3, 4099}, 3.0},
                                                          {{5, 8}, 50.0},   {{1}, 1.0},        {{300, 2}, 1.0}};
    for (const auto& [s, scale] : inputs) {
      const Tensor x = Tensor::randn(s, gen, dt, 0.0, scale);
      std::vector<int64_t> dims;
      for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) dims.push_back(d);
      dims.push_back(-1);
      for (int64_t d : dims) {
        const std::string suffix = " dim " + std::to_string(d) + " scale " + std::to_string(static_cast<int>(scale));
        check_parity(label("softmax" + suffix, dt, s), {x}, [d](const Ts& t) { return retort::softmax(t[0], d); },
                     Kind::Reduction, Kind::Reduction);
        check_parity(label("log_softmax" + suffix, dt, s), {x},
                     [d](const Ts& t) { return retort::log_softmax(t[0], d); }, Kind::Reduction, Kind::Reduction);
      }
    }
  }
}

TEST(CudaParity, Losses) {
  REQUIRE_GPU();
  Generator gen(14);
  for (DType dt : kFloatTypes) {
    for (const auto& [n, c, scale] : std::vector<std::tuple<int64_t, int64_t, double>>{
             {8, 10, 1.0}, {64, 1000, 5.0}, {1, 3, 1.0}, {33, 2, 20.0}, {4, 3000, 3.0}}) {  // 3000: block-wide rows
      const Tensor logits = Tensor::randn({n, c}, gen, dt, 0.0, scale);
      const Tensor targets = labels(n, c, gen);
      for (double s : {0.0, 0.1, 1.0}) {
        check_parity(label("cross_entropy smoothing " + std::to_string(s), dt, {n, c}),
                     {In(logits, true, "logits"), fixed(targets, "targets")},
                     [s](const Ts& t) { return retort::cross_entropy(t[0], t[1], s); }, Kind::Reduction, Kind::Reduction);
      }
    }
    // kl_div on log-probabilities and probabilities made inside the graph (both differentiable), as
    // Hinton KD uses it: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).
    const Tensor zs = Tensor::randn({16, 100}, gen, dt, 0.0, 3.0), zt = Tensor::randn({16, 100}, gen, dt, 0.0, 3.0);
    check_parity(label("kl_div(log_softmax, softmax)", dt, zs.shape()), {In(zs, true, "student"), In(zt, true, "teacher")},
                 [](const Ts& t) { return retort::kl_div(retort::log_softmax(t[0], 1), retort::softmax(t[1], 1)); },
                 Kind::Reduction, Kind::Reduction);
    check_parity(label("KD loss T=4 (kl_div composite)", dt, zs.shape()), {In(zs, true, "student"), In(zt, true, "teacher")},
                 [](const Ts& t) {
                   const double T = 4.0;
                   return retort::kl_div(retort::log_softmax(t[0] / T, 1), retort::softmax(t[1] / T, 1)) * (T * T);
                 },
                 Kind::Reduction, Kind::Reduction);
    // The logit distillation nodes (host route for GPU tensors, distill/nodes/logit.cpp): gradients
    // must arrive on the device, equal to the CPU node's.
    const Tensor ys = labels(16, 100, gen);
    check_parity(label("kd_loss T=4 (fused node)", dt, zs.shape()), {In(zs, true, "student"), In(zt, true, "teacher")},
                 [](const Ts& t) { return retort::kd_loss(t[0], t[1], 4.0); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("dkd_loss", dt, zs.shape()),
                 {In(zs, true, "student"), In(zt, true, "teacher"), fixed(ys, "targets")},
                 [](const Ts& t) { return retort::dkd_loss(t[0], t[1], t[2], 1.0, 8.0, 4.0); }, Kind::Reduction,
                 Kind::Reduction);
    check_parity(label("zscore", dt, zs.shape()), {In(zs, true, "logits")},
                 [](const Ts& t) { return retort::zscore(t[0], 1e-7); }, Kind::Reduction, Kind::Reduction);
    // Targets with exact zeros (their terms contribute 0), fixed.
    const Tensor input = Tensor::randn({6, 9}, gen, dt), target = retort::relu(Tensor::randn({6, 9}, gen, dt));
    check_parity(label("kl_div with zero targets", dt, input.shape()), {In(input, true, "input"), fixed(target, "target")},
                 [](const Ts& t) { return retort::kl_div(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    const Tensor a = Tensor::randn({5, 7, 3}, gen, dt), b = Tensor::randn({5, 7, 3}, gen, dt);
    check_parity(label("mse_loss", dt, a.shape()), {In(a, true, "a"), In(b, true, "b")},
                 [](const Ts& t) { return retort::mse_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("smooth_l1_loss beta 0.5", dt, a.shape()), {In(a, true, "a"), In(b, true, "b")},
                 [](const Ts& t) { return retort::smooth_l1_loss(t[0], t[1], 0.5); }, Kind::Reduction,
                 Kind::Reduction);
    // dropout draws its mask on the host from the Generator: one seed, one mask on every device.
    for (double p : {0.3, 0.9})
      check_parity(label("dropout p " + std::to_string(p), dt, a.shape()), {a},
                   [p](const Ts& t) {
                     Generator g(77);
                     return retort::dropout(t[0], p, true, g);
                   },
                   Kind::Elementwise, Kind::Elementwise);
  }
}

// The feature-distillation losses (distill/nodes/feature.h) are built from engine functions and run on
// either device. (kd_loss / dkd_loss / zscore are compared in Losses: they take the host route.)
TEST(CudaParity, FeatureDistillationLosses) {
  REQUIRE_GPU();
  Generator gen(15);
  for (DType dt : kFloatTypes) {
    const Tensor fs = Tensor::randn({2, 4, 8, 8}, gen, dt), ft = Tensor::randn({2, 6, 4, 4}, gen, dt),
                 ft_same = Tensor::randn({2, 4, 8, 8}, gen, dt);
    check_parity(label("attention_map p=2", dt, fs.shape()), {fs},
                 [](const Ts& t) { return retort::attention_map(t[0], 2.0); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("attention_map p=3", dt, fs.shape()), {fs},
                 [](const Ts& t) { return retort::attention_map(t[0], 3.0); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("at_loss (pooled student)", dt, fs.shape()), {In(fs, true, "student"), In(ft, true, "teacher")},
                 [](const Ts& t) { return retort::at_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("cwd_loss tau 4", dt, fs.shape()), {In(fs, true, "student"), In(ft_same, true, "teacher")},
                 [](const Ts& t) { return retort::cwd_loss(t[0], t[1], 4.0); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("hcl_loss", dt, fs.shape()), {In(fs, true, "student"), In(ft_same, true, "teacher")},
                 [](const Ts& t) { return retort::hcl_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("nst_loss (pooled student, channels differ)", dt, fs.shape()),
                 {In(fs, true, "student"), In(ft, true, "teacher")},
                 [](const Ts& t) { return retort::nst_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    const Tensor log_scale = Tensor::rand({4}, gen, dt, -2.0, 5.0);
    check_parity(label("vid_loss", dt, fs.shape()),
                 {In(fs, true, "prediction"), In(ft_same, true, "target"), In(log_scale, true, "log_scale")},
                 [](const Ts& t) { return retort::vid_loss(t[0], t[1], t[2]); }, Kind::Reduction, Kind::Reduction);
    const Tensor margin = Tensor::rand({4}, gen, dt, -1.0, -0.2);
    check_parity(label("ofd_loss", dt, fs.shape()),
                 {In(fs, true, "student"), In(ft_same, true, "teacher"), fixed(margin, "margin")},
                 [](const Ts& t) { return retort::ofd_loss(t[0], t[1], t[2]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("ab_loss", dt, fs.shape()), {In(fs, true, "student"), fixed(ft_same, "teacher")},
                 [](const Ts& t) { return retort::ab_loss(t[0], t[1], 0.5); }, Kind::Reduction, Kind::Reduction);
    // FSP: the flow from fs (8x8, pooled) into ft (4x4); the loss with the student's pair at 8x8/4x4
    // and the teacher's at 4x4/4x4 (the teacher's pair fixed).
    check_parity(label("fsp_matrix (bot pooled)", dt, fs.shape()), {In(fs, true, "bot"), In(ft, true, "top")},
                 [](const Ts& t) { return retort::fsp_matrix(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    const Tensor tb = Tensor::randn({2, 4, 4, 4}, gen, dt), tt = Tensor::randn({2, 6, 4, 4}, gen, dt);
    check_parity(label("fsp_loss", dt, fs.shape()),
                 {In(fs, true, "student bot"), In(ft, true, "student top"), fixed(tb, "teacher bot"), fixed(tt, "teacher top")},
                 [](const Ts& t) { return retort::fsp_loss(t[0], t[1], t[2], t[3]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("ft_loss (pooled student)", dt, fs.shape()), {In(fs, true, "student"), In(ft, true, "teacher")},
                 [](const Ts& t) { return retort::ft_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    // KDSVD over fs and a second stage, in both views: Gram matrices, eigh (cuSOLVER), alignment,
    // kernels; the teacher's maps fixed. Width: 8 then 4 columns; channels: 4 then 6.
    const Tensor s2 = Tensor::randn({2, 5, 4, 4}, gen, dt), t1 = Tensor::randn({2, 3, 6, 8}, gen, dt);
    check_parity(label("kdsvd_loss width k 1", dt, fs.shape()),
                 {In(fs, true, "student stage 0"), In(s2, true, "student stage 1"), fixed(t1, "teacher stage 0"),
                  fixed(ft, "teacher stage 1")},
                 [](const Ts& t) { return retort::kdsvd_loss({t[0], t[1]}, {t[2], t[3]}, 1, retort::KdsvdView::Width); },
                 Kind::Gemm, Kind::Gemm);
    const Tensor s6 = Tensor::randn({2, 6, 4, 4}, gen, dt), t4 = Tensor::randn({2, 4, 4, 4}, gen, dt),
                 t6 = Tensor::randn({2, 6, 2, 2}, gen, dt);
    check_parity(label("kdsvd_loss channels k 2", dt, fs.shape()),
                 {In(fs, true, "student stage 0"), In(s6, true, "student stage 1"), fixed(t4, "teacher stage 0"),
                  fixed(t6, "teacher stage 1")},
                 [](const Ts& t) { return retort::kdsvd_loss({t[0], t[1]}, {t[2], t[3]}, 2, retort::KdsvdView::Channels); },
                 Kind::Gemm, Kind::Gemm);
  }
}

// The relation losses (distill/nodes/relation.h): matmuls, reductions and elementwise engine functions
// on either device; embeddings of different widths, as a student's and a teacher's are.
TEST(CudaParity, RelationDistillationLosses) {
  REQUIRE_GPU();
  Generator gen(17);
  for (DType dt : kFloatTypes) {
    const Tensor es = Tensor::randn({16, 32}, gen, dt), et = Tensor::randn({16, 48}, gen, dt),
                 fs = Tensor::randn({16, 4, 4, 4}, gen, dt);
    check_parity(label("sp_loss", dt, fs.shape()), {In(fs, true, "student"), In(et, true, "teacher")},
                 [](const Ts& t) { return retort::sp_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("pkt_loss", dt, es.shape()), {In(es, true, "student"), In(et, true, "teacher")},
                 [](const Ts& t) { return retort::pkt_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("rkd_distances", dt, es.shape()), {es},
                 [](const Ts& t) { return retort::rkd_distances(t[0]); }, Kind::Reduction, Kind::Reduction);
    check_parity(label("rkd_angles", dt, es.shape()), {es}, [](const Ts& t) { return retort::rkd_angles(t[0]); },
                 Kind::Reduction, Kind::Reduction);
    check_parity(label("rkd_loss 25 / 50", dt, es.shape()), {In(es, true, "student"), fixed(et, "teacher")},
                 [](const Ts& t) { return retort::rkd_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    const Tensor es2 = Tensor::randn({16, 32}, gen, dt);
    check_parity(label("cc_loss", dt, es.shape()), {In(es, true, "student"), In(es2, true, "teacher")},
                 [](const Ts& t) { return retort::cc_loss(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    // CRD (distill/nodes/contrast.h): a memory read at host indices against unit embeddings, the NCE loss.
    const Tensor memory = Tensor::rand({200, 32}, gen, dt, -0.3, 0.3), v = retort::l2_normalize_rows(es);
    std::vector<int64_t> rows(16 * 65);
    for (auto& r : rows) r = static_cast<int64_t>(gen.uniform() * 200) % 200;
    const Tensor idx = Tensor::from_int64(rows, {16, 65});
    check_parity(label("contrast_scores + nce_loss", dt, v.shape()), {In(v, true, "embeddings"), fixed(memory, "memory")},
                 [idx](const Ts& t) {
                   return retort::nce_loss(retort::affine(retort::contrast_scores(t[1], idx, t[0], 0.07), 1e-3, 0.0), 200);
                 },
                 Kind::Reduction, Kind::Reduction);
    check_parity(label("l2_normalize_rows", dt, es.shape()), {es},
                 [](const Ts& t) { return retort::l2_normalize_rows(t[0]); }, Kind::Reduction, Kind::Reduction);
  }
}

// The seed methods' nodes (distill/nodes/logit.h generous_teacher_loss, stage.h, sokd.h): compositions
// of engine functions, or the host route (permute_channels, dam_regions, the logit nodes) — the same
// values and gradients on either device, gradients arriving on the device.
TEST(CudaParity, SeedMethodNodes) {
  REQUIRE_GPU();
  Generator gen(16);
  for (DType dt : kFloatTypes) {
    const Tensor zg = Tensor::randn({16, 100}, gen, dt, 0.0, 3.0), zs = Tensor::randn({16, 100}, gen, dt, 0.0, 3.0);
    const Tensor ys = labels(16, 100, gen);
    check_parity(label("generous_teacher_loss teacher_correct", dt, zg.shape()),
                 {In(zg, true, "generous"), In(zs, true, "standard"), fixed(ys, "targets")},
                 [](const Ts& t) { return retort::generous_teacher_loss(t[0], t[1], t[2], 2.0, 0.5, true); },
                 Kind::Reduction, Kind::Reduction);
    const Tensor z1 = Tensor::randn({8, 10}, gen, dt), z2 = Tensor::randn({8, 10}, gen, dt),
                 z3 = Tensor::randn({8, 10}, gen, dt);
    check_parity(label("cross_stage_review_loss", dt, z1.shape()), {z1, z2, z3},
                 [](const Ts& t) {
                   return retort::cross_stage_review_loss({t[0], t[1], t[2]}, {t[0], t[1], t[2]},
                                                          retort::review_pairs(3, false, true), 4.0);
                 },
                 Kind::Reduction, Kind::Reduction);
    const Tensor f = Tensor::randn({2, 6, 8, 8}, gen, dt), f2 = Tensor::randn({2, 6, 4, 4}, gen, dt);
    check_parity(label("channel_distill_loss", dt, f.shape()), {f, f2},
                 [](const Ts& t) { return retort::channel_distill_loss(t[0], t[1]); }, Kind::Reduction,
                 Kind::Reduction);
    check_parity(label("permute_channels", dt, f.shape()), {f},
                 [](const Ts& t) { return retort::permute_channels(t[0], {5, 3, 0, 1, 4, 2}); }, Kind::Elementwise,
                 Kind::Elementwise);
    for (int i = 0; i < retort::kNumFeatureOps; ++i) {
      const auto op = static_cast<retort::FeatureOp>(i);
      check_parity(label(std::string("apply_feature_op ") + retort::feature_op_name(op), dt, f.shape()), {f},
                   [op](const Ts& t) {
                     Generator g(5);
                     return retort::apply_feature_op(t[0], op, retort::feature_op_value(op, 0.8), g);
                   },
                   Kind::Reduction, Kind::Reduction);
    }
    const Tensor mask = retort::relu(Tensor::randn({2, 8, 8}, gen, dt));
    check_parity(label("masked_feature_mse", dt, f.shape()), {f, Tensor::randn({2, 6, 8, 8}, gen, dt), fixed(mask, "mask")},
                 [](const Ts& t) { return retort::masked_feature_mse(t[0], t[1], t[2]); }, Kind::Reduction,
                 Kind::Reduction);
    // dam_regions on the device equals the CPU's (the host route), mask and boxes.
    const Tensor heat = retort::sigmoid(Tensor::randn({2, 10, 8, 8}, gen, dt)), wh = retort::relu(Tensor::randn({2, 2, 8, 8}, gen, dt)),
                 off = retort::relu(Tensor::randn({2, 2, 8, 8}, gen, dt));
    const retort::DamRegions cpu = retort::dam_regions(heat, wh, off, 8);
    const retort::DamRegions gpu = retort::dam_regions(heat.to(kCuda), wh.to(kCuda), off.to(kCuda), 8);
    EXPECT_EQ(gpu.mask.device(), kCuda);
    EXPECT_TRUE(retort::testing::close_to("dam mask", gpu.mask.to(Device::cpu()), cpu.mask, 0, 0));
    EXPECT_TRUE(retort::testing::close_to("dam boxes", gpu.boxes.to(Device::cpu()).to(DType::F64),
                                          cpu.boxes.to(DType::F64), 0, 0));
  }
}

// ---- fill and cast ----------------------------------------------------------------------------------

TEST(CudaParity, FillAndCast) {
  REQUIRE_GPU();
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  for (DType dt : {DType::F32, DType::F64, DType::I64})
    for (double v : {0.0, 1.0, -2.5, 0.1, 1e30, 3.0e-39}) {
      if (dt == DType::I64 && std::abs(v) > 1e15) continue;
      const std::string name = std::string("full ") + dtype_name(dt) + " " + std::to_string(v);
      EXPECT_TRUE(tensors_close(name, "output", Tensor::full({3, 17}, v, dt), Tensor::full({3, 17}, v, dt, kCuda), Kind::Exact));
    }
  for (DType dt : kFloatTypes)
    for (double v : {inf, -inf, nan})
      EXPECT_TRUE(tensors_close(std::string("full ") + dtype_name(dt) + " " + std::to_string(v), "output",
                                Tensor::full({5}, v, dt), Tensor::full({5}, v, dt, kCuda), Kind::Exact));
  for (DType dt : {DType::F32, DType::F64, DType::I64}) {
    EXPECT_TRUE(tensors_close("zeros", "output", Tensor::zeros({1000, 3}, dt), Tensor::zeros({1000, 3}, dt, kCuda), Kind::Exact));
    EXPECT_TRUE(tensors_close("ones", "output", Tensor::ones({1000, 3}, dt), Tensor::ones({1000, 3}, dt, kCuda), Kind::Exact));
    EXPECT_TRUE(tensors_close("scalar", "output", Tensor::scalar(7, dt), Tensor::scalar(7, dt, kCuda), Kind::Exact));
    EXPECT_TRUE(tensors_close("full (large)", "output", Tensor::full({(1 << 20) + 5}, 3, dt),
                              Tensor::full({(1 << 20) + 5}, 3, dt, kCuda), Kind::Exact));
  }

  // Casts: rounding F64 -> F32 (ties, a subnormal, overflow to inf), truncation toward zero to I64,
  // and back. Float -> float casts are differentiable; their gradients are cast back.
  const std::vector<double> values = {0.0,  -0.0, 1.0, -1.0, 2.5, -2.5, 2.7, -2.7, 1e-3, 123456.789, -98765.4321,
                                      1.0 + std::ldexp(1.0, -24), 1.0 + std::ldexp(1.0, -30), 1e-40, 1e-310,
                                      3.4e38, 1e39, 16777217.0, 9007199254740993.0, -7.5e12};
  Generator gen(16);
  for (DType from : kFloatTypes)
    for (DType to : {DType::F32, DType::F64, DType::I64}) {
      if (from == to) continue;
      std::vector<double> v = values;
      if (to == DType::I64 || from == DType::F32)  // keep I64 conversions in range (1e39 overflows an int64)
        v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::abs(x) > 1e30; }), v.end());
      const Tensor x = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, from);
      check_parity(std::string("to ") + dtype_name(to) + " from " + dtype_name(from), {x},
                   [to](const Ts& t) { return t[0].to(to); }, Kind::Exact, Kind::Exact);
      const Tensor r = Tensor::randn({1000, 7}, gen, from, 0.0, 100.0);
      check_parity(std::string("to ") + dtype_name(to) + " from " + dtype_name(from) + " (random)", {r},
                   [to](const Ts& t) { return t[0].to(to); }, Kind::Exact, Kind::Exact);
    }
  // Floats no int64 holds: both devices give float_to_int64's NaN -> 0 and saturation (engine/dtype.h).
  for (DType from : kFloatTypes) {
    const double inf = std::numeric_limits<double>::infinity();
    const Tensor odd = Tensor::from_vector({std::nan(""), inf, -inf, 1e30, -1e30, -3e19, 3e19}, {7}, from);
    EXPECT_TRUE(tensors_close(std::string("to i64 from ") + dtype_name(from) + " (out of range)", "output",
                              odd.to(DType::I64), odd.to(kCuda).to(DType::I64), Kind::Exact));
  }
  const Tensor ints = Tensor::from_int64({0, 1, -1, 7, -123456789, 16777217, int64_t{1} << 53, (int64_t{1} << 53) + 1}, {8});
  for (DType to : kFloatTypes)
    check_parity(std::string("to ") + dtype_name(to) + " from i64", {ints}, [to](const Ts& t) { return t[0].to(to); },
                 Kind::Exact, Kind::Exact);
}

// Row lookups (engine/functions/index.h): bit-exact copies of whole rows either way.
TEST(CudaParity, GatherAndScatterRows) {
  REQUIRE_GPU();
  Generator gen(18);
  for (DType dt : kFloatTypes) {
    const Tensor table = Tensor::randn({1000, 37}, gen, dt);
    std::vector<int64_t> idx(5000);
    for (auto& i : idx) i = static_cast<int64_t>(gen.uniform() * 1000) % 1000;
    const Tensor indices = Tensor::from_int64(idx, {50, 100});
    EXPECT_TRUE(tensors_close(std::string("gather_rows ") + dtype_name(dt), "output", gather_rows(table, indices),
                              gather_rows(table.to(kCuda), indices), Kind::Exact));
    // Distinct indices for the scatter: a shuffled prefix of 0..999.
    std::vector<int64_t> perm(1000);
    for (int64_t i = 0; i < 1000; ++i) perm[i] = i;
    for (int64_t i = 999; i > 0; --i) std::swap(perm[i], perm[static_cast<int64_t>(gen.uniform() * (i + 1)) % (i + 1)]);
    perm.resize(300);
    const Tensor where = Tensor::from_int64(perm, {300}), rows = Tensor::randn({300, 37}, gen, dt);
    Tensor on_cpu = table.clone(), on_gpu = table.to(kCuda);
    scatter_rows_(on_cpu, where, rows);
    scatter_rows_(on_gpu, where, rows.to(kCuda));
    EXPECT_TRUE(tensors_close(std::string("scatter_rows ") + dtype_name(dt), "table", on_cpu, on_gpu, Kind::Exact));
  }
}

// ---- optimizer steps --------------------------------------------------------------------------------

// The fused kernels through the Backend interface, several steps with fresh gradients each time.
TEST(CudaParity, SgdStepKernel) {
  REQUIRE_GPU();
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(kCuda);
  struct Case {
    const char* name;
    SgdStepArgs a;
  };
  auto args = [](double lr, double wd, double momentum, double dampening, bool nesterov) {
    SgdStepArgs a;
    a.lr = lr;
    a.weight_decay = wd;
    a.momentum = momentum;
    a.dampening = dampening;
    a.nesterov = nesterov;
    return a;
  };
  const std::vector<Case> cases = {
      {"plain", args(0.1, 0, 0, 0, false)},
      {"weight decay", args(0.05, 1e-2, 0, 0, false)},
      {"momentum", args(0.1, 0, 0.9, 0, false)},
      {"momentum dampening weight decay", args(0.1, 5e-4, 0.9, 0.1, false)},
      {"nesterov weight decay", args(0.1, 1e-4, 0.9, 0, true)},
  };
  Generator gen(17);
  for (DType dt : kFloatTypes)
    for (const Case& c : cases)
      for (const Shape& s : std::vector<Shape>{{37, 5}, {(1 << 18) + 1}}) {
        const std::string name = label(std::string("sgd_step ") + c.name, dt, s);
        SCOPED_TRACE(name);
        const bool mom = c.a.momentum != 0;
        const Tensor p0 = Tensor::randn(s, gen, dt);
        Tensor pc = p0.clone(), pg = p0.to(kCuda);
        Tensor bc = mom ? Tensor::zeros(s, dt) : Tensor(), bg = mom ? Tensor::zeros(s, dt, kCuda) : Tensor();
        for (int step = 1; step <= 5; ++step) {
          const Tensor g = Tensor::randn(s, gen, dt);
          SgdStepArgs a = c.a;
          a.first = step == 1;
          cpu.sgd_step(pc, g, bc, a);
          gpu.sgd_step(pg, g.to(kCuda), bg, a);
          const std::string at = name + " step " + std::to_string(step);
          EXPECT_TRUE(tensors_close(at, "param", pc, pg, Kind::Elementwise));
          if (mom) {
            EXPECT_TRUE(tensors_close(at, "momentum_buffer", bc, bg, Kind::Elementwise));
          }
        }
      }
}

TEST(CudaParity, AdamStepKernel) {
  REQUIRE_GPU();
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(kCuda);
  struct Case {
    const char* name;
    double lr, wd, beta1, beta2, eps;
    bool decoupled;
  };
  const std::vector<Case> cases = {
      {"adam", 1e-3, 0, 0.9, 0.999, 1e-8, false},
      {"adam l2", 1e-2, 1e-2, 0.9, 0.999, 1e-8, false},
      {"adamw", 1e-3, 1e-2, 0.9, 0.999, 1e-8, true},
      {"adamw beta1 0.3 (lerp's other side)", 5e-3, 0.05, 0.3, 0.9, 1e-6, true},
  };
  Generator gen(18);
  for (DType dt : kFloatTypes)
    for (const Case& c : cases)
      for (const Shape& s : std::vector<Shape>{{37, 5}, {(1 << 18) + 1}}) {
        const std::string name = label(std::string("adam_step ") + c.name, dt, s);
        SCOPED_TRACE(name);
        const Tensor p0 = Tensor::randn(s, gen, dt);
        Tensor pc = p0.clone(), pg = p0.to(kCuda);
        Tensor mc = Tensor::zeros(s, dt), vc = Tensor::zeros(s, dt);
        Tensor mg = Tensor::zeros(s, dt, kCuda), vg = Tensor::zeros(s, dt, kCuda);
        for (int step = 1; step <= 6; ++step) {
          const Tensor g = Tensor::randn(s, gen, dt);
          AdamStepArgs a;  // as Adam::update computes them
          a.decay_factor = c.decoupled ? 1.0 - c.lr * c.wd : 1.0;
          a.l2 = c.decoupled ? 0.0 : c.wd;
          a.beta1 = c.beta1;
          a.beta2 = c.beta2;
          a.eps = c.eps;
          a.step_size = c.lr / (1.0 - std::pow(c.beta1, step));
          a.bc2_sqrt = std::sqrt(1.0 - std::pow(c.beta2, step));
          cpu.adam_step(pc, g, mc, vc, a);
          gpu.adam_step(pg, g.to(kCuda), mg, vg, a);
          const std::string at = name + " step " + std::to_string(step);
          EXPECT_TRUE(tensors_close(at, "param", pc, pg, Kind::Elementwise));
          EXPECT_TRUE(tensors_close(at, "exp_avg", mc, mg, Kind::Elementwise));
          EXPECT_TRUE(tensors_close(at, "exp_avg_sq", vc, vg, Kind::Elementwise));
        }
      }
}

// The optimizer classes on CPU parameters vs the same classes on CUDA parameters: parameters and every
// state tensor after several steps.
TEST(CudaParity, OptimizerClasses) {
  REQUIRE_GPU();
  struct Case {
    const char* name;
    std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)> make;
  };
  const std::vector<Case> cases = {
      {"SGD momentum nesterov wd",
       [](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
         SGDOptions o;
         o.momentum = 0.9;
         o.nesterov = true;
         return std::make_unique<SGD>(std::vector<ParamGroup>{{std::move(ps), 0.1, 5e-4}}, o);
       }},
      {"SGD momentum dampening",
       [](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
         SGDOptions o;
         o.momentum = 0.8;
         o.dampening = 0.2;
         return std::make_unique<SGD>(std::vector<ParamGroup>{{std::move(ps), 0.05, 0.0}}, o);
       }},
      {"SGD plain", [](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
         return std::make_unique<SGD>(std::vector<ParamGroup>{{std::move(ps), 0.1, 0.0}});
       }},
      {"Adam wd", [](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
         return std::make_unique<Adam>(std::vector<ParamGroup>{{std::move(ps), 1e-2, 1e-2}});
       }},
      {"AdamW wd", [](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
         return std::make_unique<AdamW>(std::vector<ParamGroup>{{std::move(ps), 1e-3, 1e-2}});
       }},
  };
  Generator gen(19);
  for (DType dt : kFloatTypes)
    for (const Case& c : cases) {
      const std::string name = std::string(c.name) + " " + dtype_name(dt);
      SCOPED_TRACE(name);
      const std::vector<Shape> shapes = {{8, 3, 3, 3}, {8}, {10, 72}};
      std::vector<Tensor> pc, pg;
      for (const Shape& s : shapes) {
        const Tensor p = Tensor::randn(s, gen, dt);
        pc.push_back(p.clone().set_requires_grad());
        pg.push_back(p.to(kCuda).set_requires_grad());
      }
      std::unique_ptr<Optimizer> oc = c.make(pc), og;
      try {
        og = c.make(pg);
      } catch (const Error& e) {
        // The optimizers run on any device (Backend::sgd_step / adam_step): a refusal is a failure, not a skip.
        FAIL() << "the optimizer classes refuse CUDA parameters: " << e.what();
      }
      for (int step = 1; step <= 4; ++step) {
        for (size_t i = 0; i < pc.size(); ++i) {
          const Tensor g = Tensor::randn(pc[i].shape(), gen, dt);
          pc[i].set_grad(g);
          pg[i].set_grad(g.to(kCuda));
        }
        oc->step();
        og->step();
        const std::string at = name + " step " + std::to_string(step);
        for (size_t i = 0; i < pc.size(); ++i)
          EXPECT_TRUE(tensors_close(at, "param " + std::to_string(i), pc[i], pg[i], Kind::Elementwise));
        const StateDict sc = oc->state_dict(), sg = og->state_dict();
        ASSERT_EQ(sc.size(), sg.size());
        for (size_t i = 0; i < sc.size(); ++i) {
          ASSERT_EQ(sc[i].first, sg[i].first);
          EXPECT_TRUE(tensors_close(at, sc[i].first, sc[i].second, sg[i].second.to(Device::cpu()), Kind::Elementwise));
        }
      }
    }
}

// ---- memory and infrastructure ----------------------------------------------------------------------

TEST(CudaInfra, DeviceRoundTripIsBitwise) {
  REQUIRE_GPU();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> specials = {0.0, -0.0, inf, -inf, std::numeric_limits<double>::quiet_NaN(), 1e-310,
                                        1e-40, std::numeric_limits<double>::max(), std::numeric_limits<double>::min(),
                                        -1.0 / 3.0};
  Generator gen(20);
  for (DType dt : kFloatTypes) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{1000}, int64_t{(1 << 20) + 3}}) {
      const Tensor x = Tensor::randn({n}, gen, dt);
      const Tensor back = x.to(kCuda).to(Device::cpu());
      EXPECT_TRUE(back.device().is_cpu());
      EXPECT_TRUE(bitwise_equal(x, back)) << dtype_name(dt) << " n " << n;
      // Device-to-device (clone) keeps every bit too.
      EXPECT_TRUE(bitwise_equal(x, x.to(kCuda).clone().to(Device::cpu()))) << dtype_name(dt) << " clone n " << n;
    }
    const Tensor s = Tensor::from_vector(specials, {static_cast<int64_t>(specials.size())}, dt);
    EXPECT_TRUE(bitwise_equal(s, s.to(kCuda).to(Device::cpu()))) << "special values " << dtype_name(dt);
    const Tensor z = Tensor::randn({}, gen, dt);
    EXPECT_TRUE(bitwise_equal(z, z.to(kCuda).to(Device::cpu()))) << "0-D " << dtype_name(dt);
  }
  const Tensor ints = Tensor::from_int64({0, -1, 1, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()}, {5});
  EXPECT_TRUE(bitwise_equal(ints, ints.to(kCuda).to(Device::cpu())));
  // The copy back to the CPU is differentiable.
  Tensor x = Tensor::randn({4, 3}, gen).to(kCuda).set_requires_grad();
  const Tensor h = x.to(Device::cpu());
  EXPECT_TRUE(h.requires_grad());
  h.backward(Tensor::ones({4, 3}));
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(x.grad().device() == kCuda);
  EXPECT_TRUE(bitwise_equal(x.grad(), Tensor::ones({4, 3})));
}

TEST(CudaInfra, OutOfMemoryIsAClearError) {
  REQUIRE_GPU();
  expect_error([] { Tensor::empty({int64_t{10'000'000'000'000}}, DType::F32, kCuda); }, {"out of memory", "cuda:0"});
  // The device stays usable afterwards.
  const Tensor y = retort::add(Tensor::ones({3}, DType::F32, kCuda), Tensor::ones({3}, DType::F32, kCuda));
  EXPECT_EQ(y.to_vector(), (std::vector<double>{2, 2, 2}));
}

TEST(CudaInfra, DeviceIndexBeyondTheCountIsAClearError) {
  REQUIRE_GPU();
  const int n = cuda_device_count();
  const std::string name = "cuda:" + std::to_string(n);
  expect_error([n] { Tensor::zeros({2}, DType::F32, Device::cuda(n)); }, {name.c_str()});
  expect_error([n] { Tensor::ones({2}).to(Device::cuda(n)); }, {name.c_str()});
  expect_error([n] { backend_for(Device::cuda(n + 3)); }, {("cuda:" + std::to_string(n + 3)).c_str()});
}

TEST(CudaInfra, MixingDevicesIsAClearError) {
  REQUIRE_GPU();
  const Tensor a = Tensor::ones({3}), b = Tensor::ones({3}, DType::F32, kCuda);
  expect_error([&] { retort::add(a, b); }, {"device mismatch", "cpu", "cuda:0"});
  expect_error([&] { retort::matmul(Tensor::ones({2, 3}), Tensor::ones({3, 2}, DType::F32, kCuda)); }, {"cuda:0"});
}

TEST(CudaInfra, SupportsEveryKernelInBothFloatTypes) {
  REQUIRE_GPU();
  Backend& gpu = backend_for(kCuda);
  EXPECT_TRUE(gpu.device() == kCuda);
  EXPECT_FALSE(gpu.name().empty());
  for (const char* k :
       {"fill", "cast", "unary", "binary", "reduce", "strided_copy", "gemm", "conv2d_forward", "conv2d_backward_input",
        "conv2d_backward_weight", "batchnorm_forward_train", "batchnorm_forward_eval", "batchnorm_backward",
        "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
        "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward", "upsample_nearest2d_forward",
        "upsample_nearest2d_backward", "grid_sample_forward", "grid_sample_backward", "softmax_forward",
        "softmax_backward", "cross_entropy_forward", "cross_entropy_backward", "sgd_step", "adam_step"})
    for (DType dt : kFloatTypes) EXPECT_TRUE(gpu.supports(k, dt)) << k << " " << dtype_name(dt);
  EXPECT_FALSE(gpu.supports("no_such_kernel", DType::F32));
}

#ifdef RETORT_WITH_CUDA

namespace {

// A small conv-BN-ReLU-pool-linear network; one forward + backward + SGD step on cuda:0.
struct TinyNet {
  std::vector<Tensor> params, buffers, momentum;
  Generator gen{21};
  TinyNet() {
    auto param = [&](const Shape& s, double sd) {
      params.push_back(Tensor::randn(s, gen, DType::F32, 0.0, sd).to(kCuda).set_requires_grad());
      momentum.push_back(Tensor::zeros(s, DType::F32, kCuda));
    };
    param({8, 3, 3, 3}, 0.3);  // conv
    param({8}, 0.1);           // bn weight
    param({8}, 0.1);           // bn bias
    param({10, 8}, 0.3);       // fc weight
    param({10}, 0.1);          // fc bias
    buffers = {Tensor::zeros({8}, DType::F32, kCuda), Tensor::ones({8}, DType::F32, kCuda)};
  }
  double step(int iteration) {
    for (Tensor& p : params) p.zero_grad();
    const Tensor x = Tensor::randn({8, 3, 16, 16}, gen).to(kCuda);
    const Tensor y = labels(8, 10, gen).to(kCuda);
    Tensor h = retort::conv2d(x, params[0], Tensor(), 1, 1);
    h = retort::batch_norm_relu(h, buffers[0], buffers[1], params[1], params[2], true);
    h = retort::max_pool2d(h, 2);
    h = retort::flatten(retort::adaptive_avg_pool2d(h, 1, 1), 1);
    const Tensor loss = retort::cross_entropy(retort::linear(h, params[3], params[4]), y, 0.1);
    loss.backward();
    NoGradGuard ng;
    Backend& be = backend_for(kCuda);
    SgdStepArgs a;
    a.lr = 0.1;
    a.momentum = 0.9;
    a.weight_decay = 5e-4;
    a.first = iteration == 0;
    for (size_t i = 0; i < params.size(); ++i) be.sgd_step(params[i], params[i].grad(), momentum[i], a);
    return loss.item();
  }
};

// Restores the global CUDA switches whatever happens in a test.
struct SwitchGuard {
  bool det = cuda::deterministic(), tf32 = cuda::allow_tf32();
  ~SwitchGuard() {
    cuda::set_deterministic(det);
    cuda::set_allow_tf32(tf32);
  }
};

}  // namespace

TEST(CudaInfra, WarmTrainingLoopMakesNoCudaMalloc) {
  REQUIRE_GPU();
  TinyNet net;
  const double first = net.step(0);  // warm-up: fills the caching allocator and the cuDNN workspace
  EXPECT_TRUE(std::isfinite(first));
  backend_for(kCuda).synchronize();
  const cuda::MemoryStats warm = cuda::memory_stats(0);
  for (int it = 1; it <= 4; ++it) {
    EXPECT_TRUE(std::isfinite(net.step(it)));
    backend_for(kCuda).synchronize();
    const cuda::MemoryStats now = cuda::memory_stats(0);
    EXPECT_EQ(now.cuda_mallocs, warm.cuda_mallocs) << "iteration " << it << " called cudaMalloc";
    EXPECT_EQ(now.allocated, warm.allocated) << "iteration " << it << " holds more memory than the warm-up did";
    EXPECT_LE(now.reserved, warm.reserved) << "iteration " << it;
  }
}

TEST(CudaInfra, FreedTensorsReturnToTheCacheAndEmptyCacheReleasesThem) {
  REQUIRE_GPU();
  backend_for(kCuda).synchronize();
  const cuda::MemoryStats before = cuda::memory_stats(0);
  {
    const Tensor a = Tensor::zeros({1 << 20}, DType::F32, kCuda);  // 4 MiB
    const Tensor b = Tensor::zeros({1000}, DType::F64, kCuda);
    const cuda::MemoryStats live = cuda::memory_stats(0);
    EXPECT_GE(live.allocated, before.allocated + a.nbytes() + b.nbytes());
    EXPECT_GE(live.peak_allocated, live.allocated);
    EXPECT_GE(live.reserved, live.allocated);
  }
  const cuda::MemoryStats after = cuda::memory_stats(0);
  EXPECT_EQ(after.allocated, before.allocated);
  // The same sizes again come from the cache.
  {
    const Tensor a = Tensor::zeros({1 << 20}, DType::F32, kCuda);
    const Tensor b = Tensor::zeros({1000}, DType::F64, kCuda);
    EXPECT_EQ(cuda::memory_stats(0).cuda_mallocs, after.cuda_mallocs);
  }
  cuda::empty_cache(0);
  const cuda::MemoryStats emptied = cuda::memory_stats(0);
  EXPECT_EQ(emptied.reserved, emptied.allocated);
  EXPECT_EQ(emptied.allocated, before.allocated);
}

TEST(CudaInfra, DeterministicModeIsBitwiseReproducible) {
  REQUIRE_GPU();
  SwitchGuard restore;
  cuda::set_deterministic(true);
  EXPECT_TRUE(cuda::deterministic());
  Generator gen(22);
  const Tensor x0 = Tensor::randn({8, 16, 14, 14}, gen), w0 = Tensor::randn({32, 16, 3, 3}, gen, DType::F32, 0.0, 0.1);
  const Tensor gy = Tensor::randn({8, 32, 14, 14}, gen);
  auto run = [&] {
    Tensor x = x0.to(kCuda).set_requires_grad(), w = w0.to(kCuda).set_requires_grad();
    const Tensor y = retort::conv2d(x, w, Tensor(), 1, 1);
    y.backward(gy.to(kCuda));
    return std::vector<Tensor>{y.detach().to(Device::cpu()), x.grad().to(Device::cpu()), w.grad().to(Device::cpu())};
  };
  const auto r1 = run(), r2 = run();
  const char* what[] = {"output", "input gradient", "weight gradient"};
  for (size_t i = 0; i < r1.size(); ++i) EXPECT_TRUE(bitwise_equal(r1[i], r2[i])) << what[i] << " differs between runs";
  // ... and still agrees with the CPU.
  check_parity("conv2d deterministic f32", {In(x0, true, "x"), In(w0, true, "weight")},
               [](const Ts& t) { return retort::conv2d(t[0], t[1], Tensor(), 1, 1); }, Kind::Gemm, Kind::Gemm);
}

// In deterministic mode grid_sample's input gradient gathers in the CPU's scatter order (sample.cu), so
// it matches the CPU bit for bit however many locations share a pixel: near-identity warps (SoKD),
// upsampling (four to nine locations per pixel), points outside the input or NaN, and a grid that sends
// every location to one point (one bucket holding the whole grid). The grid gradient is unchanged.
TEST(CudaParity, GridSampleDeterministicInputGradientMatchesTheCpuBitForBit) {
  REQUIRE_GPU();
  SwitchGuard restore;
  cuda::set_deterministic(true);
  Generator gen(41);
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::randn({3, 5, 6, 7}, gen, dt);
    std::vector<double> th;
    for (int n = 0; n < 3; ++n)
      for (double v : {1.0, 0.0, 0.0, 0.0, 1.0, 0.0}) th.push_back(v + 0.3 * gen.normal());
    const Tensor warp = retort::affine_grid(Tensor::from_vector(th, {3, 2, 3}, dt), 6, 7);
    std::vector<double> odd = Tensor::rand({3, 9, 8, 2}, gen, DType::F64, -1.3, 1.3).to_vector();
    odd[5] = std::nan("");
    odd[40] = 7.0;  // far outside: touches no pixel
    odd[41] = -7.0;
    std::vector<double> one(3 * 20 * 20 * 2, 0.1);  // 400 locations: the fill's chunks of 256 carry over
    const std::vector<std::pair<const char*, Tensor>> grids = {
        {"affine warp", warp},
        {"upsampling 6x7 -> 19x23", Tensor::rand({3, 19, 23, 2}, gen, dt, -1.0, 1.0)},
        {"outside and NaN", Tensor::from_vector(odd, {3, 9, 8, 2}, dt)},
        {"every location at one point", Tensor::from_vector(one, {3, 20, 20, 2}, dt)},
    };
    for (const auto& [name, grid] : grids) {
      check_parity(label(std::string("grid_sample deterministic, ") + name, dt, x.shape()),
                   {In(x, true, "x"), fixed(grid, "grid")}, [](const Ts& t) { return retort::grid_sample(t[0], t[1]); },
                   Kind::Reduction, Kind::Exact);
      check_parity(label(std::string("grid_sample deterministic with grid gradient, ") + name, dt, x.shape()),
                   {In(x, true, "x"), In(grid, true, "grid")},
                   [](const Ts& t) { return retort::grid_sample(t[0], t[1]); }, Kind::Reduction, Kind::Reduction);
    }
    // Two runs agree bit for bit (on a GPU the default route's atomics need not).
    auto run = [&] {
      Tensor xg = x.to(kCuda).set_requires_grad();
      retort::sum(retort::grid_sample(xg, grids[1].second.to(kCuda))).backward();
      return xg.grad().to(Device::cpu());
    };
    EXPECT_TRUE(bitwise_equal(run(), run())) << dtype_name(dt);
  }
}

// A cuDNN algorithm the heuristics proposed but the library refuses when it runs (cuDNN 9: a sub-code of
// the CUDNN_STATUS_NOT_SUPPORTED category, e.g. _SHAPE) is replaced by the next usable one; with none
// left, the error names the call. The emulator's RETORT_CUDAEMU_CUDNN_REFUSE=1 refuses each direction's
// first proposal with CUDNN_STATUS_NOT_SUPPORTED_SHAPE; a real cuDNN has no such switch.
TEST(CudaInfra, RefusedConvolutionAlgorithmFallsBackToTheNextOne) {
  REQUIRE_GPU();
#ifndef RETORT_CUDA_EMULATED
  GTEST_SKIP() << "needs the emulator's RETORT_CUDAEMU_CUDNN_REFUSE switch";
#else
  SwitchGuard restore;
  struct Env {
    Env() { setenv("RETORT_CUDAEMU_CUDNN_REFUSE", "1", 1); }
    ~Env() { unsetenv("RETORT_CUDAEMU_CUDNN_REFUSE"); }
  } env;
  // Shapes no other test uses: plans are kept per shape for the life of the process.
  cuda::set_deterministic(false);  // two candidates per direction
  Generator gen(31);
  const Tensor x = Tensor::randn({2, 3, 9, 7}, gen, DType::F64), w = Tensor::randn({5, 3, 3, 3}, gen, DType::F64);
  check_parity("conv2d after a refused algorithm", {In(x, true, "x"), In(w, true, "weight")},
               [](const Ts& t) { return retort::conv2d(t[0], t[1], Tensor(), 1, 1); }, Kind::Gemm, Kind::Gemm);
  // Deterministic mode: the backward passes have one deterministic candidate each, and it is refused.
  cuda::set_deterministic(true);
  const Tensor x2 = Tensor::randn({2, 3, 9, 5}, gen, DType::F64).to(kCuda).set_requires_grad();
  const Tensor w2 = Tensor::randn({5, 3, 3, 3}, gen, DType::F64).to(kCuda);
  const Tensor y = retort::conv2d(x2, w2, Tensor(), 1, 1);  // the forward falls back (both are deterministic)
  expect_error([&] { y.backward(Tensor::ones_like(y)); }, {"running algorithm", "NOT_SUPPORTED_SHAPE"});
#endif
}

TEST(CudaInfra, Tf32StaysCloseAndIsOffByDefaultForParity) {
  REQUIRE_GPU();
  SwitchGuard restore;
  EXPECT_FALSE(cuda::allow_tf32());  // REQUIRE_GPU turned it off for the parity tests
  Generator gen(23);
  const Tensor a = Tensor::randn({256, 512}, gen), b = Tensor::randn({512, 256}, gen);
  const Tensor ref = retort::matmul(a, b);
  const Tensor ieee = retort::matmul(a.to(kCuda), b.to(kCuda));
  EXPECT_TRUE(tensors_close("matmul f32 TF32 off", "output", ref, ieee, Kind::Gemm));
  cuda::set_allow_tf32(true);
  EXPECT_TRUE(cuda::allow_tf32());
  const Tensor tf32 = retort::matmul(a.to(kCuda), b.to(kCuda)).to(Device::cpu());
  // TF32 keeps 10 mantissa bits: about 1e-3 relative per product, a few 1e-2 on a 512-term sum of N(0,1)
  // products whose scale is ~ 80.
  const auto r = ref.to_vector(), t = tf32.to_vector();
  double scale = 1, worst = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    scale = std::max(scale, std::abs(r[i]));
    worst = std::max(worst, std::abs(r[i] - t[i]));
  }
  EXPECT_LE(worst, 1e-2 * scale) << "TF32 matmul deviates by " << worst << " (scale " << scale << ")";
  // F64 is never affected by the switch.
  const Tensor a64 = a.to(DType::F64), b64 = b.to(DType::F64);
  EXPECT_TRUE(tensors_close("matmul f64 with TF32 on", "output", retort::matmul(a64, b64),
                            retort::matmul(a64.to(kCuda), b64.to(kCuda)), Kind::Gemm));
}

#endif  // RETORT_WITH_CUDA

// Whole models through Module::to: the loss in F32, and the loss and every parameter gradient in F64.
// F32 gradients are not compared: batch norm over 2x2 planes of a 4-image batch (the last stages of
// mobile_half and ShuffleV2) amplifies rounding differences, so two correct F32 backends differ by up to
// ~1% of a gradient there (measured with the emulator, docs/cuda.md), while in F64 they agree to ~1e-15.
TEST(CudaParity, ModelForwardBackward) {
  REQUIRE_GPU();
  for (const char* arch : {"resnet8", "wrn_16_1", "mobile_half", "ShuffleV2", "vgg8"}) {
    for (const DType dt : kFloatTypes) {
      Generator g1(5), g2(5);
      auto cpu_model = create_model(arch, ModelOptions{10, 3, 32}, g1);
      auto gpu_model = create_model(arch, ModelOptions{10, 3, 32}, g2);
      cpu_model->to(dt);
      gpu_model->to(dt);
      gpu_model->to(Device::cuda(0));
      EXPECT_TRUE(gpu_model->device().is_cuda()) << arch;
      Generator gx(9);
      const Tensor x = Tensor::randn({4, 3, 32, 32}, gx).to(dt);
      const Tensor y = Tensor::from_int64({1, 2, 3, 4}, {4});
      const Tensor lc = retort::cross_entropy((*cpu_model)(x), y);
      const Tensor lg = retort::cross_entropy((*gpu_model)(x.to(Device::cuda(0))), y.to(Device::cuda(0)));
      const double loss_tol = dt == DType::F64 ? 1e-12 : 1e-3;
      EXPECT_NEAR(lc.item(), lg.item(), loss_tol * std::max(1.0, std::abs(lc.item()))) << arch << " " << dtype_name(dt);
      if (dt != DType::F64) continue;
      lc.backward();
      lg.backward();
      const auto pc = cpu_model->named_parameters(), pg = gpu_model->named_parameters();
      ASSERT_EQ(pc.size(), pg.size());
      // Gradients that are zero in exact arithmetic (a conv bias followed by batch norm) are compared
      // against a floor of 1e-4 of the model's largest gradient.
      double model_scale = 0;
      for (const auto& [name, p] : pc)
        for (const double v : p.grad().to_vector()) model_scale = std::max(model_scale, std::abs(v));
      for (size_t i = 0; i < pc.size(); ++i) {
        ASSERT_TRUE(pg[i].second.grad().defined()) << arch << " " << pc[i].first;
        EXPECT_TRUE(pg[i].second.grad().device().is_cuda()) << pc[i].first;
        const auto a = pc[i].second.grad().to_vector(), b = pg[i].second.grad().to_vector();
        double worst = 0, scale = 1e-4 * model_scale;
        for (size_t k = 0; k < a.size(); ++k) {
          worst = std::max(worst, std::abs(a[k] - b[k]));
          scale = std::max(scale, std::abs(a[k]));
        }
        EXPECT_LE(worst, 1e-9 * scale) << arch << " " << pc[i].first << " grad";
      }
    }
  }
}
