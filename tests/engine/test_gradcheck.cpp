// Runs every registered finite-difference gradcheck as its own test, and checks that every
// differentiable function is covered and that the checker itself catches a wrong gradient.
#include <gtest/gtest.h>

#include <set>

#include "distill/nodes/register.h"
#include "engine/autograd.h"
#include "engine/functions.h"
#include "engine/gradcheck.h"

using namespace retort;

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

// A function whose backward is deliberately wrong (2x the true gradient) must fail the check.
TEST(GradcheckFacility, DetectsAWrongBackward) {
  auto wrong_square = [](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    Tensor out;
    {
      NoGradGuard ng;
      out = mul(x, x);
    }
    return record(out, "WrongSquareBackward", {x}, [x = saved(x)](const Tensor& g, const Node&) {
      return std::vector<Tensor>{mul(g, affine(x, 4.0, 0.0))};
    });
  };
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
