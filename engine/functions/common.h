// Checks shared by the differentiable functions: every check names the operation and the tensors'
// dtype, shape and device, so a user sees what was passed and what was expected.
#pragma once
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/tensor.h"

namespace retort::fn {

inline void check_defined(const char* op, const Tensor& t, const char* what) {
  RETORT_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

inline void check_float(const char* op, const Tensor& t, const char* what = "input") {
  check_defined(op, t, what);
  RETORT_CHECK(is_floating(t.dtype()), op, ": ", what, " must be f32 or f64, got ", t.meta_str());
}

// Same float dtype and same device.
inline void check_compatible(const char* op, const Tensor& a, const Tensor& b, const char* wa = "a",
                             const char* wb = "b") {
  check_float(op, a, wa);
  check_float(op, b, wb);
  RETORT_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", wa, " is ", a.meta_str(), ", ", wb, " is ",
               b.meta_str());
  RETORT_CHECK(a.device() == b.device(), op, ": device mismatch: ", wa, " is ", a.meta_str(), ", ", wb, " is ",
               b.meta_str());
}

inline void check_dim(const char* op, const Tensor& t, int64_t ndim, const char* what, const char* layout) {
  RETORT_CHECK(t.dim() == ndim, op, ": ", what, " must be ", ndim, "-D ", layout, ", got ", t.meta_str());
}

}  // namespace retort::fn
