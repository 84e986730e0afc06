// PLACEHOLDER: grid sample kernels (helper in progress).
#include "engine/cpu/cpu_backend.h"
namespace retort::cpu {
void CpuBackend::grid_sample_forward(const Tensor&, const Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::grid_sample_backward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
}
