// Autograd engine: accumulation, explicit upstream gradients, retain_graph, NoGrad, detach, the
// gradient shape check, and the graph export.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/functions.h"

using namespace retort;

namespace {
Tensor leaf(std::vector<double> v, Shape s) {
  return Tensor::from_vector(v, s, DType::F64).set_requires_grad();
}
}  // namespace

TEST(Autograd, ChainRuleOnAScalar) {
  Tensor x = leaf({1, 2, 3}, {3});
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 4, 6}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = leaf({1, 2}, {2});
  sum(x * 3.0).backward();
  sum(x * 3.0).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{6, 6}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, ReusedTensorSumsItsGradients) {
  Tensor x = leaf({2}, {1});
  Tensor y = mul(x, x) + x * 3.0;  // dy/dx = 2x + 3 = 7
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 7.0);
}

TEST(Autograd, NonScalarNeedsExplicitGradient) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = x * 2.0;
  EXPECT_THROW(y.backward(), Error);
  EXPECT_THROW(y.backward(Tensor::ones({3}, DType::F64)), Error);  // wrong shape
  y.backward(Tensor::from_vector({1.0, 10.0}, {2}, DType::F64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 20}));
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = leaf({3}, {1});
  Tensor y = sum(mul(x, x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 12.0);
  try {
    y.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = leaf({1}, {1});
  Tensor y;
  {
    NoGradGuard ng;
    EXPECT_FALSE(grad_enabled());
    y = x * 2.0;
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_THROW(y.backward(), Error);
}

TEST(Autograd, DetachStopsGradient) {
  Tensor x = leaf({2}, {1});
  Tensor y = mul(x.detach(), x);  // only the second factor carries gradient: dy/dx = x = 2
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 2.0);
}

TEST(Autograd, OnlyInputsThatRequireGradGetGradients) {
  Tensor x = leaf({1, 2}, {2});
  Tensor c = Tensor::from_vector({5, 6}, {2}, DType::F64);
  sum(mul(x, c)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{5, 6}));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, OnlyLeavesCanBeMarked) {
  Tensor x = leaf({1}, {1});
  Tensor y = x * 2.0;
  EXPECT_THROW(y.set_requires_grad(), Error);
  EXPECT_THROW(Tensor::zeros({1}, DType::I64).set_requires_grad(), Error);
}

TEST(Autograd, WrongGradientShapeIsCaught) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = record(x.detach() * 1.0, "BadBackward", {x}, [](const Tensor&, const Node&) {
    return std::vector<Tensor>{Tensor::ones({3}, DType::F64)};
  });
  try {
    sum(y).backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("BadBackward"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2]"), std::string::npos) << msg;
  }
}

TEST(Autograd, DeepGraphDoesNotRecurse) {
  Tensor x = leaf({1}, {1});
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = y * 1.0001;
  y.backward();
  EXPECT_NEAR(x.grad().item(), std::pow(1.0001, 20000), 1e-6);
}

TEST(Autograd, GraphExportNamesNodesAndLeaves) {
  Tensor w = leaf({1, 2, 3, 4}, {2, 2});
  w.set_name("fc.weight");
  Tensor x = Tensor::from_vector({1, 1}, {1, 2}, DType::F64);
  Tensor loss = mean(relu(linear(x, w)));
  const auto names = graph_node_names(loss);
  EXPECT_EQ(names, (std::vector<std::string>{"MeanBackward", "ReluBackward", "LinearBackward", "AccumulateGrad"}));
  const std::string dot = graph_to_dot(loss);
  EXPECT_NE(dot.find("digraph"), std::string::npos);
  EXPECT_NE(dot.find("LinearBackward"), std::string::npos);
  EXPECT_NE(dot.find("fc.weight"), std::string::npos);
  EXPECT_NE(dot.find("f64[2, 2]"), std::string::npos);
}

// ---- saved tensors and in-place updates --------------------------------------------------------------

