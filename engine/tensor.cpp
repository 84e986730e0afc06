// Tensor handle, factories, conversion and printing (see tensor.h).
#include "engine/tensor.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <ostream>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/profile.h"

namespace retort {

Storage::Storage(size_t nbytes_, Device device_) : nbytes(nbytes_), device(device_) {
  data = backend_for(device).allocate(nbytes);
}

Storage::~Storage() {
  if (data) backend_for(device).deallocate(data);
}

// nChw{B}c -> nchw in place. The B channels [cb*B, cb*B + B) of sample n are, in both layouts, the same
// B*S floats at the same offset ([S][B] blocked, [B][S] row-major), so each such chunk is transposed
// through a per-thread copy of it: one pass over memory, like a reorder into a second buffer.
// "Thread-safe" (tensor.h) between threads that all read through raw_data(); not against a kernel on
// another thread holding a raw_data_any_layout() pointer into the same storage — a graph's kernels run
// on one thread (OpenMP inside them), and the loader's workers touch only dataset tensors, never blocked.
void Storage::unblock() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const int b = block.load(std::memory_order_acquire);
  if (b == 0) return;  // another thread got here first
  const int64_t n = blocked_shape[0], c = blocked_shape[1], s = blocked_shape[2] * blocked_shape[3];
  const int64_t chunks = n * (c / b), len = b * s;
  float* base = static_cast<float*>(data);
  const bool timed = profiling::enabled();  // counted as the reading kernel's layout time
  const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
#pragma omp parallel if (chunks * len > 32768)
  {
    std::vector<float> tmp(static_cast<size_t>(len));
#pragma omp for
    for (int64_t i = 0; i < chunks; ++i) {
      float* chunk = base + i * len;
      std::memcpy(tmp.data(), chunk, static_cast<size_t>(len) * sizeof(float));
      for (int64_t k = 0; k < b; ++k)
        for (int64_t j = 0; j < s; ++j) chunk[k * s + j] = tmp[static_cast<size_t>(j * b + k)];
    }
  }
  block.store(0, std::memory_order_release);
  if (timed) profiling::add_layout_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

int Tensor::layout_block() const {
  const Storage& s = *impl().storage;
  const int b = s.block.load(std::memory_order_acquire);
  if (b == 0) return 0;
  const Shape& sh = impl().shape;  // a view of another shape (a reshape) reads row-major
  return sh.size() == 4 && sh[0] == s.blocked_shape[0] && sh[1] == s.blocked_shape[1] && sh[2] == s.blocked_shape[2] &&
                 sh[3] == s.blocked_shape[3]
             ? b
             : 0;
}

void Tensor::set_layout_block(int block) const {
  Storage& s = *impl().storage;
  if (block != 0) {
    RETORT_CHECK((block == 8 || block == 16) && dim() == 4 && dtype() == DType::F32 && device().is_cpu() &&
                     shape()[1] % block == 0 && nbytes() == s.nbytes,
                 "set_layout_block(", block, "): needs a whole-storage 4-d F32 CPU tensor with channels a multiple of ",
                 block, ", got ", meta_str());
    for (int i = 0; i < 4; ++i) s.blocked_shape[i] = shape()[static_cast<size_t>(i)];
  }
  s.block.store(block, std::memory_order_release);
}

TensorImpl& Tensor::impl() const {
  RETORT_CHECK(impl_ != nullptr, "use of an undefined tensor");
  return *impl_;
}

// ---- factories -----------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    RETORT_CHECK(d >= 0, "Tensor::empty: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  try {
    impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  } catch (const Error& e) {  // out of memory: say for what
    throw Error(detail::cat(e.what(), " (allocating a tensor ", dtype_name(dtype), shape_str(shape), " on ", device.str(), ")"));
  }
  impl->shape = shape;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

namespace {
template <class F>
void fill_host(Tensor& t, F&& next) {
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::F32: { float* p = t.data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(next(i)); break; }
    case DType::F64: { double* p = t.data<double>(); for (int64_t i = 0; i < n; ++i) p[i] = next(i); break; }
    case DType::I64: { int64_t* p = t.data<int64_t>(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(next(i)); break; }
  }
}
}  // namespace

