// CUDA 2-D convolutions through cuDNN's convolution API (cudnnConvolutionForward / BackwardData /
// BackwardFilter, still shipped in cuDNN 9): PyTorch's F.conv2d semantics as the CPU reference
// (engine/cpu/conv.cpp): cross-correlation, symmetric zero padding, stride, dilation, groups
// (depthwise included), NCHW tensors and OIHW weights [O, C/groups, KH, KW].
//
// Plans: one per (direction, device, dtype, shapes, parameters, deterministic, TF32) holds the cuDNN
// descriptors and the algorithms that may run it, chosen once with cuDNN's heuristics
// (cudnnGet*Algorithm_v7, which does not run anything, unlike cudnnFind*) and kept for the life of
// the process, so a training step creates no descriptor and chooses nothing. An algorithm is usable
// when cuDNN reports it supported, its workspace fits in the memory the device can still give us,
// it is deterministic when deterministic() is on, and, for F32 without allow_tf32(), it runs in
// plain FMA math. Should the chosen one still be refused when it runs (a status of the CUDNN_STATUS_NOT_SUPPORTED category,
// which cuDNN reports before queueing any work), the next usable one replaces it for good.
//
// Math: F32 uses CUDNN_FMA_MATH unless allow_tf32(): CUDNN_DEFAULT_MATH would already let cuDNN use
// TF32 tensor cores on Ampere and later, so it is the TF32 setting (as in PyTorch), not the IEEE one.
// F64 uses CUDNN_DEFAULT_MATH (its tensor-core kernels are exact FP64 FMAs). The math type an
// algorithm was proposed with is set on the descriptor before it runs, as cuDNN requires (for IEEE
// F32 that is always CUDNN_FMA_MATH: tensor-op proposals are dropped).
//
// The bias is added by a small kernel after the convolution (beta = 0 overwrites y first).
#include <array>
#include <climits>
#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/cuda/kernels.cuh"

namespace retort::cuda {

namespace {

enum class Dir { Forward, BackwardData, BackwardFilter };

const char* dir_name(Dir d) {
  switch (d) {
    case Dir::Forward: return "conv2d_forward";
    case Dir::BackwardData: return "conv2d_backward_input";
    case Dir::BackwardFilter: return "conv2d_backward_weight";
  }
  return "conv2d";
}

struct PlanKey {
  int dir = 0, device = 0, dtype = 0;
  std::array<int64_t, 4> x{}, w{}, y{};
  std::array<int64_t, 7> p{};
  bool deterministic = false, tf32 = false;
  auto operator<=>(const PlanKey&) const = default;
};

struct Candidate {
  int algo = 0;  // a cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t, by direction
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
};

// Descriptors and usable algorithms of one convolution; owns the descriptors.
struct Plan {
  Dir dir = Dir::Forward;
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  std::vector<Candidate> candidates;  // best first
  size_t current = 0;                 // the candidate in use
  cudnnMathType_t conv_math = CUDNN_DEFAULT_MATH;  // what `conv` is set to now
  std::string desc;                   // shapes and parameters, for messages

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
};

int to_int(int64_t v, const std::string& desc) {
  RETORT_CHECK(v >= 0 && v <= INT_MAX, "conv2d (cuda): size ", v, " does not fit cuDNN's int sizes (", desc, ")");
  return static_cast<int>(v);
}

// Device memory a workspace may take: what the driver has free plus what our caching allocator holds
// unused (it releases that and retries when cudaMalloc fails), and at most an eighth of the device. The
// plan is chosen once, while memory is free; the workspace stays allocated (Context::workspace) and the
// activations of later, larger steps need the rest. A candidate that does not fit when it runs is passed
// over for that call (run_plan).
size_t memory_budget(int device) {
  size_t free_bytes = 0, total = 0;
  RETORT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total), "querying free memory for a cuDNN workspace");
  const MemoryStats s = memory_stats(device);
  return std::min(free_bytes + (s.reserved > s.allocated ? s.reserved - s.allocated : 0), total / 8);
}

void set_math(Plan& plan, cudnnMathType_t math) {
  if (plan.conv_math == math) return;
  RETORT_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv, math), "setting the math type of ", plan.desc);
  plan.conv_math = math;
}