namespace {
std::string backward_error(const Tensor& loss, bool retain = false) {
  try {
    loss.backward(Tensor(), retain);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(AutogradVersions, UpdatesInPlaceCountOnTheStorageSharedByViews) {
  Tensor table = Tensor::zeros({3, 2}, DType::F64);
  Tensor view = reshape(table, {6});
  Tensor copy = table.clone();
  EXPECT_EQ(table.version(), 0u);
  scatter_rows_(table, Tensor::from_int64({1}, {1}), Tensor::ones({1, 2}, DType::F64));
  EXPECT_EQ(table.version(), 1u);
  EXPECT_EQ(view.version(), 1u);  // a view sees its storage's count
  EXPECT_EQ(copy.version(), 0u);  // a copy has its own
  view.bump_version();
  EXPECT_EQ(table.version(), 2u);
  EXPECT_EQ(view.to_vector(), (std::vector<double>{0, 0, 1, 1, 0, 0}));  // not saved: always readable
}

TEST(AutogradVersions, CopyIntoATensorConvertsCountsAndChecksTheSize) {
  Tensor dst = Tensor::zeros({2, 2}, DType::F64);
  copy_(dst, Tensor::from_vector({1, 2, 3, 4}, {4}, DType::F32));  // any shape of equal numel, converted
  EXPECT_EQ(dst.to_vector(), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(dst.dtype(), DType::F64);
  EXPECT_EQ(dst.version(), 1u);
  copy_(dst, dst);  // onto itself: the values stay, the update counts
  EXPECT_EQ(dst.to_vector(), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(dst.version(), 2u);
  try {
    copy_(dst, Tensor::zeros({3}, DType::F64));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("copy_: cannot copy f64[3] cpu into f64[2, 2] cpu"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(dst.version(), 2u);
}

TEST(AutogradVersions, ASavedTensorUpdatedBeforeBackwardIsRefusedNamingItAndTheNode) {
  Tensor w = leaf({1, 2, 3}, {3});
  w.set_name("fc.weight");
  Tensor x = leaf({4, 5, 6}, {3});
  Tensor loss = sum(mul(x, w));  // MulBackward saves both factors
  w.bump_version();              // as an optimizer step between the forward and backward() would
  const std::string msg = backward_error(loss);
  EXPECT_NE(msg.find("'fc.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f64[3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("for MulBackward"), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 0 when saved, now 1"), std::string::npos) << msg;
  EXPECT_FALSE(x.grad().defined());  // nothing reached the leaves

  // The forward run again after the update reads the new values and goes through.
  Tensor again = sum(mul(x, w));
  again.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(w.grad().to_vector(), (std::vector<double>{4, 5, 6}));
}

TEST(AutogradVersions, UpdatesOfTensorsNoBackwardReadsAreAllowed) {
  // add saves nothing; relu saves its output, not its input; sum saves nothing.
  Tensor a = leaf({1, -2}, {2}), b = leaf({3, 4}, {2});
  Tensor loss = sum(relu(add(a, b)));
  a.bump_version();
  b.bump_version();
  loss.backward();
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{1, 1}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<double>{1, 1}));
}

TEST(AutogradVersions, AViewOfASavedTensorIsCheckedToo) {
  Tensor w = leaf({1, 2, 3, 4}, {2, 2});
  Tensor x = leaf({1, 1, 1, 1}, {2, 2});
  Tensor loss = sum(matmul(x, w));
  reshape(w.detach(), {4}).bump_version();  // any view counts on the same storage
  EXPECT_NE(backward_error(loss).find("MatmulBackward"), std::string::npos);
}

TEST(AutogradVersions, ARetainedGraphIsCheckedAtEachBackward) {
  Tensor w = leaf({2}, {1});
  Tensor loss = sum(mul(w, w));
  EXPECT_EQ(backward_error(loss, /*retain=*/true), "");
  EXPECT_DOUBLE_EQ(w.grad().item(), 4.0);
  w.bump_version();
  EXPECT_NE(backward_error(loss, true).find("updated in place"), std::string::npos);
  EXPECT_DOUBLE_EQ(w.grad().item(), 4.0);  // unchanged by the refused walk
}
