// CUDA device discovery. Compiled only when the build has the CUDA backend (RETORT_WITH_CUDA).
// The kernels themselves belong to the [cuda] work; for now the build proves that nvcc, the CUDA
// runtime, cuBLAS and cuDNN compile and link, and answers how many GPUs there are.
#pragma once
#include <string>

namespace retort::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// "NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB" for each device, or why there is none.
std::string describe_devices();
// Versions the binary was built against: "CUDA runtime 13.0, cuBLAS 13.x, cuDNN 9.x".
std::string library_versions();

}  // namespace retort::cuda