// The workspace `cand` needs, in *bytes; a status other than success means cuDNN will not size it
// (the heuristics then over-promised, and the candidate is dropped).
cudnnStatus_t workspace_size(cudnnHandle_t h, Plan& plan, const Candidate& cand, size_t* bytes) {
  set_math(plan, cand.math);
  switch (plan.dir) {
    case Dir::Forward:
      return cudnnGetConvolutionForwardWorkspaceSize(h, plan.x, plan.w, plan.conv, plan.y,
                                                     static_cast<cudnnConvolutionFwdAlgo_t>(cand.algo), bytes);
    case Dir::BackwardData:
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h, plan.w, plan.y, plan.conv, plan.x,
                                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(cand.algo), bytes);
    case Dir::BackwardFilter:
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(
          h, plan.x, plan.y, plan.conv, plan.w, static_cast<cudnnConvolutionBwdFilterAlgo_t>(cand.algo), bytes);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

// Keeps the heuristics' results that may run this plan, in their order (best first).
template <class Perf>
void keep_usable(const Perf* perf, int n, bool ieee_f32, bool det, size_t budget, cudnnHandle_t h, Plan& plan) {
  for (int i = 0; i < n; ++i) {
    const Perf& r = perf[i];
    if (r.status != CUDNN_STATUS_SUCCESS) continue;
    if (det && r.determinism != CUDNN_DETERMINISTIC) continue;
    // IEEE F32: cuDNN proposes FMA-math algorithms for an FMA-math descriptor; one reported with the
    // default math type is run with FMA math all the same, and tensor-op ones are never taken.
    if (ieee_f32 && r.mathType != CUDNN_FMA_MATH && r.mathType != CUDNN_DEFAULT_MATH) continue;
    // TF32 allows tensor cores, not ALLOW_CONVERSION's down-conversion of F32 operands to FP16.
    if (r.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
    if (r.memory > budget) continue;
    Candidate c{static_cast<int>(r.algo), ieee_f32 ? CUDNN_FMA_MATH : r.mathType, 0};
    size_t bytes = 0;
    if (workspace_size(h, plan, c, &bytes) != CUDNN_STATUS_SUCCESS) continue;
    c.workspace = std::max(r.memory, bytes);
    if (c.workspace > budget) continue;
    plan.candidates.push_back(c);
  }
}

std::unique_ptr<Plan> make_plan(Context& c, Dir dir, DType dt, const Shape& xs, const Shape& ws, const Shape& ys,
                                const Conv2dParams& p, bool det, bool tf32) {
  auto plan = std::make_unique<Plan>();
  plan->dir = dir;
  plan->dtype = dt == DType::F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  plan->desc = detail::cat(dir_name(dir), " ", dtype_name(dt), ": x ", shape_str(xs), ", w ", shape_str(ws), ", y ",
                           shape_str(ys), ", stride ", p.stride_h, "x", p.stride_w, ", pad ", p.pad_h, "x", p.pad_w,
                           ", dilation ", p.dilation_h, "x", p.dilation_w, ", groups ", p.groups,
                           det ? ", deterministic" : "", dt == DType::F32 ? (tf32 ? ", TF32" : ", IEEE F32") : "");
  const std::string& d = plan->desc;
  cudnnHandle_t h = c.cudnn();

  RETORT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x), "creating the input descriptor of ", d);
  RETORT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->y), "creating the output descriptor of ", d);
  RETORT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->w), "creating the filter descriptor of ", d);
  RETORT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan->conv), "creating the convolution descriptor of ", d);
  RETORT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, plan->dtype, to_int(xs[0], d),
                                                to_int(xs[1], d), to_int(xs[2], d), to_int(xs[3], d)),
                     "describing the input of ", d);
  RETORT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, plan->dtype, to_int(ys[0], d),
                                                to_int(ys[1], d), to_int(ys[2], d), to_int(ys[3], d)),
                     "describing the output of ", d);
  RETORT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w, plan->dtype, CUDNN_TENSOR_NCHW, to_int(ws[0], d),
                                                to_int(ws[1], d), to_int(ws[2], d), to_int(ws[3], d)),
                     "describing the weight of ", d);
  RETORT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->conv, to_int(p.pad_h, d), to_int(p.pad_w, d),
                                                     to_int(p.stride_h, d), to_int(p.stride_w, d),
                                                     to_int(p.dilation_h, d), to_int(p.dilation_w, d),
                                                     CUDNN_CROSS_CORRELATION, plan->dtype),
                     "describing the convolution ", d);
  RETORT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(plan->conv, to_int(p.groups, d)), "setting the groups of ", d);
  const bool ieee_f32 = dt == DType::F32 && !tf32;
  plan->conv_math = CUDNN_DEFAULT_MATH;  // a new descriptor's setting
  set_math(*plan, ieee_f32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH);

  // The output size cuDNN derives must be the one the function allocated (PyTorch's formula
  // floor((H + 2 pad - dilation (KH - 1) - 1) / stride) + 1 is cuDNN's as well).
  int on = 0, oc = 0, oh = 0, ow = 0;
  RETORT_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &on, &oc, &oh, &ow),
                     "computing the output size of ", d);
  RETORT_CHECK(on == ys[0] && oc == ys[1] && oh == ys[2] && ow == ys[3], "conv2d (cuda): cuDNN derives output [", on,
               ", ", oc, ", ", oh, ", ", ow, "] for ", d);

  const size_t budget = memory_budget(c.device());
  int max_count = 0, returned = 0;
  switch (dir) {
    case Dir::Forward: {
      RETORT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count),
                         "counting forward algorithms for ", d);
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max_count, 1)));
      RETORT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, plan->x, plan->w, plan->conv, plan->y,
                                                                static_cast<int>(perf.size()), &returned, perf.data()),
                         "choosing a forward algorithm for ", d);
      keep_usable(perf.data(), returned, ieee_f32, det, budget, h, *plan);
      break;
    }
    case Dir::BackwardData: {
      RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count),
                         "counting backward-data algorithms for ", d);
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(std::max(max_count, 1)));
      RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, plan->w, plan->y, plan->conv, plan->x,
                                                                     static_cast<int>(perf.size()), &returned,
                                                                     perf.data()),
                         "choosing a backward-data algorithm for ", d);
      keep_usable(perf.data(), returned, ieee_f32, det, budget, h, *plan);
      break;
    }
    case Dir::BackwardFilter: {
      RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count),
                         "counting backward-filter algorithms for ", d);
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<size_t>(std::max(max_count, 1)));
      RETORT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, plan->x, plan->y, plan->conv, plan->w,
                                                                       static_cast<int>(perf.size()), &returned,
                                                                       perf.data()),
                         "choosing a backward-filter algorithm for ", d);
      keep_usable(perf.data(), returned, ieee_f32, det, budget, h, *plan);
      break;
    }
  }
  RETORT_CHECK(!plan->candidates.empty(), "conv2d (cuda): cuDNN proposes no usable algorithm for ", d, " (",
               returned, " considered", det ? "; deterministic ones only" : "",
               ieee_f32 ? "; FMA math only, RETORT_ALLOW_TF32=1 allows TF32" : "", "; ", budget,
               " bytes of device memory available for a workspace)");
  return plan;
}

