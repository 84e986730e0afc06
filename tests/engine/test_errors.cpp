// Bad input: shape, dtype and device mismatches throw retort::Error naming the operation and both
// operands.
#include <gtest/gtest.h>

#include "engine/functions.h"
#include "tests/common/expect.h"

using namespace retort;
using retort::testing::expect_error;

TEST(Errors, BroadcastShapeMismatchNamesBothShapes) {
  expect_error([] { add(Tensor::zeros({2, 3}), Tensor::zeros({4})); }, {"add", "[2, 3]", "[4]"});
  expect_error([] { mul(Tensor::zeros({2, 3}), Tensor::zeros({3, 3})); }, {"mul", "[2, 3]", "[3, 3]"});
}

TEST(Errors, DtypeMismatchNamesBothTensors) {
  expect_error([] { add(Tensor::zeros({2}), Tensor::zeros({2}, DType::F64)); }, {"add", "dtype", "f32[2]", "f64[2]"});
  expect_error([] { relu(Tensor::zeros({2}, DType::I64)); }, {"relu", "i64"});
}

TEST(Errors, MatmulInnerDimensionMismatch) {
  expect_error([] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); }, {"matmul", "[2, 3]", "[4, 5]"});
  expect_error([] { linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); }, {"linear", "f32[2, 3]", "f32[4, 5]"});
}

TEST(Errors, ShapeFunctionsNameTheProblem) {
  expect_error([] { reshape(Tensor::zeros({2, 3}), {4, 2}); }, {"reshape", "f32[2, 3]", "[4, 2]"});
  expect_error([] { permute(Tensor::zeros({2, 3}), {0, 0}); }, {"permute", "repeated"});
  expect_error([] { cat({Tensor::zeros({2, 3}), Tensor::zeros({2, 4})}, 0); }, {"cat", "[2, 4]", "[2, 3]"});
  expect_error([] { expand(Tensor::zeros({2, 3}), {4, 3}); }, {"expand", "f32[2, 3]", "[4, 3]"});
  expect_error([] { sum(Tensor::zeros({2, 3}), {2}); }, {"sum", "dimension 2", "2-D"});
  expect_error([] { squeeze(Tensor::zeros({2, 3}), 0); }, {"squeeze", "size 2"});
}

TEST(Errors, DeviceWithoutBackendIsRefused) {
  if (cuda_built() && cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  expect_error([] { Tensor::zeros({2}).to(Device::cuda(0)); }, {"cuda:0"});
}

TEST(Errors, UndefinedTensorIsNamed) {
  expect_error([] { relu(Tensor()); }, {"relu", "undefined"});
}
