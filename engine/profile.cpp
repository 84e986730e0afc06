// The profiling decorator of profile.h: one forwarding method per Backend kernel.
#include "engine/profile.h"

#include <chrono>
#include <memory>

#include "engine/backend.h"

namespace retort {

// Defined in backend.cpp: the real backend behind a device, without the profiling decorator.
Backend& backend_for_unprofiled(Device device);

namespace profiling {
namespace {

bool g_enabled = false;
Table g_table;
double g_layout_pending = 0;  // add_layout_seconds within the call being timed
int g_timing = 0;             // kernel calls being timed (a decorated call may call another)

double conv_flops(const Shape& w, const Shape& y) {
  // 2 * N * O * OH * OW * (C/groups) * KH * KW multiply-adds, the same for each of the three passes.
  return 2.0 * double(y[0]) * double(y[1]) * double(y[2]) * double(y[3]) * double(w[1]) * double(w[2]) *
         double(w[3]);
}

std::string conv_key(const char* pass, const Shape& x, const Shape& w, const Conv2dParams& p) {
  return detail::cat(pass, " x", shape_str(x), " w", shape_str(w), " s", p.stride_h, " p", p.pad_h,
                     p.groups > 1 ? detail::cat(" g", p.groups) : std::string());
}

// Times one kernel call. Asynchronous devices (CUDA) are synchronised before and after, so the time is
// the kernel's own and not its launch's (this slows the step; profile for the breakdown, bench for speed).
class Timer {
 public:
  Timer(Backend& b, std::string name, double flops = 0, std::string shape_key = {})
      : b_(b), name_(std::move(name)), key_(std::move(shape_key)), flops_(flops) {
    b_.synchronize();
    g_layout_pending = 0;
    ++g_timing;
    t0_ = std::chrono::steady_clock::now();
  }
  ~Timer() {
    b_.synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    --g_timing;
    add(g_table.by_kernel[name_], s);
    if (!key_.empty()) add(g_table.by_conv_shape[key_], s);
    g_layout_pending = 0;
  }

 private:
  void add(Stat& st, double s) const {
    st.calls += 1;
    st.seconds += s;
    st.flops += flops_;
    st.layout_seconds += g_layout_pending;
  }
  Backend& b_;
  std::string name_, key_;
  double flops_;
  std::chrono::steady_clock::time_point t0_;
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : b_(inner) {}
  Device device() const override { return b_.device(); }
  std::string name() const override { return b_.name(); }
  bool supports(const std::string& k, DType dt) const override { return b_.supports(k, dt); }

  void* allocate(size_t n) override { Timer t(b_, "allocate"); return b_.allocate(n); }
  void deallocate(void* p) override { Timer t(b_, "deallocate"); b_.deallocate(p); }
  void copy_to_host(const void* s, void* d, size_t n) override { Timer t(b_, "copy_to_host"); b_.copy_to_host(s, d, n); }
  void copy_from_host(const void* s, void* d, size_t n) override {
    Timer t(b_, "copy_from_host");
    b_.copy_from_host(s, d, n);
  }
  void copy(const void* s, void* d, size_t n) override { Timer t(b_, "copy"); b_.copy(s, d, n); }
  void fill(Tensor& out, double v) override { Timer t(b_, "fill"); b_.fill(out, v); }
  void cast(const Tensor& s, Tensor& d) override { Timer t(b_, "cast"); b_.cast(s, d); }