std::mutex& plans_mutex() {
  static auto* mu = new std::mutex();  // leaked like the plans
  return *mu;
}

// The plan for this call, made on first use. Leaked on purpose like the contexts (context.cu): plans
// hold cuDNN descriptors that must not be destroyed after the library is unloaded at exit.
Plan& plan_for(Context& c, Dir dir, DType dt, const Shape& xs, const Shape& ws, const Shape& ys,
               const Conv2dParams& p) {
  static auto* plans = new std::map<PlanKey, std::unique_ptr<Plan>>();
  PlanKey k;
  k.dir = static_cast<int>(dir);
  k.device = c.device();
  k.dtype = static_cast<int>(dt);
  for (int i = 0; i < 4; ++i) {
    k.x[i] = xs[i];
    k.w[i] = ws[i];
    k.y[i] = ys[i];
  }
  k.p = {p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups};
  k.deterministic = deterministic();
  k.tf32 = dt == DType::F32 && allow_tf32();
  auto it = plans->find(k);
  if (it == plans->end())
    it = plans->emplace(k, make_plan(c, dir, dt, xs, ws, ys, p, k.deterministic, k.tf32)).first;
  return *it->second;
}

// Runs the plan's current algorithm; moves on to the next candidate when cuDNN refuses one at launch.
// `a` and `b` are the two inputs, `out` the output, in the order the direction's call takes them.
void run_plan(Context& c, Plan& plan, const void* a, const void* b, void* out) {
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const bool f64 = plan.dtype == CUDNN_DATA_DOUBLE;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : static_cast<const void*>(&one_f);
  const void* beta = f64 ? static_cast<const void*>(&zero_d) : static_cast<const void*>(&zero_f);
  cudnnHandle_t h = c.cudnn();
  size_t at = plan.current;  // the candidate this call runs: plan.current, or a later one for want of memory
  for (;;) {
    const Candidate& cand = plan.candidates[at];
    set_math(plan, cand.math);
    void* ws = nullptr;
    if (cand.workspace) {
      try {
        ws = c.workspace(cand.workspace);
      } catch (const Error&) {
        // Out of memory for this workspace now (the activations grew since the plan was made): a later
        // candidate with a smaller workspace runs this call; the plan keeps its choice for the next.
        size_t next = at + 1;
        while (next < plan.candidates.size() && plan.candidates[next].workspace >= cand.workspace) ++next;
        if (next == plan.candidates.size()) throw;
        at = next;
        continue;
      }
    }
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    switch (plan.dir) {
      case Dir::Forward:  // a = x, b = w, out = y
        st = cudnnConvolutionForward(h, alpha, plan.x, a, plan.w, b, plan.conv,
                                     static_cast<cudnnConvolutionFwdAlgo_t>(cand.algo), ws, cand.workspace, beta,
                                     plan.y, out);
        break;
      case Dir::BackwardData:  // a = gy, b = w, out = gx
        st = cudnnConvolutionBackwardData(h, alpha, plan.w, b, plan.y, a, plan.conv,
                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(cand.algo), ws, cand.workspace,
                                          beta, plan.x, out);
        break;
      case Dir::BackwardFilter:  // a = gy, b = x, out = gw
        st = cudnnConvolutionBackwardFilter(h, alpha, plan.x, b, plan.y, a, plan.conv,
                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(cand.algo), ws,
                                            cand.workspace, beta, plan.w, out);
        break;
    }
    // cuDNN 9 refuses with a sub-code of the category (CUDNN_STATUS_NOT_SUPPORTED_SHAPE, _LAYOUT, ...).
    if (CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED && at + 1 < plan.candidates.size()) {
      if (at == plan.current) ++plan.current;  // refused for good: the plan moves on
      ++at;
      continue;
    }
    RETORT_CUDNN_CHECK(st, "running algorithm ", cand.algo, " (math type ", static_cast<int>(cand.math), ", ",
                       cand.workspace, "-byte workspace) for ", plan.desc);
    return;
  }
}

