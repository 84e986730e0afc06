// Softmax family and losses (see loss.h). softmax, log_softmax and cross_entropy run dedicated
// kernels (one stable pass per row); kl_div, mse_loss and dropout are composed from elementwise
// functions under NoGradGuard and record a single node with a hand-written backward, so the graph
// shows one "KLDivBackward" rather than the pieces. Losses reduce to a 0-D tensor and reject empty
// inputs (a mean over nothing would silently be NaN).
#include "engine/functions/loss.h"

#include <type_traits>

#include "engine/functions/common.h"
#include "engine/functions/elementwise.h"
#include "engine/functions/reduce.h"

namespace retort {

namespace {

Tensor softmax_impl(const Tensor& x_in, int64_t dim, bool log, const char* op, const char* node) {
  fn::check_float(op, x_in);
  // A 0-D tensor is a single-element row (as in PyTorch, where dim 0 and -1 are accepted).
  const Tensor x = x_in.dim() == 0 ? x_in.view_as_shape({1}) : x_in;
  const int d = normalize_dim(dim, x.dim(), op);
  Tensor y = Tensor::empty_like(x);
  backend_for(x).softmax_forward(x, d, log, y);
  y = y.view_as_shape(x_in.shape());
  return record(y, node, {x_in}, [y = saved(y), d, log](const Tensor& g, const Node&) {
    Tensor gx = Tensor::empty_like(y);
    const Shape rows = y.dim() == 0 ? Shape{1} : y.shape();
    Tensor gx_rows = gx.view_as_shape(rows);
    backend_for(y).softmax_backward(g.view_as_shape(rows), y.view_as_shape(rows), d, log, gx_rows);
    return std::vector<Tensor>{gx};
  });
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b, const char* wa, const char* wb) {
  fn::check_compatible(op, a, b, wa, wb);
  RETORT_CHECK(a.shape() == b.shape(), op, ": ", wa, " ", a.meta_str(), " and ", wb, " ", b.meta_str(),
               " must have the same shape");
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false, "softmax", "SoftmaxBackward"); }

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, true, "log_softmax", "LogSoftmaxBackward");
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, double label_smoothing) {
  const char* op = "cross_entropy";
  fn::check_float(op, logits, "logits");
  fn::check_defined(op, targets, "targets");
  fn::check_dim(op, logits, 2, "logits", "[N, C]");
  RETORT_CHECK(targets.dtype() == DType::I64, op, ": targets must be i64 class indices, got ", targets.meta_str(),
               " (logits ", logits.meta_str(), ")");
  RETORT_CHECK(targets.dim() == 1 && targets.shape()[0] == logits.shape()[0], op, ": targets ", targets.meta_str(),
               " must be [N] for logits ", logits.meta_str());
  RETORT_CHECK(targets.device() == logits.device(), op, ": device mismatch: logits is ", logits.meta_str(),
               ", targets is ", targets.meta_str());
  RETORT_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
               label_smoothing);
  const int64_t n = logits.shape()[0], c = logits.shape()[1];
  RETORT_CHECK(n > 0, op, ": empty batch, logits ", logits.meta_str());
  {
    // Checked here rather than in each backend's kernel, so every device reports it identically.
    const Tensor host = targets.to(Device::cpu());
    const int64_t* t = host.data<int64_t>();
    for (int64_t i = 0; i < n; ++i)
      RETORT_CHECK(t[i] >= 0 && t[i] < c, op, ": target ", t[i], " at index ", i, " is out of range [0, ", c,
                   ") for logits ", logits.meta_str());
  }
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  Tensor log_probs = Tensor::empty_like(logits);
  backend_for(logits).cross_entropy_forward(logits, targets, label_smoothing, loss, log_probs);
  return record(loss, "CrossEntropyBackward", {logits},
                [lp = saved(log_probs), t = targets, label_smoothing](const Tensor& g, const Node&) {
                  Tensor gx = Tensor::empty_like(lp);
                  backend_for(lp).cross_entropy_backward(g, lp, t, label_smoothing, gx);
                  return std::vector<Tensor>{gx};
                });
}

