// PLACEHOLDER: batch norm kernels (helper in progress).
#include "engine/cpu/cpu_backend.h"
namespace retort::cpu {
void CpuBackend::batchnorm_forward_train(const Tensor&, const Tensor&, const Tensor&, double, Tensor&, Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::batchnorm_forward_eval(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, Tensor&) { RETORT_FAIL("not implemented"); }
void CpuBackend::batchnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool, Tensor&, Tensor&, Tensor&) { RETORT_FAIL("not implemented"); }
}
