// The backend kernel interface: the small set of kernels every device implements.
//
// Functions (engine/functions/) validate shapes and dtypes once, allocate outputs, call these kernels
// and record autograd nodes; kernels know nothing about autograd. Every tensor handed to a kernel is
// contiguous, on this backend's device, of one float dtype (F32 or F64) unless stated (I64 indices
// and labels), and outputs are pre-allocated with the right shape. Kernels may assume what the
// function already checked. A backend that lacks a kernel answers supports() == false and throws a
// retort::Error naming it — never a silent fallback.
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace retort {

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Abs, Sign, Relu, Sigmoid, Tanh,
  Pow,      // x^alpha
  Clamp,    // min(max(x, alpha), beta)
  Affine,   // alpha * x + beta
  LeakyRelu,  // x > 0 ? x : alpha * x
};
enum class BinaryOp {
  Add, Sub, Mul, Div, Max, Min,
  Gt, Ge, Lt, Le, Eq,   // 1 where true, 0 elsewhere (same dtype as inputs)
  XLogY,                // a * log(b), 0 where a == 0 (as torch.xlogy)
  AddRelu,              // max(a + b, 0) — a residual sum and the ReLU after it in one pass
  MaskPositive,         // b > 0 ? a : 0 — ReLU's backward in one pass (a the gradient, b the output)
};
enum class ReduceOp { Sum, Max, Min };

const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);

// An N-d strided window on a tensor's flat storage, in elements.
struct StridedView {
  int64_t offset = 0;
  std::vector<int64_t> strides;  // one per dimension of the copied shape (0 = broadcast)
};

// Row-major (strided-batched) GEMM: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], with op(A) of
// shape [m, k], op(B) [k, n], C [m, n]; A is stored [m, k] ([k, m] with trans_a) with leading dimension
// lda, B [k, n] ([n, k]) with ldb. Pointers are raw device pointers of `dtype`. With k == 0 nothing of A
// or B is read (C = beta C, beta == 0 overwriting) and lda, ldb may be anything >= 0.
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  double alpha = 1.0, beta = 0.0;
  const void* a = nullptr; int64_t lda = 0;
  const void* b = nullptr; int64_t ldb = 0;
  void* c = nullptr;       int64_t ldc = 0;
  DType dtype = DType::F32;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;  // element strides between batches

  // lda and ldb as BLAS libraries (OpenBLAS, cuBLAS) accept them: at least 1 and the stored operand's
  // width. They check this even when k == 0 and nothing is read; a valid call with k > 0 already meets
  // it, so only k == 0 calls change.
  int64_t blas_lda() const { return std::max<int64_t>({lda, 1, trans_a ? m : k}); }
  int64_t blas_ldb() const { return std::max<int64_t>({ldb, 1, trans_b ? k : n}); }
};

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};

// Fused optimizer updates (engine/optim/sgd.h and adam.h give the rules). Scalars are cast to the
// parameter's type before use, as PyTorch does, so F32 results follow its rounding on every device.
struct SgdStepArgs {
  double lr = 0, weight_decay = 0, momentum = 0, dampening = 0;
  bool nesterov = false;
  bool first = false;  // the first step initialises the momentum buffer with the gradient
};
struct AdamStepArgs {
  double decay_factor = 1;  // AdamW: 1 - lr * wd (1 = none)
  double l2 = 0;            // Adam: wd added to the gradient (0 = none)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double step_size = 0;     // lr / (1 - beta1^t)
  double bc2_sqrt = 1;      // sqrt(1 - beta2^t)
};

struct Pool2dParams {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  bool count_include_pad = true;  // avg pool only (PyTorch default)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // Whether `kernel` (the method name, e.g. "conv2d_forward") is implemented for `dtype`.
  virtual bool supports(const std::string& kernel, DType dtype) const = 0;

