// Runs every registered finite-difference gradcheck as its own test, and checks that every
// differentiable function is covered and that the checker itself catches a wrong gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "distill/nodes/register.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/gradcheck.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;

// The distillation nodes register their checks from above the engine; do it before gtest expands the
// parameterised suite below (static initialisation of this file runs before main).
static const bool kDistillRegistered = (register_distill_gradchecks(), true);

class Gradcheck : public ::testing::TestWithParam<std::string> {};

TEST_P(Gradcheck, MatchesFiniteDifferences) {
  const GradcheckCase* c = find_gradcheck(GetParam());
  ASSERT_NE(c, nullptr);
  const GradcheckResult r = run_gradcheck(*c);
  EXPECT_GT(r.checked, 0);
  EXPECT_TRUE(r.passed) << c->name << ": " << r.detail;
}

static std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& c : all_gradchecks()) names.push_back(c.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(All, Gradcheck, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

TEST(GradcheckRegistry, EveryDifferentiableFunctionHasACheck) {
  std::set<std::string> covered;
  for (const auto& c : all_gradchecks()) covered.insert(c.function);
  for (const auto& f : differentiable_functions()) EXPECT_TRUE(covered.count(f)) << "no gradcheck for " << f;
  for (const auto& f : covered)
    EXPECT_NE(std::find(differentiable_functions().begin(), differentiable_functions().end(), f),
              differentiable_functions().end())
        << "check covers unknown function " << f;
}

TEST(GradcheckRegistry, NamesAreUnique) {
  std::set<std::string> names;
  for (const auto& c : all_gradchecks()) EXPECT_TRUE(names.insert(c.name).second) << "duplicate " << c.name;
  EXPECT_GE(names.size(), 40u);
}

// x * x with a hand-written backward, grad(g, x) -> the input's gradient: a stand-in for a new op whose
// backward the tests get wrong on purpose.
template <class Grad>
GradcheckFn square_with_backward(const char* node, Grad grad) {
  return [node, grad](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    Tensor out;
    {
      NoGradGuard ng;
      out = mul(x, x);
    }
    return record(out, node, {x}, [x = saved(x), grad](const Tensor& g, const Node&) {
      return std::vector<Tensor>{grad(g, x)};
    });
  };
}

// A function whose backward is deliberately wrong (2x the true gradient) must fail the check.
TEST(GradcheckFacility, DetectsAWrongBackward) {
  const GradcheckFn wrong_square =
      square_with_backward("WrongSquareBackward", [](const Tensor& g, const Tensor& x) { return mul(g, affine(x, 4.0, 0.0)); });
  Generator gen(1);
  const GradcheckResult r = gradcheck(wrong_square, {gc_randn({4}, gen)});
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.checked, 4);
  // The element reported is named with its error and the tolerance it was held to.
  EXPECT_NE(r.detail.find("input 0 [4] element "), std::string::npos) << r.detail;
  EXPECT_NE(r.detail.find("against its tolerance"), std::string::npos) << r.detail;
}

// A broadcast gradient summed over the wrong dimension cancels under a plain sum of the output but
// not under the random projection.
TEST(GradcheckFacility, DetectsAMissingGradient) {
  auto no_grad_for_b = [](const std::vector<Tensor>& in) {
    Tensor out;
    {
      NoGradGuard ng;
      out = add(in[0], in[1]);
    }
    return record(out, "HalfAddBackward", {in[0], in[1]}, [](const Tensor& g, const Node&) {
      return std::vector<Tensor>{g, Tensor()};
    });
  };
  Generator gen(2);
  const GradcheckResult r = gradcheck(no_grad_for_b, {gc_randn({3}, gen), gc_randn({3}, gen)});
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.detail.find("no gradient"), std::string::npos) << r.detail;
}

