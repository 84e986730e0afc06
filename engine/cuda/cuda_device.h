// CUDA device discovery and the backend's global switches, in a header that includes no CUDA
// header (plain C++ code includes it). Compiled only when the build has the CUDA backend
// (RETORT_WITH_CUDA).
#pragma once
#include <cstdint>
#include <string>

namespace retort::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// "NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB" for each device, or why there is none.
std::string describe_devices();
// The line of describe_devices for one device, or why there is no such device.
std::string describe_device(int index);
// Versions the binary was built against: "CUDA runtime 13.0, cuBLAS 13.x, cuDNN 9.x".
std::string library_versions();

// Global switches (also set from the environment at start-up):
//   RETORT_CUDA_DETERMINISTIC=1  bitwise-reproducible runs: cuDNN picks only deterministic algorithms, and
//                                grid_sample's input gradient (SoKD's augmentation) gathers in the CPU's
//                                order instead of adding with atomicAdd (sample.cu). Every other kernel of
//                                ours is deterministic in both modes (no floating-point atomics);
//   RETORT_ALLOW_TF32=1          cuBLAS GEMMs and cuDNN convolutions may use TF32 tensor cores for F32.
// Both are off by default: F32 results then follow IEEE single precision as on the CPU. A run from an
// experiment config sets the first from `experiment.deterministic` and the second from
// `experiment.math` (distill/trainer.cpp).
bool deterministic();
void set_deterministic(bool on);
bool allow_tf32();
void set_allow_tf32(bool on);

// Elements (n * n * matrices) per cusolverDnXsyevBatched call: cuSOLVER's documented INT32_MAX by
// default; larger batches are split into several calls. Tests lower it to exercise the split
// (0 restores the default).
int64_t symeig_max_elements_per_call();
void set_symeig_max_elements_per_call(int64_t elements);

}  // namespace retort::cuda