  // ---- memory --------------------------------------------------------------------------------
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr) = 0;
  // Copies nbytes between this backend's memory and the host (either direction) or within it.
  virtual void copy_to_host(const void* src, void* host_dst, size_t nbytes) = 0;
  virtual void copy_from_host(const void* host_src, void* dst, size_t nbytes) = 0;
  virtual void copy(const void* src, void* dst, size_t nbytes) = 0;
  virtual void fill(Tensor& out, double value) = 0;
  // dst = src converted to dst's dtype (any of F32, F64, I64).
  virtual void cast(const Tensor& src, Tensor& dst) = 0;

  // ---- elementwise, reductions, copies -------------------------------------------------------
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha = 0, double beta = 0) = 0;
  // `a` and `b` broadcast (PyTorch rules, aligned at the trailing dimension) to out's shape.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // Reduces x over `dims` (sorted, unique); out has x's rank with those dims of size 1.
  // Sums accumulate in double.
  virtual void reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, Tensor& out) = 0;
  // dst[dst_view @ idx] = src[src_view @ idx] for every index idx of `shape`.
  virtual void strided_copy(const Tensor& src, const StridedView& src_view, Tensor& dst,
                            const StridedView& dst_view, const Shape& shape) = 0;
  virtual void gemm(const GemmArgs& args) = 0;
  // Rows of a table [N, D] (F32 or F64) by I64 indices [M] on this device, each in [0, N) (checked
  // by the caller, engine/functions/index.h): out[i, :] = table[indices[i], :], out [M, D];
  // scatter_rows writes table[indices[i], :] = rows[i, :], the indices distinct.
  virtual void gather_rows(const Tensor& table, const Tensor& indices, Tensor& out) = 0;
  virtual void scatter_rows(Tensor& table, const Tensor& indices, const Tensor& rows) = 0;

  // Symmetric eigendecomposition of a batch of matrices a [B, n, n] (symmetric: only the lower triangle
  // is read): values [B, n] ascending, vectors [B, n, n] with column j the unit eigenvector of value j
  // (a = V diag(values) V^T). Each eigenvector's sign is fixed so that its component of largest
  // magnitude (the first of equals) is positive: LAPACK and cuSOLVER return arbitrary signs, this makes
  // the result the same on every backend (up to rounding, for distinct eigenvalues). CPU: LAPACK
  // ?syevd per matrix; CUDA: cusolverDnXsyevBatched. Throws naming the batch entry when a matrix has
  // a NaN or inf (LAPACK returns finite garbage for some) or a decomposition does not converge.
  virtual void symeig(const Tensor& a, Tensor& values, Tensor& vectors) = 0;

  // ---- convolution: x [N, C, H, W], w [O, C/groups, KH, KW], y [N, O, OH, OW] -----------------
  // `bias` may be undefined.
  virtual void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Conv2dParams& p, Tensor& y) = 0;
  virtual void conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                                     Tensor& gx) = 0;
  virtual void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                      Tensor& gw) = 0;
  // Inference only: y = bn_eval(conv(x, w, bias)) [then ReLU], the batch norm with its running
  // statistics (as batchnorm_forward_eval below). The default runs conv2d_forward and then
  // batchnorm_forward_eval through a temporary; a backend may fuse them (the CPU applies the BN's
  // per-channel scale and shift, and the ReLU, in oneDNN's convolution epilogue: one pass over y
  // instead of three, for the shapes oneDNN runs with a direct kernel; the others take the default).
  // bias, bn_weight and bn_bias may be undefined.
  virtual void conv2d_bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                                      const Tensor& bn_weight, const Tensor& bn_bias, const Tensor& running_mean,
                                      const Tensor& running_var, double eps, bool relu, Tensor& y);

  // ---- batch norm over [N, C, *] per channel C ------------------------------------------------
  // Training: normalise with batch statistics; writes the batch mean and 1/sqrt(biased var + eps)
  // (both [C]) for the backward and for the running-statistics update. weight/bias may be undefined.
  // `relu` fuses a ReLU after the normalisation (y = max(0, bn(x))) into the same pass.
  virtual void batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                       double eps, bool relu, Tensor& y, Tensor& mean, Tensor& invstd) = 0;
  // Evaluation: normalise with the given running statistics.
  virtual void batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                      const Tensor& running_mean, const Tensor& running_var,
                                      double eps, bool relu, Tensor& y) = 0;
  // Gradients of either forward (`training` selects which; mean/invstd are the statistics that
  // forward used). When `relu_out` (the fused forward's output) is defined, gy is first masked to
  // where relu_out > 0, the ReLU's backward. Undefined outputs are not computed.
  virtual void batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight,
                                  const Tensor& mean, const Tensor& invstd, bool training,
                                  const Tensor& relu_out, Tensor& gx, Tensor& gweight, Tensor& gbias) = 0;

  // ---- pooling and resampling, NCHW ----------------------------------------------------------
  // indices (I64) hold, per output element, the flat h*W+w position of the max within its plane.
  // The backward gets the forward's window too (a gather needs it to find the outputs that may
  // have picked an input; the CPU's scatter reads the indices alone).
  virtual void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y,
                                  Tensor& indices) = 0;
  virtual void max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Pool2dParams& p,
                                   Tensor& gx) = 0;
  virtual void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) = 0;
  virtual void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) = 0;
  // Bins as PyTorch: start = floor(i * In / Out), end = ceil((i + 1) * In / Out).
  virtual void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) = 0;
  virtual void adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& gx) = 0;
  // Nearest neighbour as PyTorch's mode="nearest": src = floor(dst * In / Out).
  virtual void upsample_nearest2d_forward(const Tensor& x, Tensor& y) = 0;
  virtual void upsample_nearest2d_backward(const Tensor& gy, Tensor& gx) = 0;
  // Bilinear, zero padding, align_corners=false; x [N, C, H, W], grid [N, OH, OW, 2] (x, y in
  // [-1, 1]), y [N, C, OH, OW]. Backward writes either gradient when defined.
  virtual void grid_sample_forward(const Tensor& x, const Tensor& grid, Tensor& y) = 0;
  virtual void grid_sample_backward(const Tensor& gy, const Tensor& x, const Tensor& grid,
                                    Tensor& gx, Tensor& ggrid) = 0;

  // ---- softmax family ------------------------------------------------------------------------
  // Along `dim` (already normalised); log selects log_softmax. Backward takes the forward's output.
  virtual void softmax_forward(const Tensor& x, int dim, bool log, Tensor& y) = 0;
  virtual void softmax_backward(const Tensor& gy, const Tensor& y, int dim, bool log, Tensor& gx) = 0;
  // logits [N, C], targets I64 [N] in [0, C); loss (0-D) = mean over N of
  // -sum_c q_c log_softmax(logits)_c with q = (1 - s) onehot + s / C. log_probs [N, C] is saved.
  virtual void cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                     double label_smoothing, Tensor& loss, Tensor& log_probs) = 0;
  // gx = grad * (softmax - q) / N, grad the 0-D upstream gradient.
  virtual void cross_entropy_backward(const Tensor& grad, const Tensor& log_probs,
                                      const Tensor& targets, double label_smoothing, Tensor& gx) = 0;

  // ---- optimizer steps, in place, one pass over memory per parameter ---------------------------
  // momentum_buffer is undefined when momentum == 0.
  virtual void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStepArgs& a) = 0;
  virtual void adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                         const AdamStepArgs& a) = 0;

  // Blocks until every kernel queued on this device has finished (a no-op on the CPU). Timers and the
  // profiler call it so that asynchronous devices are measured honestly.
  virtual void synchronize() {}
};