// A backward that returns NaN, a forward that does (log of a negative number), or a step of 0 must fail or
// be refused: NaN compares false with every tolerance, and the check once passed such a function with
// "max|diff| 0" (PyTorch's gradcheck raises on it).
TEST(GradcheckFacility, NaNAndInfiniteValuesFail) {
  const GradcheckFn nan_backward = square_with_backward("NaNBackward", [](const Tensor& g, const Tensor&) {
    return affine(g, std::numeric_limits<double>::quiet_NaN(), 0.0);
  });
  Generator gen(3);
  GradcheckResult r = gradcheck(nan_backward, {gc_randn({4, 5}, gen)});
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(std::isnan(r.max_abs_error)) << r.max_abs_error;
  EXPECT_NE(r.detail.find("not finite"), std::string::npos) << r.detail;
  // log(x) for x < 0: NaN forward, NaN numeric and analytic values.
  const Tensor negative = Tensor::from_vector({-1.0, -2.0, 3.0}, {3}, DType::F64).set_requires_grad();
  r = gradcheck([](const std::vector<Tensor>& in) { return log(in[0]); }, {negative});
  EXPECT_FALSE(r.passed);
  GradcheckOptions zero_step;
  zero_step.eps = 0;
  expect_error([&] { gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {gc_randn({3}, gen)}, zero_step); },
               {"gradcheck: eps 0 must be a positive finite step"});
  GradcheckOptions none;
  none.max_elements_per_input = 0;
  expect_error([&] { gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {gc_randn({3}, gen)}, none); },
               {"max_elements_per_input 0 must be at least 1"});
}

// The worst element is the one with the largest |diff| relative to its tolerance, recorded even when
// every element is far inside it (large gradients, large tolerances); a correct check reports its
// nearest-to-failing element, not one with |diff| 0 when others differ.
TEST(GradcheckFacility, WorstIsTheLargestDiffOverTolerance) {
  Generator gen(4);
  const Tensor x = gc_randn({6}, gen);
  GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return affine(mul(in[0], in[0]), 1e6, 0.0); }, {x});
  EXPECT_TRUE(r.passed);
  EXPECT_NE(r.detail.find("against its tolerance"), std::string::npos) << "no worst element recorded";
  // A gradient off by a relative 1e-6 at one element only: that element is the worst, though still passing.
  const GradcheckFn nudged = square_with_backward("NudgedSquareBackward", [](const Tensor& g, const Tensor& x) {
    Tensor d = mul(g, affine(x, 2.0, 0.0)).clone();
    d.data<double>()[3] *= 1 + 1e-6;
    return d;
  });
  r = gradcheck(nudged, {gc_randn({6}, gen)});
  EXPECT_TRUE(r.passed) << r.detail;
  EXPECT_NE(r.detail.find("element 3:"), std::string::npos) << r.detail;
}

// Checked inputs that are not leaves are named as such; the inputs' own .grad is left as it was.
TEST(GradcheckFacility, NonLeavesAreNamedAndGradientsAreKept) {
  Generator gen(5);
  const Tensor leaf = gc_randn({3}, gen);
  const Tensor computed = mul(leaf, leaf);
  expect_error([&] { gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {computed}); },
               {"gradcheck: input 0 (f64[3] cpu) is not a leaf: it was computed from other tensors (MulBackward)"});
  Tensor a = gc_randn({3}, gen);
  a.set_grad(Tensor::from_vector({7.0, 8.0, 9.0}, {3}, DType::F64));
  const GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {a});
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{7.0, 8.0, 9.0}));
  // The same tensor given twice keeps its gradient too.
  const GradcheckResult twice = gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {a, a});
  EXPECT_TRUE(twice.passed) << twice.detail;
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{7.0, 8.0, 9.0}));
}


// A family naming a registered check again, or covering a function nobody registered, is refused whole.
namespace {
void add_duplicate_family(std::vector<GradcheckCase>& out) {
  GradcheckCase c = *find_gradcheck("relu.basic");
  out.push_back(c);
}
void add_orphan_family(std::vector<GradcheckCase>& out) {
  GradcheckCase c = *find_gradcheck("relu.basic");
  c.name = "not_in_list.basic";
  c.function = "not_in_list";
  out.push_back(c);
}
}  // namespace

TEST(GradcheckRegistry, DuplicateNamesAndUnknownFunctionsAreRefused) {
  const size_t before = all_gradchecks().size();
  expect_error([] { add_gradcheck_family(add_duplicate_family, {}); },
               {"a check named 'relu.basic' is already registered"});
  expect_error([] { add_gradcheck_family(add_orphan_family, {}); },
               {"check 'not_in_list.basic' covers 'not_in_list', which is neither a registered function nor in this "
                "family's list"});
  EXPECT_EQ(all_gradchecks().size(), before);
  EXPECT_EQ(find_gradcheck("not_in_list.basic"), nullptr);
}
