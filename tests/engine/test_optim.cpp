// Optimizers and LR schedules: SGD / Adam / AdamW against PyTorch's update rules written out as tiny
// double-precision reference loops, per-parameter skipping, bitwise resume through state_dict (and
// through a safetensors file), state and hyperparameter validation, schedules and their JSON.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>

#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/optim/optim.h"
#include "engine/serialize.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::error_of;
using Json = nlohmann::ordered_json;

namespace {

// ---- references: torch.optim's documented algorithms, in double -----------------------------------

struct RefSGD {
  double lr, momentum = 0, dampening = 0, wd = 0;
  bool nesterov = false;
  std::vector<double> buf = {};
  int steps = 0;
  void step(std::vector<double>& p, const std::vector<double>& g) {
    if (buf.empty()) buf.assign(p.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      double d = g[i] + wd * p[i];
      if (momentum != 0) {
        buf[i] = steps == 0 ? d : momentum * buf[i] + (1 - dampening) * d;
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
    ++steps;
  }
};

struct RefAdam {
  double lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0;
  bool decoupled = false;  // AdamW
  std::vector<double> m = {}, v = {};
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      if (decoupled) p[i] *= 1 - lr * wd;
      const double gi = decoupled ? g[i] : g[i] + wd * p[i];
      m[i] = beta1 * m[i] + (1 - beta1) * gi;
      v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(beta1, t));
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(beta2, t)) + eps;
      p[i] -= lr * mhat / denom;
    }
  }
};

const std::vector<double> kInit = {0.5, -1.25, 2.0, 0.0, -0.3, 1.7};
const Shape kShape = {2, 3};