// y [N, O, OH, OW] += bias[o]: one thread per element (the bias read is cached; the pass is memory-bound).
template <class T>
__global__ void add_bias_kernel(T* y, const T* bias, int64_t n, int64_t plane, int64_t channels) {
  RETORT_GRID_STRIDE(i, n) y[i] += bias[(i / plane) % channels];
}

}  // namespace

void CudaBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                                 Tensor& y) {
  if (y.numel() == 0) return;
  Context& c = ctx();
  if (x.numel() == 0 || w.numel() == 0) {  // nothing to sum (C == 0): y is the bias alone, or zeros
    RETORT_CUDA_CHECK(cudaMemsetAsync(y.raw_data(), 0, y.nbytes(), c.stream()), "zeroing conv2d output ", y.meta_str());
  } else {
    std::lock_guard<std::mutex> lock(plans_mutex());
    Plan& plan = plan_for(c, Dir::Forward, x.dtype(), x.shape(), w.shape(), y.shape(), p);
    run_plan(c, plan, x.raw_data(), w.raw_data(), y.raw_data());
  }
  if (!bias.defined()) return;
  dispatch_float(y.dtype(), "conv2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = y.numel(), plane = y.shape()[2] * y.shape()[3];
    add_bias_kernel<<<blocks_for(n), kThreads, 0, c.stream()>>>(ptr<T>(y), ptr<T>(bias), n, plane, y.shape()[1]);
    RETORT_CUDA_LAUNCH_CHECK("conv2d bias add on ", y.meta_str());
  });
}

void CudaBackend::conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p, Tensor& gx) {
  if (gx.numel() == 0) return;
  Context& c = ctx();
  if (gy.numel() == 0 || w.numel() == 0) {  // no output channel (or no output position) reads gx
    RETORT_CUDA_CHECK(cudaMemsetAsync(gx.raw_data(), 0, gx.nbytes(), c.stream()), "zeroing conv2d input gradient ",
                      gx.meta_str());
    return;
  }
  std::lock_guard<std::mutex> lock(plans_mutex());
  Plan& plan = plan_for(c, Dir::BackwardData, gy.dtype(), gx.shape(), w.shape(), gy.shape(), p);
  run_plan(c, plan, gy.raw_data(), w.raw_data(), gx.raw_data());
}

void CudaBackend::conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p, Tensor& gw) {
  if (gw.numel() == 0) return;
  Context& c = ctx();
  if (gy.numel() == 0 || x.numel() == 0) {  // an empty batch (or output) sums to zero
    RETORT_CUDA_CHECK(cudaMemsetAsync(gw.raw_data(), 0, gw.nbytes(), c.stream()), "zeroing conv2d weight gradient ",
                      gw.meta_str());
    return;
  }
  std::lock_guard<std::mutex> lock(plans_mutex());
  Plan& plan = plan_for(c, Dir::BackwardFilter, gy.dtype(), x.shape(), gw.shape(), gy.shape(), p);
  run_plan(c, plan, gy.raw_data(), x.raw_data(), gw.raw_data());
}

}  // namespace retort::cuda