// The backend that owns `device`'s memory and kernels. Throws for devices this build cannot use.
Backend& backend_for(Device device);
inline Backend& backend_for(const Tensor& t) { return backend_for(t.device()); }

// What the CPU backend runs on, for logs: "OpenBLAS 0.3.21 (SkylakeX kernels, OpenMP), 2 threads".
std::string cpu_backend_info();

// Kernel choice by timing: on the CPU, an F32 convolution forward times oneDNN's candidate kernels
// on its first call per shape and keeps the faster one (as cudnn.benchmark). The choice changes the
// rounding, so a result would depend on a timing: the Trainer turns this off for its whole run (a
// resumed run stays bitwise equal to an uninterrupted one) and retort-bench does for its training and
// KD rows; evaluation, retort-eval and inference keep it. Default on; RETORT_CPU_CONV_TUNE=0 in the
// environment starts it off. While off, every forward runs oneDNN's training-forward kernel.
bool kernel_autotune();
void set_kernel_autotune(bool on);

// bfloat16 arithmetic for F32 convolutions on the CPU (the experiment's `"math": "bf16"`,
// retort-bench --math bf16; docs/performance.md "bf16 convolutions"). While on, oneDNN's convolutions
// (forward, both backwards, the fused inference conv + BN) round their two F32 operands to bfloat16
// and sum the products in F32 into an F32 result — the arithmetic of AVX512-BF16 and AMX — so tensors,
// parameters, optimizer state and everything else stay F32. Convolutions oneDNN does not take (and
// the direct depthwise kernels) stay F32; F64 is never affected. Off by default; RETORT_CPU_CONV_BF16=1
// in the environment starts it on. Turning it on throws, naming the CPU's instruction set, where
// oneDNN has no bfloat16 convolutions (below AVX-512).
bool cpu_conv_bf16();
void set_cpu_conv_bf16(bool on);