// A deterministic gradient for step k (independent of p, so the reference sees the same one).
std::vector<double> grad_at(int k) {
  std::vector<double> g(kInit.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = std::sin(1.3 * static_cast<double>(i) + 0.7 * k) * (1.0 + 0.2 * k);
  return g;
}

Tensor param(DType dt, const std::vector<double>& v = kInit, const Shape& shape = kShape) {
  Tensor p = Tensor::from_vector(v, shape, dt);
  p.set_requires_grad(true);
  return p;
}

void set_grad(Tensor& p, const std::vector<double>& g) { p.set_grad(Tensor::from_vector(g, p.shape(), p.dtype())); }

void expect_close(const Tensor& got, const std::vector<double>& want, const std::string& what) {
  const double tol = got.dtype() == DType::F64 ? 1e-12 : 2e-6;
  const std::vector<double> v = got.to_vector();
  ASSERT_EQ(v.size(), want.size());
  for (size_t i = 0; i < v.size(); ++i)
    EXPECT_NEAR(v[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << what << " element " << i;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

}  // namespace

// ---- hand-computed single steps --------------------------------------------------------------------

TEST(SGD, PlainStepByHand) {
  Tensor p = param(DType::F64, {1.0, 2.0}, {2});
  SGD opt({{{p}, 0.1}});
  set_grad(p, {0.5, -1.0});
  opt.step();
  EXPECT_DOUBLE_EQ(p.at(0), 0.95);
  EXPECT_DOUBLE_EQ(p.at(1), 2.1);
}

TEST(SGD, MomentumFirstStepCopiesGradientThenAccumulates) {
  // dampening 0.5 shows the first-step rule: buf = d (not (1 - dampening) * d).
  Tensor p = param(DType::F64, {1.0}, {1});
  SGD opt({{{p}, 0.1}}, {.momentum = 0.9, .dampening = 0.5});
  set_grad(p, {1.0});
  opt.step();  // buf = 1, p = 1 - 0.1
  EXPECT_DOUBLE_EQ(p.at(0), 0.9);
  set_grad(p, {2.0});
  opt.step();  // buf = 0.9 * 1 + 0.5 * 2 = 1.9, p = 0.9 - 0.19
  EXPECT_DOUBLE_EQ(p.at(0), 0.9 - 0.1 * 1.9);
}

TEST(Adam, FirstStepIsLrTimesSign) {
  // After one step the bias-corrected moments are g and g^2: p -= lr * g / (|g| + eps).
  Tensor p = param(DType::F64, {1.0, -1.0}, {2});
  Adam opt({{{p}, 0.01}});
  set_grad(p, {3.0, -0.25});
  opt.step();
  EXPECT_NEAR(p.at(0), 1.0 - 0.01 * 3.0 / (3.0 + 1e-8), 1e-15);
  EXPECT_NEAR(p.at(1), -1.0 + 0.01 * 0.25 / (0.25 + 1e-8), 1e-15);
}

// ---- multi-step against the references, F32 and F64 --------------------------------------------------

struct SgdCase {
  const char* name;
  double lr, momentum, dampening, wd;
  bool nesterov;
};

class SGDReference : public ::testing::TestWithParam<std::tuple<SgdCase, DType>> {};

TEST_P(SGDReference, MatchesTorchRule) {
  const auto [c, dt] = GetParam();
  Tensor p = param(dt);
  SGD opt({{{p}, c.lr, c.wd}}, {.momentum = c.momentum, .dampening = c.dampening, .nesterov = c.nesterov});
  RefSGD ref{c.lr, c.momentum, c.dampening, c.wd, c.nesterov};
  std::vector<double> want = kInit;
  for (int k = 0; k < 6; ++k) {
    set_grad(p, grad_at(k));
    opt.step();
    ref.step(want, grad_at(k));
    expect_close(p, want, detail::cat(c.name, " step ", k));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, SGDReference,
                         ::testing::Combine(::testing::Values(SgdCase{"plain", 0.1, 0, 0, 0, false},
                                                              SgdCase{"weight_decay", 0.1, 0, 0, 0.05, false},
                                                              SgdCase{"momentum", 0.05, 0.9, 0, 0, false},
                                                              SgdCase{"dampening", 0.05, 0.9, 0.3, 0.01, false},
                                                              SgdCase{"nesterov", 0.05, 0.9, 0, 5e-4, true}),
                                            ::testing::Values(DType::F32, DType::F64)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) == DType::F32 ? "_f32" : "_f64");
                         });

struct AdamCase {
  const char* name;
  double lr, beta1, beta2, eps, wd;
  bool decoupled;
};

class AdamReference : public ::testing::TestWithParam<std::tuple<AdamCase, DType>> {};

TEST_P(AdamReference, MatchesTorchRule) {
  const auto [c, dt] = GetParam();
  Tensor p = param(dt);
  std::vector<ParamGroup> groups{{{p}, c.lr, c.wd}};
  const AdamOptions o{c.beta1, c.beta2, c.eps};
  std::unique_ptr<Optimizer> opt =
      c.decoupled ? std::unique_ptr<Optimizer>(new AdamW(groups, o)) : std::unique_ptr<Optimizer>(new Adam(groups, o));
  RefAdam ref{c.lr, c.beta1, c.beta2, c.eps, c.wd, c.decoupled};
  std::vector<double> want = kInit;
  for (int k = 0; k < 6; ++k) {
    set_grad(p, grad_at(k));
    opt->step();
    ref.step(want, grad_at(k));
    expect_close(p, want, detail::cat(c.name, " step ", k));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AdamReference,
    ::testing::Combine(::testing::Values(AdamCase{"adam", 0.01, 0.9, 0.999, 1e-8, 0, false},
                                         AdamCase{"adam_l2", 0.01, 0.9, 0.999, 1e-8, 0.1, false},
                                         AdamCase{"adam_betas", 0.05, 0.5, 0.9, 1e-3, 0, false},
                                         AdamCase{"adamw", 0.01, 0.9, 0.999, 1e-8, 0.1, true},
                                         AdamCase{"adamw_no_decay", 0.01, 0.9, 0.999, 1e-8, 0, true}),
                       ::testing::Values(DType::F32, DType::F64)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + (std::get<1>(info.param) == DType::F32 ? "_f32" : "_f64");
    });

TEST(Optimizer, LargeParameterTakesTheParallelPath) {
  const int64_t n = 200000;  // above the OpenMP grain
  std::vector<double> init(n), g(n);
  for (int64_t i = 0; i < n; ++i) init[i] = std::cos(0.001 * i), g[i] = std::sin(0.002 * i);
  Tensor p = param(DType::F64, init, {n});
  AdamW opt({{{p}, 0.01, 0.05}});
  RefAdam ref{0.01, 0.9, 0.999, 1e-8, 0.05, true};
  for (int k = 0; k < 3; ++k) {
    set_grad(p, g);
    opt.step();
    ref.step(init, g);
  }
  expect_close(p, init, "large");
}

// ---- which parameters a step touches ---------------------------------------------------------------

TEST(Optimizer, SkipsParametersWithoutGradAndCountsStepsPerParameter) {
  Tensor a = param(DType::F64), b = param(DType::F64);
  Adam opt({{{a}, 0.01}, {{b}, 0.02}});
  RefAdam ra{0.01}, rb{0.02};
  std::vector<double> wa = kInit, wb = kInit;
  for (int k = 0; k < 3; ++k) {  // only a has a gradient
    set_grad(a, grad_at(k));
    opt.step();
    ra.step(wa, grad_at(k));
  }
  expect_close(a, wa, "a");
  expect_close(b, kInit, "b untouched");
  // b's first update uses its own step count (t = 1), not the optimizer's.
  a.zero_grad();
  set_grad(b, grad_at(7));
  opt.step();
  rb.step(wb, grad_at(7));
  expect_close(a, wa, "a untouched");
  expect_close(b, wb, "b");
  StateDict s = opt.state_dict();
  EXPECT_EQ(s[0].first, "state.0.step");
  EXPECT_EQ(s[0].second.item(), 3);
  EXPECT_EQ(s[3].first, "state.1.step");
  EXPECT_EQ(s[3].second.item(), 1);
}

TEST(Optimizer, ZeroGradDropsGradients) {
  Tensor a = param(DType::F32), b = param(DType::F32);
  SGD opt({{{a, b}, 0.1}});
  set_grad(a, grad_at(0));
  set_grad(b, grad_at(1));
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  opt.step();  // nothing to do
  expect_close(a, kInit, "a");
}

TEST(Optimizer, StepWorksOnGradientsFromBackward) {
  Tensor w = param(DType::F64, {1.0, 2.0, 3.0}, {3});
  SGD opt({{{w}, 0.5}});
  Tensor loss = sum(mul(w, w));  // grad = 2w
  loss.backward();
  opt.step();
  expect_close(w, {0.0, 0.0, 0.0}, "w");
  EXPECT_FALSE(w.grad_fn());
}

TEST(Optimizer, LearningRates) {
  Tensor a = param(DType::F32), b = param(DType::F32);
  SGD opt({{{a}, 0.1}, {{b}, 0.01, 1e-4}});
  EXPECT_EQ(opt.lr(0), 0.1);
  EXPECT_EQ(opt.lr(1), 0.01);
  opt.set_lr(0.5);
  EXPECT_EQ(opt.lr(0), 0.5);
  EXPECT_EQ(opt.lr(1), 0.5);
  opt.set_lr(1, 0.25);
  EXPECT_EQ(opt.lr(1), 0.25);
  EXPECT_EQ(opt.param_groups()[1].weight_decay, 1e-4);
  EXPECT_NE(error_of([&] { opt.lr(2); }).find("group 2"), std::string::npos);
  EXPECT_NE(error_of([&] { opt.set_lr(-1.0); }).find(">= 0"), std::string::npos);
}

TEST(Optimizer, ConstructionErrors) {
  Tensor p = param(DType::F32);
  EXPECT_NE(error_of([&] { SGD({{{p}}}); }).find("lr is not set"), std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{{p}, -0.1}}); }).find("lr must be"), std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{{p}, 0.1, -1}}); }).find("weight_decay"), std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{{p}, 0.1}}, {.nesterov = true}); }).find("Nesterov"), std::string::npos);
  EXPECT_NE(error_of([&] {
              SGD({{{p}, 0.1}}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true});
            }).find("dampening"),
            std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{{p}, 0.1}, {{p}, 0.2}}); }).find("more than once"), std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{{}, 0.1}}); }).find("empty parameter list"), std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{{Tensor::from_int64({1}, {1})}, 0.1}}); }).find("f32 or f64"), std::string::npos);
  EXPECT_NE(error_of([&] { Adam({{{p}, 0.1}}, {.beta1 = 1.0}); }).find("beta1"), std::string::npos);
  const std::string nonleaf = error_of([&] { SGD({{{mul(p, p)}, 0.1}}); });
  EXPECT_NE(nonleaf.find("not a leaf"), std::string::npos) << nonleaf;
}

