// PLACEHOLDER: pooling kernels (helper in progress).
#include "engine/cpu/cpu_backend.h"
namespace retort::cpu {
void CpuBackend::max_pool2d_forward(const Tensor&, const Pool2dParams&, Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::max_pool2d_backward(const Tensor&, const Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::avg_pool2d_forward(const Tensor&, const Pool2dParams&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::avg_pool2d_backward(const Tensor&, const Pool2dParams&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::adaptive_avg_pool2d_forward(const Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::adaptive_avg_pool2d_backward(const Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::upsample_nearest2d_forward(const Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::upsample_nearest2d_backward(const Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
}
