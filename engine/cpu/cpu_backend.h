// The CPU backend: the readable reference implementation of every kernel and the oracle for the CUDA
// backend. Plain loops where they are clear, OpenMP across batch/channels/rows, OpenBLAS for GEMM.
// Kernels are templates over the element type (float, double) and are dispatched once per call.
// Definitions are split by family: memory.cpp, elementwise.cpp, reduce.cpp, copy.cpp, gemm.cpp,
// conv.cpp, norm.cpp, pool.cpp, sample.cpp, softmax.cpp, optim.cpp.
#pragma once
#include <initializer_list>
#include <cstdint>
#include <string>

#include "engine/backend.h"

namespace retort::cpu {

// Runs f(tag) with tag a value of the C++ type of `dt` (float or double); throws for other dtypes.
template <class F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: RETORT_FAIL(op, ": unsupported dtype ", dtype_name(dt), " (expected f32 or f64)");
  }
}

// Which implementation runs F32 convolutions: Auto = oneDNN where it has a JIT kernel for the shape,
// else im2col + OpenBLAS — except "same"-padded depthwise layers (depthwise.cpp) and 1x1 layers with
// small per-sample GEMMs (conv.cpp; dnnl_conv2d says which); Im2col = always our own path (the
// reference); Dnnl = oneDNN or an error.
// The environment variable RETORT_CPU_CONV=auto|im2col|dnnl sets the initial value. F64 always takes
// the im2col path.
enum class ConvImpl { Auto, Im2col, Dnnl };
ConvImpl conv_impl();
void set_conv_impl(ConvImpl impl);

// oneDNN convolutions (conv_dnnl.cpp), F32 (NCHW / OIHW, or activations in a blocked layout):
//   Forward:      in0 = x,  in1 = w, out = y  (bias optional)
//   BackwardData: in0 = gy, in1 = w, out = gx
//   BackwardWeight: in0 = gy, in1 = x, out = gw
// Returns false, having done nothing, when the im2col path should run the call instead.
// A forward's epilogue, applied in the kernel before y is written: y = y * scale[o] + shift[o], then
// max(y, 0) when relu (an eval-mode batch norm folded into the convolution, with its ReLU).
struct DnnlEpilogue {
  const float* scale;
  const float* shift;
  bool relu;
};
enum class DnnlConvDir { Forward, BackwardData, BackwardWeight };
// Activations may come in a blocked layout (Storage::block) and, with cpu_blocked_activations() on, an
// activation output is left in oneDNN's blocked layout when the kernel writes one.
bool dnnl_conv2d(DnnlConvDir dir, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p,
                 const Tensor& in0, const Tensor& in1, const float* bias, Tensor& out,
                 const DnnlEpilogue* epilogue = nullptr);
// Winograd F(4x4, 3x3) convolutions on OpenBLAS GEMMs (winograd.cpp): F32, NCHW, 3x3 kernels, stride 1,
// no dilation or groups, padding 0 to 2 (winograd_shape_ok); dnnl_conv2d's operand convention, all three
// directions, a forward's bias and epilogue folded in. dnnl_conv2d runs them for experiment.math
// "winograd" where oneDNN has no Winograd kernels; `workspace` holds winograd_workspace_bytes().
bool winograd_shape_ok(const Shape& w, const Conv2dParams& p);
size_t winograd_workspace_bytes(DnnlConvDir dir, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p);
void winograd_conv2d(DnnlConvDir dir, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p,
                     const float* in0, const float* in1, const float* bias, float* out, const DnnlEpilogue* epilogue,
                     float* workspace);
// The tile buffers' size per thread that sets how many samples a chunk takes (4 MiB); returns the old
// value. For tests of the chunking.
size_t set_winograd_chunk_bytes(size_t bytes);
// Depthwise convolutions with "same" padding (odd kernel, pad (k-1)/2, any stride, no dilation, planes
// up to 64x64), F32 and F64, as vectorised sweeps over channel segments (depthwise.cpp). Same operand
// convention as dnnl_conv2d. Returns false, having done nothing, for other shapes, when conv_impl() is
// not Auto, or with RETORT_CPU_DEPTHWISE=0.
// The tensors' data is read and written row-major; bias may be undefined.
bool depthwise_conv2d(DnnlConvDir dir, DType dt, const Shape& x, const Shape& w, const Shape& y,
                      const Conv2dParams& p, const Tensor& in0, const Tensor& in1, const Tensor& bias, Tensor& out);
// How many convolution calls the direct depthwise kernels have run in this process (for tests).
int64_t depthwise_direct_calls();
bool depthwise_direct_enabled();  // false with RETORT_CPU_DEPTHWISE=0
// The kernel chosen for each convolution signature seen so far ("fwd+bn x[64, 16, 32, 32] w[...] g1:
// jit:avx512_core (2 candidates)"): forwards time oneDNN's training-forward and inference-forward
// kernels on their first call and keep the faster (RETORT_CPU_CONV_TUNE=0: always the first).
std::vector<std::string> dnnl_conv_choices();
// How many convolution calls oneDNN has run in this process (tests check that it is really used).
int64_t dnnl_conv_calls();
// "oneDNN 2.6.3 convolutions f32, ISA avx512_core", for the start-up log line.
std::string dnnl_info();