// ---- resume: state_dict round trips ------------------------------------------------------------------

namespace {

std::unique_ptr<Optimizer> build(const std::string& kind, std::vector<Tensor> params) {
  if (kind == "sgd")
    return std::make_unique<SGD>(std::vector<ParamGroup>{{{params[0]}, 0.05, 5e-4}, {{params[1]}, 0.1}},
                                 SGDOptions{.momentum = 0.9, .nesterov = true});
  if (kind == "adam") return std::make_unique<Adam>(std::vector<ParamGroup>{{params, 0.01, 1e-3}});
  return std::make_unique<AdamW>(std::vector<ParamGroup>{{{params[0]}, 0.01, 0.05}, {{params[1]}, 0.003, 0.0}});
}

void run_steps(Optimizer& opt, std::vector<Tensor>& ps, int from, int to) {
  for (int k = from; k < to; ++k) {
    for (size_t i = 0; i < ps.size(); ++i) {
      std::vector<double> g = grad_at(k + static_cast<int>(i) * 10);
      g.resize(static_cast<size_t>(ps[i].numel()), 0.25);
      set_grad(ps[i], g);
    }
    if (k == 1) ps[1].zero_grad();  // a skipped parameter must resume with its own step count
    opt.step();
  }
}

std::vector<Tensor> fresh_params(DType dt) { return {param(dt), param(dt, {1.0, -2.0, 3.0, 0.5}, {4})}; }

std::vector<Tensor> copy_params(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const Tensor& p : ps) {
    Tensor c = p.detach().clone();
    c.set_requires_grad(true);
    out.push_back(c);
  }
  return out;
}

}  // namespace

