// PLACEHOLDER: softmax kernels (helper in progress).
#include "engine/cpu/cpu_backend.h"
namespace retort::cpu {
void CpuBackend::softmax_forward(const Tensor&, int, bool, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::softmax_backward(const Tensor&, const Tensor&, int, bool, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::cross_entropy_forward(const Tensor&, const Tensor&, double, Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, double, Tensor&) { RETORT_FAIL("not implemented"); }
}