Tensor Tensor::arange(double start, double end, double step, DType dtype) {
  RETORT_CHECK(step != 0.0, "arange: step must be non-zero");
  const double count = std::ceil((end - start) / step);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  Tensor t = empty({n}, dtype);
  fill_host(t, [&](int64_t i) { return start + step * static_cast<double>(i); });
  return t;
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype, double lo, double hi) {
  RETORT_CHECK(is_floating(dtype), "rand: dtype must be f32 or f64, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype);
  fill_host(t, [&](int64_t) { return gen.uniform(lo, hi); });
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
  RETORT_CHECK(is_floating(dtype), "randn: dtype must be f32 or f64, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype);
  fill_host(t, [&](int64_t) { return mean + std * gen.normal(); });
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype) {
  RETORT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
               " values for shape ", shape_str(shape), " (", shape_numel(shape), " elements)");
  Tensor t = empty(shape, dtype);
  fill_host(t, [&](int64_t i) { return values[i]; });
  return t;
}

Tensor Tensor::from_int64(const std::vector<int64_t>& values, const Shape& shape) {
  RETORT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
               " values for shape ", shape_str(shape), " (", shape_numel(shape), " elements)");
  Tensor t = empty(shape, DType::I64);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

// ---- metadata and access ---------------------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "Tensor::size")]; }

Tensor& Tensor::set_name(std::string name) {
  impl().name = std::move(name);
  return *this;
}

double Tensor::at(int64_t i) const {
  RETORT_CHECK(i >= 0 && i < numel(), "Tensor::at: index ", i, " out of range for ", meta_str());
  if (!device().is_cpu()) return to(Device::cpu()).at(i);
  switch (dtype()) {
    case DType::F32: return data<float>()[i];
    case DType::F64: return data<double>()[i];
    case DType::I64: return static_cast<double>(data<int64_t>()[i]);
  }
  return 0.0;
}

double Tensor::item() const {
  RETORT_CHECK(numel() == 1, "Tensor::item: tensor has ", numel(), " elements (shape ", shape_str(shape()),
               "), expected exactly 1");
  return at(0);
}

std::vector<double> Tensor::to_vector() const {
  const Tensor h = device().is_cpu() ? *this : to(Device::cpu());
  std::vector<double> v(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) v[i] = h.at(i);
  return v;
}

bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && impl().storage == other.impl().storage;
}

Tensor Tensor::detach() const {
  auto impl2 = std::make_shared<TensorImpl>();
  impl2->storage = impl().storage;
  impl2->shape = impl().shape;
  impl2->dtype = impl().dtype;
  impl2->name = impl().name;
  impl2->saved_version = impl().saved_version;  // a view of a saved tensor stays checked
  impl2->saved_shape = impl().saved_shape;
  return Tensor(std::move(impl2));
}

void Tensor::fail_modified_after_save() const {
  const TensorImpl& i = impl();
  const char* node = running_backward_node();
  RETORT_FAIL("autograd: ", i.name.empty() ? std::string("a tensor") : detail::cat("tensor '", i.name, "'"), " (",
              dtype_name(dtype()), shape_str(i.saved_shape), " ", device().str(), ") saved by the forward ", *node ? detail::cat("for ", node, " ") : std::string(),
              "was updated in place before the backward read it (version ", i.saved_version, " when saved, now ",
              i.storage->version, "): an optimizer step, load_state_dict, init or another in-place update ran "
              "between the forward and backward(). Call backward() first, or zero the gradients and run the forward again "
              "after the update.");
}

Tensor Tensor::view_as_shape(const Shape& shape) const {
  RETORT_CHECK(shape_numel(shape) == numel(), "view: cannot view ", meta_str(), " as shape ", shape_str(shape));
  Tensor v = detach();
  v.impl().shape = shape;
  return v;
}