class Resume : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(Resume, ThreePlusThreeStepsEqualSixBitwise) {
  const auto [kind, dt] = GetParam();
  std::vector<Tensor> straight = fresh_params(dt);
  auto a = build(kind, straight);
  run_steps(*a, straight, 0, 6);

  std::vector<Tensor> first = fresh_params(dt);
  auto b = build(kind, first);
  run_steps(*b, first, 0, 3);
  const StateDict saved = b->state_dict();
  const Json hyper = b->hyperparams();
  std::vector<Tensor> resumed = copy_params(first);  // the parameters as a checkpoint would hold them
  run_steps(*b, first, 3, 5);  // the snapshot must not follow the optimizer on
  auto c = build(kind, resumed);
  c->load_state_dict(saved);
  c->load_hyperparams(hyper);
  run_steps(*c, resumed, 3, 6);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_TRUE(bitwise_equal(resumed[i], straight[i])) << kind << " param " << i << "\n"
                                                        << resumed[i] << "\n" << straight[i];
  const StateDict sa = a->state_dict(), sc = c->state_dict();
  ASSERT_EQ(sa.size(), sc.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sc[i].first);
    EXPECT_TRUE(bitwise_equal(sa[i].second, sc[i].second)) << sa[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, Resume,
                         ::testing::Combine(::testing::Values("sgd", "adam", "adamw"),
                                            ::testing::Values(DType::F32, DType::F64)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + (std::get<1>(info.param) == DType::F32 ? "_f32" : "_f64");
                         });

TEST(Resume, ThroughASafetensorsFile) {
  std::vector<Tensor> straight = fresh_params(DType::F32), first = fresh_params(DType::F32);
  auto a = build("adamw", straight);
  run_steps(*a, straight, 0, 6);
  auto b = build("adamw", first);
  run_steps(*b, first, 0, 3);

  const std::string path = ::testing::TempDir() + "/retort_optim_state.safetensors";
  StateDict all = b->state_dict();
  all.emplace_back("param.0", first[0]);
  all.emplace_back("param.1", first[1]);
  save_safetensors(path, all, {{"optimizer", b->hyperparams().dump()}});

  SafetensorsFile f = load_safetensors(path);
  std::vector<Tensor> resumed = fresh_params(DType::F32);
  StateDict opt_state;
  for (auto& [k, t] : f.tensors) {
    if (k == "param.0" || k == "param.1")
      std::memcpy(resumed[k.back() - '0'].raw_data(), t.raw_data(), t.nbytes());
    else
      opt_state.emplace_back(k, t);
  }
  auto c = build("adamw", resumed);
  c->load_state_dict(opt_state);
  c->load_hyperparams(Json::parse(f.metadata.at("optimizer")));
  run_steps(*c, resumed, 3, 6);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(bitwise_equal(resumed[i], straight[i])) << i;
  std::filesystem::remove(path);
}

// ---- state and hyperparameter validation -------------------------------------------------------------

TEST(Optimizer, StateDictKeys) {
  std::vector<Tensor> ps = fresh_params(DType::F32);
  std::vector<std::string> keys;
  for (auto& [k, t] : build("sgd", ps)->state_dict()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"state.0.step", "state.0.momentum_buffer", "state.1.step",
                                            "state.1.momentum_buffer"}));
  keys.clear();
  for (auto& [k, t] : build("adam", ps)->state_dict()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq", "state.1.step",
                                            "state.1.exp_avg", "state.1.exp_avg_sq"}));
  keys.clear();
  for (auto& [k, t] : SGD({{{ps[0]}, 0.1}}).state_dict()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"state.0.step"}));  // no momentum: no buffer
}

