// Tensor: a cheap, copyable handle on a shared TensorImpl (storage + shape + dtype + autograd state).
//
// Conventions
//  - Every tensor is contiguous and row-major (PyTorch order, NCHW for images). There are no strides:
//    reshape() shares storage (a view); permute/slice/expand/... produce new contiguous tensors. This
//    keeps every kernel a simple loop over dense memory.
//  - Copying a Tensor copies the handle, not the data (like torch.Tensor). clone() copies data.
//  - Differentiable operations are free functions in engine/functions/*.h (add, conv2d, ...); the
//    arithmetic operators below forward to them.
#pragma once
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/generator.h"

namespace retort {

class Node;

// A block of device memory. Freed through the backend that allocated it.
//
// `version` counts the in-place updates of the memory made through the API that updates tensors in
// place (optimizer steps, copy_ and so load_state_dict, init::*_, batch-norm running statistics, scatter_rows_,
// Tensor::bump_version); every view of the storage sees the same count. Autograd uses it to refuse a
// backward that would read a saved tensor changed since its forward (Tensor::raw_data).
//
// `block` is the memory layout of an F32 CPU activation a oneDNN convolution wrote in its blocked
// layout (docs/architecture.md, "Blocked activations"): 0 = plain row-major (every other storage), 8 or
// 16 = nChw8c / nChw16c for the 4-d shape `blocked_shape` (channels a multiple of the block). Kernels
// that know the layout read such memory as it is (Tensor::raw_data_any_layout); any other read, through
// raw_data() or data<T>(), first rewrites it to row-major in place (unblock()), so the rest of the
// library only ever sees row-major data.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  uint64_t version = 0;
  std::atomic<int> block{0};
  int64_t blocked_shape[4] = {0, 0, 0, 0};
  void unblock();  // to row-major in place, once (thread-safe); values and version unchanged
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;        // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_fn;           // the node that produced this tensor (null for leaves)
  std::weak_ptr<Node> grad_accumulator;    // the leaf's AccumulateGrad node, shared across graphs
  std::string name;                        // optional, shown in graph exports ("layer1.0.conv1.weight")
  // For a tensor saved for a backward (autograd.h, saved()): the storage's version when it was saved;
  // reading its data once the version has moved on throws. kNotSaved for every other tensor.
  // Views of it (reshapes inside a backward) keep both fields; saved_shape is the saved tensor's shape.
  static constexpr uint64_t kNotSaved = ~uint64_t{0};
  uint64_t saved_version = kNotSaved;
  Shape saved_shape;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (defined() == false)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories -------------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = {});
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = {});
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = {});
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = {});
  static Tensor scalar(double value, DType dtype = DType::F32, Device device = {});  // 0-D
  // [start, start+step, ...) below end, like torch.arange.
  static Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::F32);
  static Tensor arange(int64_t n, DType dtype = DType::F32) { return arange(0.0, double(n), 1.0, dtype); }
  // Uniform in [lo, hi) and normal(mean, std), from a seeded Generator.
  static Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::F32, double lo = 0.0,
                     double hi = 1.0);
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32, double mean = 0.0,
                      double std = 1.0);
  // Copies host values; values.size() must equal the shape's element count.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::F32);
  static Tensor from_int64(const std::vector<int64_t>& values, const Shape& shape);  // I64 (labels)
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
  static Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }

  // ---- metadata --------------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::string& name() const { return impl().name; }
  Tensor& set_name(std::string name);

  // ---- data access (CPU tensors) ---------------------------------------------------------------
  // Typed pointer; throws if T does not match dtype() or the tensor is not on the CPU.
  template <class T> T* data();
  template <class T> const T* data() const;
  // The storage's device pointer, its data row-major. Throws for a tensor saved for a backward whose
  // storage has been updated in place since (check_unmodified). A storage in a blocked layout is
  // rewritten to row-major first (Storage::block).
  void* raw_data() { return const_cast<void*>(std::as_const(*this).raw_data()); }
  const void* raw_data() const {
    check_unmodified();
    Storage& s = *impl().storage;
    if (s.block.load(std::memory_order_acquire) != 0) [[unlikely]] s.unblock();
    return s.data;
  }
  // For kernels that read blocked layouts: the block of the storage's layout (0 = row-major; 8 or 16 =
  // nChw8c / nChw16c of a 4-d shape equal to this tensor's), and the pointer without any rewrite.
  // Decide every operand's layout before taking any pointer: raw_data() on another view of the same
  // storage would rewrite it under a pointer already taken.
  int layout_block() const;
  void* raw_data_any_layout() const { check_unmodified(); return impl().storage->data; }
  // Declares the storage's memory to hold this 4-d F32 CPU tensor in nChw{block}c (block 8 or 16, the
  // channels a multiple of it), or row-major (block 0); the caller has just written it so.
  void set_layout_block(int block) const;
  // In-place updates of the storage so far (shared by every view). Writes through data<T>() or
  // raw_data() are not counted: code that updates a tensor that way, where a recorded graph may have
  // saved it, calls bump_version() afterwards, as the library's own in-place operations do.
  uint64_t version() const { return impl().storage->version; }
  void bump_version() const { ++impl().storage->version; }
  // The single element of a one-element tensor, converted to double.
  double item() const;
  // Element at a flat (row-major) index, converted to double; for tests and printing.
  double at(int64_t flat_index) const;
  std::vector<double> to_vector() const;  // all elements as double (copies to host)

  // ---- conversion ------------------------------------------------------------------------------
  Tensor to(DType dtype) const;    // differentiable for float -> float
  Tensor to(Device device) const;  // copy to another device
  Tensor clone() const;            // differentiable copy with its own storage
  // A view of the same storage with no autograd history.
  Tensor detach() const;
  // Shares storage, new shape of equal numel; not differentiable (functions/shape.h has reshape()).
  Tensor view_as_shape(const Shape& shape) const;
  bool shares_storage(const Tensor& other) const;

  // ---- autograd --------------------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  // Only leaves (tensors without grad_fn) may be marked; only float tensors can require grad.
  Tensor& set_requires_grad(bool on = true);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  Tensor grad() const { return Tensor(impl().grad); }  // undefined if none yet
  void set_grad(const Tensor& g);
  void zero_grad() { impl().grad.reset(); }
  // Back-propagates from this tensor. A non-scalar tensor needs an explicit upstream gradient of
  // its own shape. Without retain_graph the graph's saved tensors are freed as it is walked.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  // ---- printing --------------------------------------------------------------------------------
  std::string str() const;  // "tensor([[1.0000, 2.0000]], dtype=f32)" with "..." for large tensors
  std::string meta_str() const;  // "f32[2, 3] cpu"

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  void check_unmodified() const {
    const TensorImpl& i = impl();
    if (i.saved_version != TensorImpl::kNotSaved && i.saved_version != i.storage->version) [[unlikely]]
      fail_modified_after_save();
  }
  [[noreturn]] void fail_modified_after_save() const;

  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Operators forwarding to the differentiable functions (defined in functions/elementwise.cpp).
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator*(double a, const Tensor& b);
Tensor operator-(const Tensor& a);

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };

template <class T>
T* Tensor::data() {
  RETORT_CHECK(dtype() == dtype_of<T>::value, "Tensor::data: tensor is ", dtype_name(dtype()),
               ", accessed as ", dtype_name(dtype_of<T>::value));
  RETORT_CHECK(device().is_cpu(), "Tensor::data: tensor is on ", device().str(),
               "; copy it to the CPU first (to(Device::cpu()))");
  return static_cast<T*>(raw_data());
}
template <class T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}

}  // namespace retort
