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

namespace {
// "cuda:0 NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB", or "" when the device's properties cannot be read.
std::string device_line(int i) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, ", sm_%d%d, %.1f GiB", prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return "cuda:" + std::to_string(i) + " " + std::string(prop.name, strnlen(prop.name, sizeof prop.name)) + buf;
}
}  // namespace

std::string describe_devices() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(err);
  }
  std::string out;
  for (int i = 0; i < n; ++i)
    if (const std::string line = device_line(i); !line.empty()) out += line + "\n";
  return out.empty() ? "no CUDA device" : out;
}

std::string describe_device(int index) {
  if (index >= 0 && index < device_count())
    if (const std::string line = device_line(index); !line.empty()) return line;
  const std::string all = describe_devices();
  return "cuda:" + std::to_string(index) + ": " + all.substr(0, all.find('\n'));
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