TEST(Optimizer, LoadStateDictErrorsNameKeysAndShapes) {
  std::vector<Tensor> ps = fresh_params(DType::F32);
  auto opt = build("adam", ps);
  run_steps(*opt, ps, 0, 2);
  const StateDict good = opt->state_dict();
  const StateDict before = opt->state_dict();

  StateDict missing(good.begin() + 1, good.end());  // drops state.0.step
  std::string e = error_of([&] { opt->load_state_dict(missing); });
  EXPECT_NE(e.find("missing key(s):\n  state.0.step"), std::string::npos) << e;

  StateDict extra = good;
  extra.emplace_back("state.2.exp_avg", Tensor::zeros({1}));
  e = error_of([&] { opt->load_state_dict(extra); });
  EXPECT_NE(e.find("unexpected key(s):\n  state.2.exp_avg"), std::string::npos) << e;

  StateDict shaped = good;
  shaped[1].second = Tensor::zeros({3, 2});  // state.0.exp_avg, parameter is [2, 3]
  e = error_of([&] { opt->load_state_dict(shaped); });
  EXPECT_NE(e.find("state.0.exp_avg: expected [2, 3]"), std::string::npos) << e;
  EXPECT_NE(e.find("got [3, 2]"), std::string::npos) << e;

  StateDict bad_step = good;
  bad_step[0].second = Tensor::from_vector({2.5}, {});
  e = error_of([&] { opt->load_state_dict(bad_step); });
  EXPECT_NE(e.find("state.0.step"), std::string::npos) << e;
  bad_step[0].second = Tensor::from_int64({1, 2}, {2});
  e = error_of([&] { opt->load_state_dict(bad_step); });
  EXPECT_NE(e.find("0-D"), std::string::npos) << e;

  StateDict dup = good;
  dup.push_back(good[0]);
  EXPECT_NE(error_of([&] { opt->load_state_dict(dup); }).find("more than once"), std::string::npos);

  // An SGD state into Adam: every key is wrong, and all are listed.
  std::vector<Tensor> ps2 = fresh_params(DType::F32);
  e = error_of([&] { opt->load_state_dict(build("sgd", ps2)->state_dict()); });
  EXPECT_NE(e.find("state.1.momentum_buffer"), std::string::npos) << e;
  EXPECT_NE(e.find("state.1.exp_avg_sq"), std::string::npos) << e;

  // Nothing changed through the failed loads.
  const StateDict after = opt->state_dict();
  for (size_t i = 0; i < after.size(); ++i)
    EXPECT_TRUE(bitwise_equal(after[i].second, before[i].second)) << after[i].first;

  // A state of another dtype converts.
  std::vector<Tensor> ps64 = fresh_params(DType::F64);
  auto opt64 = build("adam", ps64);
  opt64->load_state_dict(good);
  EXPECT_EQ(opt64->state_dict()[1].second.dtype(), DType::F64);
  EXPECT_NEAR(opt64->state_dict()[1].second.at(2), good[1].second.at(2), 1e-7);
}