// The cache of large host blocks (memory.cpp): bytes held in its free lists now, and how many large
// allocations it served from them and from malloc. host_empty_cache() frees every cached block.
struct HostCacheStats {
  size_t cached_bytes = 0;  // freed large blocks kept for reuse
  size_t live_bytes = 0;    // large blocks (>= 1 MiB) handed out and not yet freed
  int64_t reused = 0, fresh = 0;
};
HostCacheStats host_cache_stats();
void host_empty_cache();
// The cap on what large blocks (live and cached) may hold, in bytes; 0: none (the default, or
// RETORT_HOST_MEMORY_LIMIT). Returns the previous cap. The machine's own headroom is checked either way
// (memory.cpp).
size_t set_host_memory_limit(size_t bytes);
size_t host_memory_limit();  // the cap now (read from RETORT_HOST_MEMORY_LIMIT on first use)
// What the machine can still give this process before the kernel's OOM killer acts: MemAvailable of
// `meminfo`, and the least headroom (memory.max less the non-page-cache part of memory.current) of the
// process's cgroup v2 group (from `proc_cgroup`) and every group above it under `cgroup_root`. bytes is
// SIZE_MAX when nothing could be read; source says what limits it. (Parameters: for tests; the allocator
// reads /proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup.)
struct Headroom {
  size_t bytes = SIZE_MAX;
  std::string source;
};
Headroom host_memory_headroom(const std::string& meminfo, const std::string& proc_cgroup, const std::string& cgroup_root);

// Hot inner loops (one row of a kernel, no OpenMP parallel region inside) are compiled three times —
// AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and the baseline x86-64 the rest of the build targets —
// and the dynamic loader picks the best one for the running CPU (GCC target_clones, an ifunc). The
// binary stays portable and still uses the machine's vector width; without this, a loop holding a
// select (ReLU's mask) does not vectorise at all on baseline SSE2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RETORT_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RETORT_SIMD_CLONES
#endif

// An eval-mode (or already normalised) batch norm channel as y = x * scale + shift:
// scale = invstd * w, shift = b - mean * scale, in double (engine/cpu/norm.cpp). The batch-norm kernels
// and the convolution's fused BN epilogue both use it, so the two paths fold the same numbers.
struct BnAffine {
  double scale, shift;
};
BnAffine bn_affine(double mean, double invstd, double w, double b);
// 1 / sqrt(var + eps) for a biased (batch) or running variance, in double: every CPU BN path's invstd.
double bn_invstd(double var, double eps);

// Blocked activations (blocked.cpp; docs/architecture.md "Blocked activations"). common_block: the block
// (8 or 16) when at least one defined operand is in a blocked layout and all are 4-d F32 CPU tensors of
// one shape whose channels it divides, else 0 (read them row-major). in_block_layout: t itself when it is
// in nChw{block}c, else a copy of it in that layout. The batch-norm kernels in that layout return false,
// having done nothing, when no operand is blocked.
int common_block(std::initializer_list<const Tensor*> operands);
Tensor in_block_layout(const Tensor& t, int block);
bool blocked_batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool relu,
                                     Tensor& y, Tensor& mean, Tensor& invstd);
bool blocked_batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                    const Tensor& running_mean, const Tensor& running_var, double eps, bool relu,
                                    Tensor& y);
bool blocked_batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx,
                                Tensor& gweight, Tensor& gbias);

// Minimum amount of work (elements) before a loop is worth parallelising.
constexpr int64_t kParallelGrain = 32768;

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "cpu"; }
  bool supports(const std::string& kernel, DType dtype) const override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr) override;
  void copy_to_host(const void* src, void* host_dst, size_t nbytes) override;
  void copy_from_host(const void* host_src, void* dst, size_t nbytes) override;
  void copy(const void* src, void* dst, size_t nbytes) override;
  void fill(Tensor& out, double value) override;
  void cast(const Tensor& src, Tensor& dst) override;

  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha, double beta) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, Tensor& out) override;
  void strided_copy(const Tensor& src, const StridedView& src_view, Tensor& dst, const StridedView& dst_view,
                    const Shape& shape) override;
  void gemm(const GemmArgs& args) override;
  void symeig(const Tensor& a, Tensor& values, Tensor& vectors) override;
  void gather_rows(const Tensor& table, const Tensor& indices, Tensor& out) override;
  void scatter_rows(Tensor& table, const Tensor& indices, const Tensor& rows) override;

  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                      Tensor& y) override;
  void conv2d_bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                              const Tensor& bn_weight, const Tensor& bn_bias, const Tensor& running_mean,
                              const Tensor& running_var, double eps, bool relu, Tensor& y) override;
  void conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p, Tensor& gx) override;
  void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p, Tensor& gw) override;

  void batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool relu,
                               Tensor& y, Tensor& mean, Tensor& invstd) override;
  void batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              const Tensor& running_mean, const Tensor& running_var, double eps, bool relu,
                              Tensor& y) override;
  void batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                          const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx,
                          Tensor& gweight, Tensor& gbias) override;

  void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) override;
  void max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Pool2dParams& p, Tensor& gx) override;
  void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) override;
  void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) override;
  void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) override;
  void adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& gx) override;
  void upsample_nearest2d_forward(const Tensor& x, Tensor& y) override;
  void upsample_nearest2d_backward(const Tensor& gy, Tensor& gx) override;
  void grid_sample_forward(const Tensor& x, const Tensor& grid, Tensor& y) override;
  void grid_sample_backward(const Tensor& gy, const Tensor& x, const Tensor& grid, Tensor& gx,
                            Tensor& ggrid) override;

  void softmax_forward(const Tensor& x, int dim, bool log, Tensor& y) override;
  void softmax_backward(const Tensor& gy, const Tensor& y, int dim, bool log, Tensor& gx) override;
  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, double label_smoothing, Tensor& loss,
                             Tensor& log_probs) override;
  void cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets,
                              double label_smoothing, Tensor& gx) override;

  void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStepArgs& a) override;
  void adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                 const AdamStepArgs& a) override;
};

}  // namespace retort::cpu
