// Bad input: shape, dtype and device mismatches throw retort::Error naming the operation and both
// operands.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "engine/env.h"
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

// Environment switches: unset or empty give the default, "0" and "1" off and on, anything else is a
// ConfigError naming the variable and the value (it used to read as on), so the apps exit 1 for it.
TEST(Errors, EnvironmentSwitchesTakeOnlyZeroOrOne) {
  const char* var = "RETORT_TEST_SWITCH";
  ::unsetenv(var);
  EXPECT_TRUE(env_switch(var, true));
  EXPECT_FALSE(env_switch(var, false));
  ::setenv(var, "", 1);
  EXPECT_TRUE(env_switch(var, true));
  ::setenv(var, "0", 1);
  EXPECT_FALSE(env_switch(var, true));
  ::setenv(var, "1", 1);
  EXPECT_TRUE(env_switch(var, false));
  for (const char* bad : {"off", "true", "2", " 1"}) {
    ::setenv(var, bad, 1);
    try {
      env_switch(var, true);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("RETORT_TEST_SWITCH=\"") + bad + "\": expected 0 (off) or 1 (on)"),
                std::string::npos)
          << e.what();
    }
  }
  ::unsetenv(var);
  EXPECT_NO_THROW(check_environment());  // this process's own environment is a valid one
}