TEST(Optimizer, Hyperparams) {
  std::vector<Tensor> ps = fresh_params(DType::F32);
  auto sgd = build("sgd", ps);
  const Json h = sgd->hyperparams();
  EXPECT_EQ(h.at("type"), "sgd");
  EXPECT_EQ(h.at("momentum"), 0.9);
  EXPECT_EQ(h.at("nesterov"), true);
  ASSERT_EQ(h.at("param_groups").size(), 2u);
  EXPECT_EQ(h.at("param_groups")[0].at("lr"), 0.05);
  EXPECT_EQ(h.at("param_groups")[0].at("weight_decay"), 5e-4);
  EXPECT_EQ(h.at("param_groups")[1].at("num_params"), 1);

  Json changed = h;
  changed["param_groups"][0]["lr"] = 0.005;
  sgd->load_hyperparams(changed);
  EXPECT_EQ(sgd->lr(0), 0.005);

  Json other = h;
  other["momentum"] = 0.5;
  EXPECT_NE(error_of([&] { sgd->load_hyperparams(other); }).find("'momentum' is 0.5"), std::string::npos);
  other = h;
  other["momentun"] = 0.5;
  EXPECT_NE(error_of([&] { sgd->load_hyperparams(other); }).find("'momentun'"), std::string::npos);
  other = h;
  other["param_groups"][1]["num_params"] = 3;
  EXPECT_NE(error_of([&] { sgd->load_hyperparams(other); }).find("param_groups[1]"), std::string::npos);
  EXPECT_NE(error_of([&] { sgd->load_hyperparams(build("adam", ps)->hyperparams()); }).find("type 'adam'"),
            std::string::npos);
  EXPECT_EQ(build("adamw", ps)->hyperparams().at("betas"), Json::parse("[0.9, 0.999]"));
}

TEST(Optimizer, MakeFromJson) {
  Tensor p = param(DType::F64);
  auto sgd = make_optimizer(Json::parse(R"({"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                                             "nesterov": true})"),
                            {p});
  EXPECT_EQ(sgd->type(), "sgd");
  EXPECT_EQ(sgd->hyperparams().at("nesterov"), true);
  EXPECT_EQ(sgd->param_groups()[0].weight_decay, 5e-4);
  auto adamw =
      make_optimizer(Json::parse(R"({"type": "adamw", "lr": 1e-3, "betas": [0.8, 0.99]})"), {param(DType::F32)});
  EXPECT_EQ(adamw->type(), "adamw");
  EXPECT_EQ(adamw->param_groups()[0].weight_decay, 0.01);  // PyTorch's AdamW default
  EXPECT_EQ(adamw->hyperparams().at("betas")[0], 0.8);

  std::string e = error_of([&] { make_optimizer(Json::parse(R"({"type": "sgd", "lr": 0.1, "momentun": 0.9})"), {p}); });
  EXPECT_NE(e.find("unknown key 'momentun'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'momentum'"), std::string::npos) << e;
  e = error_of([&] { make_optimizer(Json::parse(R"({"type": "sgd"})"), {p}); });
  EXPECT_NE(e.find("'lr'"), std::string::npos) << e;
  e = error_of([&] { make_optimizer(Json::parse(R"({"type": "rmsprop", "lr": 0.1})"), {p}); });
  EXPECT_NE(e.find("unknown type 'rmsprop'"), std::string::npos) << e;
  e = error_of([&] { make_optimizer(Json::parse(R"({"type": "sgd", "lr": "0.1"})"), {p}); });
  EXPECT_NE(e.find("'lr' must be a number"), std::string::npos) << e;
  e = error_of([&] { make_optimizer(Json::parse(R"({"type": "adam", "lr": 0.1, "betas": [0.9]})"), {p}); });
  EXPECT_NE(e.find("'betas'"), std::string::npos) << e;
}

