// The CUDA build: compiled wherever nvcc is found; device tests skip on machines without a GPU.
#include <gtest/gtest.h>

#include "engine/backend.h"

using namespace retort;

TEST(Cuda, DeviceCountIsConsistent) {
  const int n = cuda_device_count();
  EXPECT_GE(n, 0);
  if (!cuda_built()) {
    EXPECT_EQ(n, 0);
  }
}

TEST(Cuda, CpuOnlyMachineRefusesCudaTensorsClearly) {
  if (cuda_built() && cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  try {
    Tensor::zeros({2}, DType::F32, Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}