Tensor kl_div(const Tensor& input, const Tensor& target) {
  check_same_shape("kl_div", input, target, "input", "target");
  // "batchmean" divides by the batch size; a 0-D input is a batch of one (as PyTorch).
  const int64_t n = input.dim() == 0 ? 1 : input.shape()[0];
  RETORT_CHECK(n > 0 && input.numel() > 0, "kl_div: empty input ", input.meta_str());
  const double inv_n = 1.0 / static_cast<double>(n);
  Tensor out;
  {
    NoGradGuard ng;
    out = affine(sum(sub(xlogy(target, target), mul(target, input))), inv_n, 0.0);
  }
  return record(out, "KLDivBackward", {input, target},
                [x = saved(input), t = saved(target), inv_n](const Tensor& g, const Node& node) {
                  const Tensor gs = affine(g, inv_n, 0.0);
                  Tensor gi, gt;
                  if (node.needs_grad(0)) gi = neg(mul(t, gs));
                  if (node.needs_grad(1)) {
                    // d/dt [t log t - t x] = log t + 1 - x, defined as 0 where t == 0 (xlogy's
                    // convention); log is taken of 1 there so no -inf * 0 = NaN leaks in.
                    const Tensor zero = eq(t, Tensor::zeros({}, t.dtype(), t.device()));
                    const Tensor log_t = log(add(t, zero));
                    gt = mul(mul(affine(zero, -1.0, 1.0), sub(affine(log_t, 1.0, 1.0), x)), gs);
                  }
                  return std::vector<Tensor>{gi, gt};
                });
}

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  check_same_shape("mse_loss", a, b, "input", "target");
  RETORT_CHECK(a.numel() > 0, "mse_loss: empty input ", a.meta_str());
  const double inv_n = 1.0 / static_cast<double>(a.numel());
  Tensor out, diff;
  {
    NoGradGuard ng;
    diff = sub(a, b);
    out = affine(sum(mul(diff, diff)), inv_n, 0.0);
  }
  return record(out, "MseLossBackward", {a, b}, [d = saved(diff), inv_n](const Tensor& g, const Node& node) {
    const Tensor ga = mul(d, affine(g, 2.0 * inv_n, 0.0));  // 2 (a - b) / n
    return std::vector<Tensor>{node.needs_grad(0) ? ga : Tensor(), node.needs_grad(1) ? neg(ga) : Tensor()};
  });
}

Tensor smooth_l1_loss(const Tensor& a, const Tensor& b, double beta) {
  check_same_shape("smooth_l1_loss", a, b, "input", "target");
  RETORT_CHECK(a.numel() > 0, "smooth_l1_loss: empty input ", a.meta_str());
  RETORT_CHECK(std::isfinite(beta) && beta > 0, "smooth_l1_loss: beta must be a positive number, got ", beta,
               " (input ", a.meta_str(), ")");
  const double inv_n = 1.0 / static_cast<double>(a.numel());
  Tensor out, diff;
  {
    NoGradGuard ng;
    diff = sub(a, b);
    // With m = min(|d|, beta): 0.5 m² / beta + (|d| - m) is both branches at once.
    const Tensor ad = abs(diff);
    const Tensor m = clamp(ad, 0.0, beta);
    out = affine(sum(add(affine(mul(m, m), 0.5 / beta, 0.0), sub(ad, m))), inv_n, 0.0);
  }
  return record(out, "SmoothL1LossBackward", {a, b},
                [d = saved(diff), beta, inv_n](const Tensor& g, const Node& node) {
                  const Tensor ga = mul(clamp(d, -beta, beta), affine(g, inv_n / beta, 0.0));
                  return std::vector<Tensor>{node.needs_grad(0) ? ga : Tensor(),
                                             node.needs_grad(1) ? neg(ga) : Tensor()};
                });
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  fn::check_float("dropout", x);
  RETORT_CHECK(p >= 0.0 && p < 1.0, "dropout: probability p must be in [0, 1), got ", p);
  if (!training || p == 0.0) return x;
  // The mask is drawn on the host, one uniform per element in row-major order, so a seed gives the
  // same mask on every device.
  const double scale = 1.0 / (1.0 - p);
  Tensor mask = Tensor::empty(x.shape(), x.dtype());
  auto draw = [&](auto* m) {
    using T = std::remove_pointer_t<decltype(m)>;
    for (int64_t i = 0; i < x.numel(); ++i) m[i] = gen.uniform() >= p ? static_cast<T>(scale) : T(0);
  };
  if (x.dtype() == DType::F32) draw(mask.data<float>());
  else draw(mask.data<double>());
  mask = mask.to(x.device());
  Tensor out;
  {
    NoGradGuard ng;
    out = mul(x, mask);
  }
  return record(out, "DropoutBackward", {x}, [m = mask](const Tensor& g, const Node&) {
    return std::vector<Tensor>{mul(g, m)};
  });
}

}  // namespace retort
