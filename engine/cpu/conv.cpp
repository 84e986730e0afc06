// PLACEHOLDER: convolution kernels (helper in progress).
#include "engine/cpu/cpu_backend.h"
namespace retort::cpu {
void CpuBackend::conv2d_forward(const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) { RETORT_FAIL("conv2d_forward: not implemented"); }
void CpuBackend::conv2d_backward_input(const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) { RETORT_FAIL("conv2d_backward_input: not implemented"); }
void CpuBackend::conv2d_backward_weight(const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) { RETORT_FAIL("conv2d_backward_weight: not implemented"); }
}