// ---- learning-rate schedules -------------------------------------------------------------------------

TEST(LrSchedule, MultiStepAroundMilestones) {
  MultiStepLR s(0.1, {150, 180, 210}, 0.1);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(149), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(149.99), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(150), 0.1 * 0.1);
  EXPECT_DOUBLE_EQ(s.lr(179), 0.1 * 0.1);
  EXPECT_DOUBLE_EQ(s.lr(180), 0.1 * std::pow(0.1, 2));
  EXPECT_DOUBLE_EQ(s.lr(209.5), 0.1 * std::pow(0.1, 2));
  EXPECT_DOUBLE_EQ(s.lr(210), 0.1 * std::pow(0.1, 3));
  EXPECT_DOUBLE_EQ(s.lr(239), 0.1 * std::pow(0.1, 3));
  MultiStepLR twice(1.0, {5, 5}, 0.5);  // a repeated milestone applies gamma twice, as PyTorch
  EXPECT_DOUBLE_EQ(twice.lr(4), 1.0);
  EXPECT_DOUBLE_EQ(twice.lr(5), 0.25);
  EXPECT_NE(error_of([] { MultiStepLR(0.1, {10, 5}); }).find("increasing"), std::string::npos);
  EXPECT_NE(error_of([&] { s.lr(-1); }).find("epoch"), std::string::npos);
}

TEST(LrSchedule, CosineEndpointsAndMidpoint) {
  CosineLR s(0.1, 100, 0.001);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);
  EXPECT_NEAR(s.lr(50), (0.1 + 0.001) / 2, 1e-15);
  EXPECT_NEAR(s.lr(25), 0.001 + (0.1 - 0.001) * (1 + std::cos(std::numbers::pi / 4)) / 2, 1e-15);
  EXPECT_NEAR(s.lr(99.999), 0.001, 1e-8);
  EXPECT_DOUBLE_EQ(s.lr(100), 0.001);
  EXPECT_DOUBLE_EQ(s.lr(130), 0.001);  // stays at the floor after total_epochs
  EXPECT_DOUBLE_EQ(CosineLR(0.05, 10).lr(10), 0.0);
}

TEST(LrSchedule, LinearWarmupRamp) {
  LinearWarmupLR s(std::make_unique<MultiStepLR>(0.1, std::vector<int64_t>{150}, 0.1), 5);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.02);
  EXPECT_DOUBLE_EQ(s.lr(1), 0.04);
  EXPECT_DOUBLE_EQ(s.lr(0.5), 0.03);  // fractional epochs interpolate
  EXPECT_DOUBLE_EQ(s.lr(3), 0.08);
  EXPECT_DOUBLE_EQ(s.lr(4), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(4.5), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(100), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(150), 0.1 * 0.1);
  EXPECT_EQ(s.base_lr(), 0.1);
}