  void unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) override {
    Timer t(b_, std::string("unary:") + unary_op_name(op));
    b_.unary(op, x, out, a, b);
  }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override {
    Timer t(b_, std::string("binary:") + binary_op_name(op));
    b_.binary(op, a, b, out);
  }
  void reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, Tensor& out) override {
    Timer t(b_, op == ReduceOp::Sum ? "reduce:sum" : op == ReduceOp::Max ? "reduce:max" : "reduce:min");
    b_.reduce(op, x, dims, out);
  }
  void strided_copy(const Tensor& s, const StridedView& sv, Tensor& d, const StridedView& dv,
                    const Shape& shape) override {
    Timer t(b_, "strided_copy");
    b_.strided_copy(s, sv, d, dv, shape);
  }
  void gather_rows(const Tensor& t, const Tensor& i, Tensor& o) override {
    Timer tm(b_, "gather_rows");
    b_.gather_rows(t, i, o);
  }
  void scatter_rows(Tensor& t, const Tensor& i, const Tensor& r) override {
    Timer tm(b_, "scatter_rows");
    b_.scatter_rows(t, i, r);
  }
  void gemm(const GemmArgs& g) override {
    Timer t(b_, "gemm", 2.0 * double(g.m) * double(g.n) * double(g.k) * double(g.batch));
    b_.gemm(g);
  }
  void symeig(const Tensor& a, Tensor& values, Tensor& vectors) override {
    Timer t(b_, "symeig");
    b_.symeig(a, values, vectors);
  }

  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                      Tensor& y) override {
    Timer t(b_, "conv2d_forward", conv_flops(w.shape(), y.shape()), conv_key("fwd", x.shape(), w.shape(), p));
    b_.conv2d_forward(x, w, bias, p, y);
  }
  void conv2d_bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                              const Tensor& bn_w, const Tensor& bn_b, const Tensor& rm, const Tensor& rv, double eps,
                              bool relu, Tensor& y) override {
    Timer t(b_, relu ? "conv2d_bn_relu_eval_forward" : "conv2d_bn_eval_forward", conv_flops(w.shape(), y.shape()),
            conv_key(relu ? "fwd+bn+relu" : "fwd+bn", x.shape(), w.shape(), p));
    b_.conv2d_bn_eval_forward(x, w, bias, p, bn_w, bn_b, rm, rv, eps, relu, y);
  }
  void conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p, Tensor& gx) override {
    Timer t(b_, "conv2d_backward_input", conv_flops(w.shape(), gy.shape()),
            conv_key("bwd-data", gx.shape(), w.shape(), p));
    b_.conv2d_backward_input(gy, w, p, gx);
  }
  void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p, Tensor& gw) override {
    Timer t(b_, "conv2d_backward_weight", conv_flops(gw.shape(), gy.shape()),
            conv_key("bwd-weight", x.shape(), gw.shape(), p));
    b_.conv2d_backward_weight(gy, x, p, gw);
  }

  void batchnorm_forward_train(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y,
                               Tensor& mean, Tensor& invstd) override {
    Timer t(b_, relu ? "batchnorm_relu_forward_train" : "batchnorm_forward_train");
    b_.batchnorm_forward_train(x, w, b, eps, relu, y, mean, invstd);
  }
  void batchnorm_forward_eval(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& rm,
                              const Tensor& rv, double eps, bool relu, Tensor& y) override {
    Timer t(b_, relu ? "batchnorm_relu_forward_eval" : "batchnorm_forward_eval");
    b_.batchnorm_forward_eval(x, w, b, rm, rv, eps, relu, y);
  }
  void batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean,
                          const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx, Tensor& gw,
                          Tensor& gb) override {
    Timer t(b_, relu_out.defined() ? "batchnorm_relu_backward" : "batchnorm_backward");
    b_.batchnorm_backward(gy, x, w, mean, invstd, training, relu_out, gx, gw, gb);
  }

  void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& idx) override {
    Timer t(b_, "max_pool2d_forward");
    b_.max_pool2d_forward(x, p, y, idx);
  }
  void max_pool2d_backward(const Tensor& gy, const Tensor& idx, const Pool2dParams& p, Tensor& gx) override {
    Timer t(b_, "max_pool2d_backward");
    b_.max_pool2d_backward(gy, idx, p, gx);
  }
  void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) override {
    Timer t(b_, "avg_pool2d_forward");
    b_.avg_pool2d_forward(x, p, y);
  }
  void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) override {
    Timer t(b_, "avg_pool2d_backward");
    b_.avg_pool2d_backward(gy, p, gx);
  }
  void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) override {
    Timer t(b_, "adaptive_avg_pool2d_forward");
    b_.adaptive_avg_pool2d_forward(x, y);
  }
  void adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& gx) override {
    Timer t(b_, "adaptive_avg_pool2d_backward");
    b_.adaptive_avg_pool2d_backward(gy, gx);
  }
  void upsample_nearest2d_forward(const Tensor& x, Tensor& y) override {
    Timer t(b_, "upsample_nearest2d_forward");
    b_.upsample_nearest2d_forward(x, y);
  }
  void upsample_nearest2d_backward(const Tensor& gy, Tensor& gx) override {
    Timer t(b_, "upsample_nearest2d_backward");
    b_.upsample_nearest2d_backward(gy, gx);
  }
  void grid_sample_forward(const Tensor& x, const Tensor& grid, Tensor& y) override {
    Timer t(b_, "grid_sample_forward");
    b_.grid_sample_forward(x, grid, y);
  }
  void grid_sample_backward(const Tensor& gy, const Tensor& x, const Tensor& grid, Tensor& gx,
                            Tensor& ggrid) override {
    Timer t(b_, "grid_sample_backward");
    b_.grid_sample_backward(gy, x, grid, gx, ggrid);
  }

  void softmax_forward(const Tensor& x, int dim, bool log, Tensor& y) override {
    Timer t(b_, log ? "log_softmax_forward" : "softmax_forward");
    b_.softmax_forward(x, dim, log, y);
  }
  void softmax_backward(const Tensor& gy, const Tensor& y, int dim, bool log, Tensor& gx) override {
    Timer t(b_, log ? "log_softmax_backward" : "softmax_backward");
    b_.softmax_backward(gy, y, dim, log, gx);
  }
  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, double ls, Tensor& loss,
                             Tensor& log_probs) override {
    Timer t(b_, "cross_entropy_forward");
    b_.cross_entropy_forward(logits, targets, ls, loss, log_probs);
  }
  void cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets, double ls,
                              Tensor& gx) override {
    Timer t(b_, "cross_entropy_backward");
    b_.cross_entropy_backward(grad, log_probs, targets, ls, gx);
  }
  void sgd_step(Tensor& p, const Tensor& g, Tensor& buf, const SgdStepArgs& a) override {
    Timer t(b_, "sgd_step");
    b_.sgd_step(p, g, buf, a);
  }
  void adam_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamStepArgs& a) override {
    Timer t(b_, "adam_step");
    b_.adam_step(p, g, m, v, a);
  }
  void synchronize() override { b_.synchronize(); }

 private:
  Backend& b_;
};

}  // namespace

void enable(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }
void add_layout_seconds(double s) {
  if (g_timing > 0) g_layout_pending += s;
  else g_table.layout_seconds_outside_kernels += s;
}
void reset() { g_table = Table{}; }
Table snapshot() { return g_table; }

}  // namespace profiling

Backend& backend_for(Device device) {
  if (!profiling::g_enabled) return backend_for_unprofiled(device);
  // One decorator per backend: the CPU's and each GPU's.
  static std::map<std::pair<int, int>, std::unique_ptr<profiling::ProfilingBackend>> wrappers;
  auto& w = wrappers[{static_cast<int>(device.type), device.index}];
  if (!w) w = std::make_unique<profiling::ProfilingBackend>(backend_for_unprofiled(device));
  return *w;
}

}  // namespace retort
