// Element types, devices and shapes: the small vocabulary every other engine file speaks.
// Shapes are PyTorch's: row-major, outermost dimension first (NCHW for images).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace retort {

// F32 and F64 are the float types every kernel supports; I64 holds class labels and pool indices.
enum class DType : uint8_t { F32, F64, I64 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);  // "f32", "f64", "i64"
inline bool is_floating(DType dt) { return dt == DType::F32 || dt == DType::F64; }

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