TEST(LrSchedule, FromJsonAndBack) {
  const char* configs[] = {
      R"({"type": "multistep", "milestones": [150, 180, 210], "gamma": 0.1})",
      R"({"type": "multistep", "milestones": [30, 60], "gamma": 0.2, "warmup_epochs": 5})",
      R"({"type": "cosine", "total_epochs": 240, "min_lr": 0.0001})",
      R"({"type": "cosine", "total_epochs": 240, "warmup_epochs": 3})",
      R"({"type": "constant"})",
  };
  for (const char* text : configs) {
    const Json cfg = Json::parse(text);
    auto s = make_lr_schedule(cfg, 0.05);
    auto again = make_lr_schedule(s->to_json(), s->base_lr());
    EXPECT_EQ(again->to_json(), s->to_json()) << text;
    for (double e : {0.0, 0.5, 2.0, 4.0, 29.0, 30.0, 59.9, 60.0, 120.0, 150.0, 179.0, 180.0, 210.0, 239.0, 300.0})
      EXPECT_EQ(again->lr(e), s->lr(e)) << text << " epoch " << e;
  }
  auto ms = make_lr_schedule(Json::parse(configs[1]), 0.1);
  EXPECT_DOUBLE_EQ(ms->lr(0), 0.02);
  EXPECT_DOUBLE_EQ(ms->lr(30), 0.1 * 0.2);
  EXPECT_EQ(ms->to_json().at("warmup_epochs"), 5);
  EXPECT_DOUBLE_EQ(make_lr_schedule(Json::parse(configs[2]), 0.1)->lr(240), 0.0001);
  EXPECT_DOUBLE_EQ(make_lr_schedule(Json::parse(R"({"type": "multistep", "milestones": [2]})"), 1.0)->lr(2), 0.1);
}

TEST(LrSchedule, JsonErrorsNameTheKey) {
  auto err = [](const char* text) { return error_of([&] { make_lr_schedule(Json::parse(text), 0.1); }); };
  std::string e = err(R"({"type": "multistep", "milestone": [150]})");
  EXPECT_NE(e.find("unknown key 'milestone'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'milestones'"), std::string::npos) << e;
  e = err(R"({"type": "cosine", "total_epochs": 100, "warmup": 5})");
  EXPECT_NE(e.find("unknown key 'warmup'"), std::string::npos) << e;
  e = err(R"({"type": "multistep"})");
  EXPECT_NE(e.find("missing required key 'milestones'"), std::string::npos) << e;
  e = err(R"({"type": "multistep", "milestones": [150.5]})");
  EXPECT_NE(e.find("'milestones'"), std::string::npos) << e;
  e = err(R"({"type": "multistep", "milestones": 150})");
  EXPECT_NE(e.find("'milestones'"), std::string::npos) << e;
  e = err(R"({"type": "multistep", "milestones": [180, 150]})");
  EXPECT_NE(e.find("increasing"), std::string::npos) << e;
  e = err(R"({"type": "multistep", "milestones": [150], "gamma": "0.1"})");
  EXPECT_NE(e.find("'gamma' must be a number"), std::string::npos) << e;
  e = err(R"({"type": "cosine"})");
  EXPECT_NE(e.find("'total_epochs'"), std::string::npos) << e;
  e = err(R"({"type": "cosine", "total_epochs": 0})");
  EXPECT_NE(e.find("'total_epochs' must be > 0"), std::string::npos) << e;
  e = err(R"({"type": "constant", "warmup_epochs": -1})");
  EXPECT_NE(e.find("'warmup_epochs' must be >= 0"), std::string::npos) << e;
  e = err(R"({"type": "constant", "warmup_epochs": 2.5})");
  EXPECT_NE(e.find("'warmup_epochs' must be an integer"), std::string::npos) << e;
  e = err(R"({"type": "step"})");
  EXPECT_NE(e.find("unknown type 'step'"), std::string::npos) << e;
  e = err(R"({"milestones": [1]})");
  EXPECT_NE(e.find("'type'"), std::string::npos) << e;
  e = err(R"([1, 2])");
  EXPECT_NE(e.find("JSON object"), std::string::npos) << e;
}
