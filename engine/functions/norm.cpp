// batch_norm (see norm.h): validation, the backend's train/eval kernels, the running-statistics update
// and the BatchNormBackward node.
//
// The running statistics are buffers, not graph inputs: they are updated in place with raw backend
// calls (nothing recorded) and never receive gradients. Everything here goes through backend_for(),
// so it runs unchanged on any device.
#include "engine/functions/norm.h"

#include <limits>

#include "engine/functions/common.h"

namespace retort {

namespace {

constexpr const char* kOp = "batch_norm";

// An optional per-channel tensor: when defined, [C] with x's dtype and device.
void check_per_channel(const Tensor& x, const Tensor& t, const char* what) {
  if (!t.defined()) return;
  fn::check_compatible(kOp, x, t, "input", what);
  RETORT_CHECK(t.dim() == 1 && t.shape()[0] == x.shape()[1], kOp, ": ", what, " must be [", x.shape()[1],
               "] (one value per channel of input ", x.meta_str(), "), got ", t.meta_str());
}

// r = (1 - momentum) * r + momentum * stat, in place. Computed in f64 temporaries and cast back once,
// so an f32 buffer sees a single rounding.
void blend_into(Backend& be, Tensor& r, const Tensor& stat64, double momentum) {
  Tensor r64 = Tensor::empty(r.shape(), DType::F64, r.device());
  be.cast(r, r64);
  be.unary(UnaryOp::Affine, r64, r64, 1.0 - momentum, 0.0);
  Tensor s = Tensor::empty(r.shape(), DType::F64, r.device());
  be.unary(UnaryOp::Affine, stat64, s, momentum, 0.0);
  be.binary(BinaryOp::Add, r64, s, r64);
  be.cast(r64, r);
  r.bump_version();
}

// The kernel reports invstd = 1/sqrt(var + eps) only; the running variance needs var back, made
// unbiased: var = (invstd^-2 - eps) * n / (n - 1).
void update_running_stats(Backend& be, Tensor running_mean, Tensor running_var, const Tensor& mean,
                          const Tensor& invstd, double momentum, double eps, int64_t n) {
  Tensor mean64 = Tensor::empty(mean.shape(), DType::F64, mean.device());
  be.cast(mean, mean64);
  blend_into(be, running_mean, mean64, momentum);

  Tensor var64 = Tensor::empty(invstd.shape(), DType::F64, invstd.device());
  be.cast(invstd, var64);
  be.unary(UnaryOp::Pow, var64, var64, -2.0, 0.0);
  const double bessel = static_cast<double>(n) / static_cast<double>(n - 1);
  be.unary(UnaryOp::Affine, var64, var64, bessel, -eps * bessel);
  // A constant channel can come back a rounding error below zero; a variance never should.
  be.unary(UnaryOp::Clamp, var64, var64, 0.0, std::numeric_limits<double>::infinity());
  blend_into(be, running_var, var64, momentum);
}

}  // namespace

namespace {

Tensor batch_norm_impl(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, bool training, double momentum, double eps, bool relu) {
  fn::check_float(kOp, x, "input");
  RETORT_CHECK(x.dim() >= 2, kOp, ": input must be at least 2-D [N, C, *], got ", x.meta_str());
  check_per_channel(x, weight, "weight");
  check_per_channel(x, bias, "bias");
  check_per_channel(x, running_mean, "running_mean");
  check_per_channel(x, running_var, "running_var");
  RETORT_CHECK(running_mean.defined() == running_var.defined(), kOp,
               ": running_mean and running_var must be given together (input ", x.meta_str(), ")");
  RETORT_CHECK(training || running_mean.defined(), kOp,
               ": evaluation mode (training=false) needs running_mean and running_var; input ", x.meta_str());
  RETORT_CHECK(eps >= 0, kOp, ": eps must be non-negative, got ", eps);

  const int64_t channels = x.shape()[1];
  const int64_t per_channel = channels > 0 ? x.numel() / channels : 0;
  if (training)
    RETORT_CHECK(per_channel > 1, kOp, ": expected more than 1 value per channel when training, got input ",
                 x.meta_str());

  Backend& be = backend_for(x);
  Tensor y = Tensor::empty_like(x);
  Tensor mean = Tensor::empty({channels}, x.dtype(), x.device());
  Tensor invstd = Tensor::empty({channels}, x.dtype(), x.device());
  if (training) {
    be.batchnorm_forward_train(x, weight, bias, eps, relu, y, mean, invstd);
    if (running_mean.defined())
      update_running_stats(be, running_mean, running_var, mean, invstd, momentum, eps, per_channel);
  } else {
    be.batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, relu, y);
    if (!should_record({&x, &weight, &bias})) return y;
    // Snapshot the statistics the backward needs: the buffers may be updated in place before it runs.
    be.copy(running_mean.raw_data(), mean.raw_data(), mean.nbytes());
    Tensor v64 = Tensor::empty({channels}, DType::F64, x.device());
    be.cast(running_var, v64);
    be.unary(UnaryOp::Affine, v64, v64, 1.0, eps);
    be.unary(UnaryOp::Pow, v64, v64, -0.5, 0.0);
    be.cast(v64, invstd);
  }

  return record(y, relu ? "BatchNormReluBackward" : "BatchNormBackward", {x, weight, bias},
                [x = saved(x), w = saved(weight), mean, invstd, training,
                 out = relu ? saved(y) : Tensor()](const Tensor& g, const Node& node) {
                  Tensor gx = node.needs_grad(0) ? Tensor::empty_like(x) : Tensor();
                  Tensor gw = node.needs_grad(1) ? Tensor::empty_like(mean) : Tensor();
                  Tensor gb = node.needs_grad(2) ? Tensor::empty_like(mean) : Tensor();
                  backend_for(x).batchnorm_backward(g, x, w, mean, invstd, training, out, gx, gw, gb);
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  return batch_norm_impl(x, running_mean, running_var, weight, bias, training, momentum, eps, false);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps) {
  return batch_norm_impl(x, running_mean, running_var, weight, bias, training, momentum, eps, true);
}

}  // namespace retort