// ---- conversion ------------------------------------------------------------------------------------

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = empty(shape(), dt, device());
  backend_for(device()).cast(*this, out);
  if (is_floating(dt) && is_floating(dtype())) {
    const DType from = dtype();
    return record(out, "ToDtypeBackward", {*this}, [from](const Tensor& g, const Node&) {
      return std::vector<Tensor>{g.to(from)};
    });
  }
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Backend& dst_backend = backend_for(dev);  // throws for a device this build cannot use
  Tensor out = empty(shape(), dtype(), dev);
  if (device().is_cpu()) {
    dst_backend.copy_from_host(raw_data(), out.raw_data(), nbytes());
  } else if (dev.is_cpu()) {
    backend_for(device()).copy_to_host(raw_data(), out.raw_data(), nbytes());
  } else {
    Tensor host = to(Device::cpu());
    dst_backend.copy_from_host(host.raw_data(), out.raw_data(), nbytes());
  }
  const Device from = device();
  return record(out, "ToDeviceBackward", {*this}, [from](const Tensor& g, const Node&) {
    return std::vector<Tensor>{g.to(from)};
  });
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  backend_for(device()).copy(raw_data(), out.raw_data(), nbytes());
  return record(out, "CloneBackward", {*this}, [](const Tensor& g, const Node&) {
    return std::vector<Tensor>{g};
  });
}

// ---- autograd --------------------------------------------------------------------------------------

Tensor& Tensor::set_requires_grad(bool on) {
  RETORT_CHECK(!on || is_floating(dtype()), "set_requires_grad: only f32/f64 tensors can require grad, this one is ",
               dtype_name(dtype()));
  RETORT_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can be marked; this one was produced by ",
               grad_fn()->name(), " (use detach() first)");
  impl().requires_grad = on;
  return *this;
}

void Tensor::set_grad(const Tensor& g) {
  if (!g.defined()) { impl().grad.reset(); return; }
  RETORT_CHECK(g.shape() == shape() && g.dtype() == dtype() && g.device() == device(),
               "set_grad: gradient ", g.meta_str(), " does not match tensor ", meta_str());
  impl().grad = g.impl_ptr();
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const { run_backward(*this, grad, retain_graph); }

// ---- printing --------------------------------------------------------------------------------------

std::string Tensor::meta_str() const {
  if (!defined()) return "undefined";
  return detail::cat(dtype_name(dtype()), shape_str(shape()), " ", device().str());
}

namespace {
constexpr int64_t kEdgeItems = 3;     // items shown at each end of a summarised dimension
constexpr int64_t kSummarizeAbove = 1000;

void format_elem(std::string& out, const Tensor& t, int64_t i) {
  char buf[64];
  if (t.dtype() == DType::I64) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(t.at(i)));
  else std::snprintf(buf, sizeof buf, "%.4f", t.at(i));
  out += buf;
}

void format_rec(std::string& out, const Tensor& t, int d, int64_t base, const std::vector<int64_t>& strides,
                bool summarize, int indent) {
  const int64_t n = t.shape()[d];
  out += "[";
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * kEdgeItems && i == kEdgeItems) {
      out += d + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' ');
      i = n - kEdgeItems;
    }
    if (d + 1 == t.dim()) format_elem(out, t, base + i);
    else format_rec(out, t, d + 1, base + i * strides[d], strides, summarize, indent + 1);
    if (i + 1 < n) out += d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' ');
  }
  out += "]";
}
}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  const Tensor h = device().is_cpu() ? *this : to(Device::cpu());
  std::string out = "tensor(";
  if (dim() == 0) format_elem(out, h, 0);
  else format_rec(out, h, 0, 0, contiguous_strides(shape()), numel() > kSummarizeAbove, 7);
  out += detail::cat(", dtype=", dtype_name(dtype()));
  if (!device().is_cpu()) out += ", device=" + device().str();
  if (grad_fn()) out += ", grad_fn=" + grad_fn()->name();
  else if (requires_grad()) out += ", requires_grad=true";
  return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace retort
