// Element types, devices and shapes: the small vocabulary every other engine file speaks.
// Shapes are PyTorch's: row-major, outermost dimension first (NCHW for images).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// The helpers below run on the host and, compiled by nvcc, in kernels too.
#if defined(__CUDACC__)
#define RETORT_HOST_DEVICE __host__ __device__
#else
#define RETORT_HOST_DEVICE
#endif

namespace retort {

// F32 and F64 are the float types every kernel supports; I64 holds class labels and pool indices.
enum class DType : uint8_t { F32, F64, I64 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);  // "f32", "f64", "i64"
inline bool is_floating(DType dt) { return dt == DType::F32 || dt == DType::F64; }

// A float converted to I64 (Tensor::to(DType::I64)) on every device: truncated toward zero, saturated
// at the int64 range, NaN -> 0 — what a GPU's conversion instruction does. A plain static_cast is
// undefined for NaN and out-of-range values (x86 gives INT64_MIN), so the backends call this instead.
RETORT_HOST_DEVICE inline int64_t float_to_int64(double v) {
  if (v != v) return 0;
  if (v >= 9223372036854775808.0) return INT64_MAX;  // 2^63
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return static_cast<int64_t>(v);
}

// max(v, 0) with NaN kept NaN, as torch.relu does — written `v < 0 ? 0 : v` because a comparison with
// NaN is false (std::max(v, 0) and `v > 0 ? v : 0` both turn NaN into 0, hiding a broken run behind
// finite logits). Every ReLU kernel on every device calls this one expression.
template <class T>
RETORT_HOST_DEVICE inline T relu_keep_nan(T v) {
  return v < T(0) ? T(0) : v;
}

// The larger / smaller of u and v, NaN if either is (torch.maximum, amax, max-pool); ties give u. Max and
// min reductions fold with these, so one NaN anywhere makes the result NaN.
template <class T>
RETORT_HOST_DEVICE inline T max_keep_nan(T u, T v) {
  return (u >= v || u != u) ? u : v;
}
template <class T>
RETORT_HOST_DEVICE inline T min_keep_nan(T u, T v) {
  return (u <= v || u != u) ? u : v;
}
// -1, 0 or 1; NaN stays NaN (torch.sign).
template <class T>
RETORT_HOST_DEVICE inline T sign_keep_nan(T v) {
  return v != v ? v : T((v > T(0)) - (v < T(0)));
}

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  static Device parse(const std::string& s);  // "cpu", "cuda", "cuda:1"
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);
// Row-major strides in elements for a contiguous tensor of this shape.
std::vector<int64_t> contiguous_strides(const Shape& s);
// Wraps a possibly negative dimension index into [0, ndim); throws naming `op` when out of range.
int normalize_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace retort
