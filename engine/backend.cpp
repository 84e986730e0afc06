// Backend registry: which backend serves which device (see backend.h).
#include "engine/backend.h"

#include "engine/cpu/cpu_backend.h"

#ifdef RETORT_WITH_CUDA
#include <array>
#include <memory>
#include <mutex>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.h"
#endif

namespace retort {

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::Sign: return "sign";
    case UnaryOp::Relu: return "relu";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Pow: return "pow";
    case UnaryOp::Clamp: return "clamp";
    case UnaryOp::Affine: return "affine";
    case UnaryOp::LeakyRelu: return "leaky_relu";
  }
  return "?";
}

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Max: return "maximum";
    case BinaryOp::Min: return "minimum";
    case BinaryOp::Gt: return "gt";
    case BinaryOp::Ge: return "ge";
    case BinaryOp::Lt: return "lt";
    case BinaryOp::Le: return "le";
    case BinaryOp::Eq: return "eq";
    case BinaryOp::XLogY: return "xlogy";
    case BinaryOp::AddRelu: return "add_relu";
    case BinaryOp::MaskPositive: return "mask_positive";
  }
  return "?";
}

void Backend::conv2d_bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                                     const Tensor& bn_weight, const Tensor& bn_bias, const Tensor& running_mean,
                                     const Tensor& running_var, double eps, bool relu, Tensor& y) {
  Tensor conv_out = Tensor::empty(y.shape(), y.dtype(), y.device());
  conv2d_forward(x, w, bias, p, conv_out);
  batchnorm_forward_eval(conv_out, bn_weight, bn_bias, running_mean, running_var, eps, relu, y);
}

bool cuda_built() {
#ifdef RETORT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef RETORT_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::string cuda_device_description([[maybe_unused]] Device device) {
  if (device.is_cpu()) return "";
#ifdef RETORT_WITH_CUDA
  return cuda::describe_device(device.index);
#else
  return device.str() + ": this build has no CUDA backend";
#endif
}

bool cuda_deterministic() {
#ifdef RETORT_WITH_CUDA
  return cuda::deterministic();
#else
  return false;
#endif
}

void set_cuda_deterministic([[maybe_unused]] bool on) {
#ifdef RETORT_WITH_CUDA
  cuda::set_deterministic(on);
#endif
}

bool cuda_allow_tf32() {
#ifdef RETORT_WITH_CUDA
  return cuda::allow_tf32();
#else
  return false;
#endif
}

void set_cuda_allow_tf32([[maybe_unused]] bool on) {
#ifdef RETORT_WITH_CUDA
  cuda::set_allow_tf32(on);
#endif
}

Backend& backend_for_unprofiled(Device device) {
  static cpu::CpuBackend cpu_backend;
  if (device.is_cpu()) return cpu_backend;
  RETORT_CHECK(cuda_built(), "device ", device.str(),
               ": this build has no CUDA backend (reconfigure with -DRETORT_CUDA=ON where nvcc is installed)");
#ifdef RETORT_WITH_CUDA
  static auto* mu = new std::mutex();  // leaked with the backends: they outlive other statics
  static auto* backends = new std::array<std::unique_ptr<cuda::CudaBackend>, 64>();
  std::lock_guard<std::mutex> lock(*mu);
  // Range-checked before indexing the table: Device::parse accepts any "cuda:N".
  const bool in_table = device.index >= 0 && device.index < static_cast<int>(backends->size());
  if (in_table && (*backends)[static_cast<size_t>(device.index)]) return *(*backends)[static_cast<size_t>(device.index)];
  const int n = cuda_device_count();
  RETORT_CHECK(in_table && device.index < n, "device ", device.str(), ": ", n, " CUDA device(s) visible",
               n == 0 ? " (no GPU or no driver on this machine)" : "");
  auto& b = (*backends)[static_cast<size_t>(device.index)];
  b = std::make_unique<cuda::CudaBackend>(device.index);
  return *b;
#else
  RETORT_FAIL("unreachable");
#endif
}

}  // namespace retort