// Winograd F(4x4, 3x3) for F32 convolutions on the CPU (the experiment's `"math": "winograd"`,
// retort-bench --math winograd; docs/performance.md "Winograd convolutions"). While on, every 3x3,
// stride-1, undilated, ungrouped convolution of 32+ input and output channels (forward and both
// backwards) computes in the transformed domain — oneDNN's kernels on AVX-512, engine/cpu/winograd.cpp's
// below (padding up to 2; wider padding runs direct): 4x fewer multiplications per 4x4 output tile at F32, with a larger rounding error than the
// direct sum (measured against F64 in test_conv.cpp). Other shapes, F64 and the direct depthwise
// kernels are unaffected. Off by default; RETORT_CPU_CONV_WINOGRAD=1 in the environment starts it on.
// Turning it on throws while bf16 is on (the two are exclusive), and so does turning bf16 on while
// this is.
bool cpu_conv_winograd();
void set_cpu_conv_winograd(bool on);

// Blocked activations on the CPU (docs/architecture.md, "Blocked activations"): while on, an F32
// convolution run by oneDNN leaves its output (and its data gradient) in oneDNN's blocked layout
// (nChw8c / nChw16c) instead of reordering it back to NCHW; batch norm and elementwise kernels keep that
// layout and the next convolution reads it as it is. Everything else sees NCHW: Tensor::raw_data()
// rewrites such storage in place on first access. Results are those of the NCHW path up to the order of
// batch norm's sums. On by default; RETORT_CPU_BLOCKED=0 in the environment starts it off.
bool cpu_blocked_activations();
void set_cpu_blocked_activations(bool on);

// Whether this build contains the CUDA backend, and how many GPUs it sees (0 without CUDA).
bool cuda_built();
int cuda_device_count();
// One line naming a CUDA device for a run's start-up lines: "cuda:0 NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB"
// ("" for the CPU, or the reason there is no such device).
std::string cuda_device_description(Device device);

// The CUDA backend's global switches (engine/cuda/context.h), here so that code which is built
// with or without CUDA can set them; in a build without CUDA they read false and setting them does
// nothing. Deterministic: cuDNN picks only deterministic algorithms. TF32: cuBLAS and cuDNN may use
// TF32 tensor cores for F32.
bool cuda_deterministic();
void set_cuda_deterministic(bool on);
bool cuda_allow_tf32();
void set_cuda_allow_tf32(bool on);

}  // namespace retort
