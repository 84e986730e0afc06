// CUDA device discovery (see cuda_device.h).
#include "engine/cuda/cuda_device.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace retort::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string describe_devices() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(err);
  }
  std::string out;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, ", sm_%d%d, %.1f GiB\n", prop.major, prop.minor,
                  static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    out += "cuda:" + std::to_string(i) + " " + std::string(prop.name, strnlen(prop.name, sizeof prop.name)) + buf;
  }
  return out.empty() ? "no CUDA device" : out;
}

std::string library_versions() {
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  char buf[160];
  std::snprintf(buf, sizeof buf, "CUDA runtime %d.%d, cuBLAS %d, cuDNN %zu", rt / 1000, (rt % 1000) / 10,
                CUBLAS_VERSION, static_cast<size_t>(cudnnGetVersion()));
  return buf;
}

}  // namespace retort::cuda
