// F32 convolutions through oneDNN (Debian's libdnnl 2.6), the CPU counterpart of cuDNN.
//
// Why: measured on the 2-core Sapphire Rapids machine of docs/performance.md, oneDNN's JIT kernels in
// their blocked layouts (nChw16c activations, OIhw16i16o weights) run resnet-sized 3x3 convolutions
// at 300-460 GFLOP/s on 2 threads, forward and both backwards, against 120-230 for our im2col +
// OpenBLAS path and 90-290 for oneDNN's own plain-NCHW GEMM path (bench/results/2026-11-22_conv_micro_intel-xeon-2c.txt, bench/conv_micro.cpp). Our
// tensors stay plain NCHW: each call reorders its operands into the layouts oneDNN chose for the
// shape ("format any") and the result back, which costs a memory pass per operand and is still a
// large net win. F64 (the gradcheck dtype) and anything oneDNN refuses keep the im2col path in
// conv.cpp, which stays the readable reference these kernels are tested against.
//
// bf16 (cpu_conv_bf16(), backend.h): the same primitives with their two inputs declared bfloat16 and
// the output F32. The reorder into the blocked layout rounds to bf16 in the same memory pass it
// already made, and oneDNN's avx512_core_bf16 / AMX kernels sum the products in F32. A shape oneDNN
// has no bf16 kernel for runs its F32 kernel (dnnl_conv_choices() says which ran).
//
// Winograd (cpu_conv_winograd(), backend.h): the same primitives built with oneDNN's
// convolution_winograd algorithm (jit_wino_4x3, AVX-512, F32) for the 3x3 stride-1 shapes of 32
// channels and more (winograd_shape below), in every direction; the inference conv + BN folds the BN
// into the weights and bias, since those kernels take no per-channel post-ops. The transforms and
// reorders cost more than they save on narrower layers. Below AVX-512, where oneDNN has none, a cache
// entry runs winograd.cpp's F(4x4, 3x3) on OpenBLAS instead (own_winograd; same shapes, same listing).
//
// One cache entry per (direction, shapes, parameters, bf16, winograd) holds the primitive and its reorders, so
// primitive descriptors are built once per shape. Blocked copies and oneDNN's scratchpad live in
// one workspace that grows to the largest call and is reused, so a training step does not allocate.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/env.h"
#include "engine/profile.h"

namespace retort::cpu {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

ConvImpl initial_impl() {
  const char* env = std::getenv("RETORT_CPU_CONV");
  if (!env || !*env) return ConvImpl::Auto;
  const std::string v = env;
  if (v == "auto") return ConvImpl::Auto;
  if (v == "im2col") return ConvImpl::Im2col;
  if (v == "dnnl" || v == "onednn") return ConvImpl::Dnnl;
  throw ConfigError(detail::cat("environment variable RETORT_CPU_CONV=\"", v, "\": expected auto, im2col or dnnl"));
}

ConvImpl& impl_setting() {
  static ConvImpl impl = initial_impl();
  return impl;
}

// The instruction set oneDNN's kernels use on this CPU, by oneDNN's name ("other" below AVX2).
const char* isa_name() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2: return "avx2";
    default: return "other";
  }
}

constexpr const char* kBf16Convs = "bfloat16 convolutions";
constexpr const char* kWinogradConvs = "Winograd convolutions";

// oneDNN 2.6 has its bfloat16 convolutions (AVX-512 emulates the bf16 dot products; avx512_core_bf16
// has them; AMX runs them on tiles) and its Winograd F(4x4, 3x3) kernels (jit_wino_4x3, F32) on
// AVX-512 only. Empty when this CPU has `what`, else why not.
std::string avx512_unsupported_reason(const char* what) {
  const std::string isa = isa_name();
  if (isa.rfind("avx512_core", 0) == 0) return "";
  return detail::cat("oneDNN has no ", what, " below AVX-512 (this CPU's oneDNN ISA: ",
                     isa == "other" ? std::string("older than avx2") : isa, ")");
}

// A switch's starting value from the environment (retort::env_switch, off by default); on is refused
// where this CPU lacks `what`.
bool avx512_switch(const char* var, const char* what) {
  if (!env_switch(var, false)) return false;
  const std::string why = avx512_unsupported_reason(what);
  RETORT_CHECK_CONFIG(why.empty(), "environment variable ", var, "=1: ", why);
  return true;
}

bool& bf16_setting() {
  static bool on = avx512_switch("RETORT_CPU_CONV_BF16", kBf16Convs);
  return on;
}

// Whether convolutions leave their activation outputs in oneDNN's blocked layout (Storage::block).
bool& blocked_setting() {
  static bool on = env_switch("RETORT_CPU_BLOCKED", true);
  return on;
}

// Whether oneDNN has its own Winograd kernels on this CPU; elsewhere winograd.cpp's run.
bool onednn_winograd() { return avx512_unsupported_reason(kWinogradConvs).empty(); }

bool& winograd_setting() {
  static bool on = [] {
    const bool v = env_switch("RETORT_CPU_CONV_WINOGRAD", false);
    RETORT_CHECK_CONFIG(!v || !bf16_setting(), "environment variables RETORT_CPU_CONV_WINOGRAD=1 and RETORT_CPU_CONV_BF16=1: ",
                 "Winograd convolutions are F32 only; set one of them");
    return v;
  }();
  return on;
}

// The shapes Winograd F(4x4, 3x3) is used for: 3x3 kernels, stride 1, no dilation, no groups, and
// at least 32 input and output channels. Below that the transforms and reorders cost more than the
// multiplications saved: measured with the reorders (bench/conv_micro.cpp --winograd, 2-core AMD
// EPYC, batch 64, all three directions) 16 channels at 32x32 ran 0.63x the direct kernel, 32 at 16x16
// 1.14x, 64 at 8x8 1.49x, 64-256 at 32x32-8x8 1.52-2.08x.
bool winograd_shape(const Shape& ws, const Conv2dParams& p) {
  return ws[2] == 3 && ws[3] == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
         p.dilation_w == 1 && p.groups == 1 && ws[0] >= 32 && ws[1] >= 32;
}

// An operand as the caller holds it (plain layout, our pointer) and as the primitive wants it.
struct Operand {
  memory::desc user, prim;
  std::optional<dnnl::reorder> to_prim;    // inputs: user -> prim when the layouts differ
  std::optional<dnnl::reorder> to_user;    // the output: prim -> user when they differ
  bool same() const { return user == prim; }
};

struct Entry {
  bool supported = false;
  dnnl::primitive prim;
  int arg_in0 = 0, arg_in1 = 0, arg_out = 0;
  Operand in0, in1, out;
  memory::desc bias;            // forward with bias only
  memory::desc per_channel;     // forward with an epilogue: [1, O, 1, 1] scale and shift
  memory::desc scratch;
  std::string impl_name;
  bool bf16 = false;      // the inputs are rounded to bfloat16
  bool winograd = false;  // oneDNN's Winograd algorithm
  // A Winograd forward with a BN epilogue: oneDNN's Winograd kernels take no binary post-ops, so the
  // BN's scale is folded into a copy of the weights and its shift becomes the bias (ReLU stays a
  // post-op), as inference engines fold BN.
  bool fold_bn = false;
  bool own_winograd = false;  // winograd.cpp's kernels (no oneDNN primitive; oneDNN has none here)
  DnnlConvDir dir = DnnlConvDir::Forward;
  Conv2dParams params;
};

// The candidates for one call signature and the one chosen (-1 until the first call times them).
struct Slot {
  std::vector<Entry> cand;
  int chosen = -1;  // the timed choice (or the only candidate); -1 until decided
  int last = -1;    // the candidate the latest call ran: a pinned call runs 0 whatever was timed
};

size_t align_up(size_t n) { return (n + 63) / 64 * 64; }

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<std::array<int64_t, 23>, Slot> cache;
  std::mutex mu;
  void* ws = nullptr;
  size_t ws_size = 0;
  int64_t calls = 0;

  ~Dnnl() { std::free(ws); }

  char* workspace(size_t n) {
    if (n > ws_size) {
      std::free(ws);
      ws = std::aligned_alloc(64, align_up(n));
      if (!ws) RETORT_FAIL("conv2d (oneDNN): out of memory allocating a ", n, "-byte workspace");
      ws_size = align_up(n);
    }
    return static_cast<char*>(ws);
  }
};

Dnnl& dnnl_state() {
  static Dnnl d;
  return d;
}

memory::desc plain_act(const Shape& s) {
  return memory::desc({s[0], s[1], s[2], s[3]}, memory::data_type::f32, tag::nchw);
}
memory::desc plain_wei(const Shape& w, int64_t groups) {
  if (groups == 1) return memory::desc({w[0], w[1], w[2], w[3]}, memory::data_type::f32, tag::oihw);
  return memory::desc({groups, w[0] / groups, w[1], w[2], w[3]}, memory::data_type::f32, tag::goihw);
}
memory::desc any_like(const memory::desc& d, memory::data_type dt = memory::data_type::f32) {
  return memory::desc(d.dims(), dt, tag::any);
}

void finish_operand(Dnnl& d, Operand& op, bool input) {
  if (op.same()) return;
  if (input)
    op.to_prim = dnnl::reorder(dnnl::reorder::primitive_desc(d.eng, op.user, d.eng, op.prim));
  else
    op.to_user = dnnl::reorder(dnnl::reorder::primitive_desc(d.eng, op.prim, d.eng, op.user));
}

Entry build(Dnnl& d, DnnlConvDir dir, const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dParams& p,
            bool has_bias, const DnnlEpilogue* epi, bool inference, bool bf16, bool winograd) {
  Entry e;
  e.bf16 = bf16;
  e.winograd = winograd;
  e.dir = dir;
  e.params = p;
  if (winograd && !onednn_winograd()) {  // ours, for the shapes it takes (else the caller builds direct)
    e.own_winograd = e.supported = winograd_shape_ok(ws, p);
    e.impl_name = "retort_wino_4x3:openblas";
    return e;
  }
  // Every direction names the same algorithm, in its own descriptor and in its forward hint.
  const auto alg = winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
  // The operands a direction reads (x and w forward; gy and w, gy and x backward) are bf16 in the
  // primitive's layout when bf16 is on; what it writes stays F32. The backward primitives' forward
  // hint must then declare x and w bf16 too: with an F32 x oneDNN 2.6 offers no bf16 backward kernel.
  const memory::data_type in_t = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  const bool fwd = dir == DnnlConvDir::Forward;
  const memory::dims strides{p.stride_h, p.stride_w};
  const memory::dims dilates{p.dilation_h - 1, p.dilation_w - 1};
  // PyTorch pads symmetrically and floors; oneDNN wants the right padding that makes the output
  // size come out exactly: (OH - 1) * stride + (KH - 1) * dilation + 1 = H + pad_l + pad_r.
  const memory::dims pad_l{p.pad_h, p.pad_w};
  const memory::dims pad_r{(ys[2] - 1) * p.stride_h + (ws[2] - 1) * p.dilation_h + 1 - xs[2] - p.pad_h,
                           (ys[3] - 1) * p.stride_w + (ws[3] - 1) * p.dilation_w + 1 - xs[3] - p.pad_w};
  const memory::desc x_user = plain_act(xs), w_user = plain_wei(ws, p.groups), y_user = plain_act(ys);
  e.fold_bn = epi && winograd;
  if (e.fold_bn) has_bias = true;  // the BN's shift
  const memory::desc bias_user =
      has_bias ? memory::desc({ys[1]}, memory::data_type::f32, tag::x) : memory::desc();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (e.fold_bn) {
    dnnl::post_ops ops;
    if (epi->relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  } else if (epi) {
    // Binary post-ops with a per-channel operand, then the ReLU: applied to the accumulators in
    // registers, before the (blocked) output is stored.
    e.per_channel = memory::desc({1, ys[1], 1, 1}, memory::data_type::f32, tag::nchw);
    dnnl::post_ops ops;
    ops.append_binary(dnnl::algorithm::binary_mul, e.per_channel);
    ops.append_binary(dnnl::algorithm::binary_add, e.per_channel);
    if (epi->relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  try {
    const auto fwd_d = dnnl::convolution_forward::desc(
        inference ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training,
        alg, any_like(x_user, in_t), any_like(w_user, in_t),
        has_bias ? any_like(bias_user) : memory::desc(), any_like(y_user, fwd ? memory::data_type::f32 : in_t),
        strides, dilates, pad_l, pad_r);
    const auto fwd_pd = dnnl::convolution_forward::primitive_desc(fwd_d, attr, d.eng);
    if (dir == DnnlConvDir::Forward) {
      e.prim = dnnl::convolution_forward(fwd_pd);
      e.arg_in0 = DNNL_ARG_SRC; e.arg_in1 = DNNL_ARG_WEIGHTS; e.arg_out = DNNL_ARG_DST;
      e.in0 = {x_user, fwd_pd.src_desc(), {}, {}};
      e.in1 = {w_user, fwd_pd.weights_desc(), {}, {}};
      e.out = {y_user, fwd_pd.dst_desc(), {}, {}};
      if (has_bias) {
        e.bias = fwd_pd.bias_desc();
        if (e.bias != bias_user) return e;  // unsupported: the bias would need a reorder
      }
      e.scratch = fwd_pd.scratchpad_desc();
      e.impl_name = fwd_pd.impl_info_str();
      // oneDNN 2.6's GEMM-based kernels apply binary post-ops element by element: ShuffleNetV1's
      // grouped 1x1 layers on 16x16 planes took 240-300 ms a call fused, against 1.5 ms for the same
      // kernel without them (2 threads). The two-kernel path (conv, then the eval batch norm) runs those.
      if (epi && !e.fold_bn && e.impl_name.find("gemm") != std::string::npos) return e;
    } else if (dir == DnnlConvDir::BackwardData) {
      const auto bd = dnnl::convolution_backward_data::desc(alg, any_like(x_user),
                                                            any_like(w_user, in_t), any_like(y_user, in_t), strides,
                                                            dilates, pad_l, pad_r);
      const auto pd = dnnl::convolution_backward_data::primitive_desc(bd, attr, d.eng, fwd_pd);
      e.prim = dnnl::convolution_backward_data(pd);
      e.arg_in0 = DNNL_ARG_DIFF_DST; e.arg_in1 = DNNL_ARG_WEIGHTS; e.arg_out = DNNL_ARG_DIFF_SRC;
      e.in0 = {y_user, pd.diff_dst_desc(), {}, {}};
      e.in1 = {w_user, pd.weights_desc(), {}, {}};
      e.out = {x_user, pd.diff_src_desc(), {}, {}};
      e.scratch = pd.scratchpad_desc();
      e.impl_name = pd.impl_info_str();
    } else {
      const auto bw = dnnl::convolution_backward_weights::desc(alg,
                                                               any_like(x_user, in_t), any_like(w_user),
                                                               any_like(y_user, in_t), strides, dilates, pad_l, pad_r);
      const auto pd = dnnl::convolution_backward_weights::primitive_desc(bw, attr, d.eng, fwd_pd);
      e.prim = dnnl::convolution_backward_weights(pd);
      e.arg_in0 = DNNL_ARG_DIFF_DST; e.arg_in1 = DNNL_ARG_SRC; e.arg_out = DNNL_ARG_DIFF_WEIGHTS;
      e.in0 = {y_user, pd.diff_dst_desc(), {}, {}};
      e.in1 = {x_user, pd.src_desc(), {}, {}};
      e.out = {w_user, pd.diff_weights_desc(), {}, {}};
      e.scratch = pd.scratchpad_desc();
      e.impl_name = pd.impl_info_str();
    }
    // oneDNN's reference kernels are far slower than our im2col path: leave those shapes to it.
    if (e.impl_name.rfind("ref", 0) == 0) return e;
    finish_operand(d, e.in0, true);
    finish_operand(d, e.in1, true);
    finish_operand(d, e.out, false);
  } catch (const dnnl::error&) {
    return e;  // a shape or parameter oneDNN does not take: the im2col path runs it
  }
  e.supported = true;
  return e;
}

}  // namespace

ConvImpl conv_impl() { return impl_setting(); }
void set_conv_impl(ConvImpl impl) { impl_setting() = impl; }

namespace {

// The nChw{block}c descriptor of an activation of dims d (block 8 or 16).
memory::desc blocked_act(const memory::dims& d, int block) {
  return memory::desc(d, memory::data_type::f32, block == 8 ? tag::nChw8c : tag::nChw16c);
}

// The block (8 or 16) of a primitive's activation descriptor when it is nChw8c / nChw16c, else 0.
int prim_block(const memory::desc& prim) {
  const memory::dims d = prim.dims();
  if (d.size() != 4 || prim.data_type() != memory::data_type::f32) return 0;
  for (int b : {8, 16})
    if (d[1] % b == 0 && prim == blocked_act(d, b)) return b;
  return 0;
}

// Which operands are activations (which may be, or be written, in a blocked layout): forward x -> y,
// data gradient gy -> gx, weight gradient gy and x.
bool in0_is_act(DnnlConvDir) { return true; }
bool in1_is_act(DnnlConvDir dir) { return dir == DnnlConvDir::BackwardWeight; }
bool out_is_act(DnnlConvDir dir) { return dir != DnnlConvDir::BackwardWeight; }

// Runs one candidate: reorders the inputs into its layouts, the primitive, the output back to NCHW.
// An activation input already in the primitive's blocked layout (a previous convolution's output,
// Storage::block) is read as it is, and with blocked_setting() on an activation output in nChw8c /
// nChw16c is left there (Tensor::set_layout_block): docs/architecture.md, "Blocked activations".
void execute(Dnnl& d, Entry& e, const Shape& xs, const Shape& ws, const Shape& ys, const Tensor& t0,
             const Tensor& t1, const float* bias, Tensor& tout, const DnnlEpilogue* epi) {
  const DnnlConvDir dir = e.dir;
  if (e.own_winograd) {
    const size_t n = winograd_workspace_bytes(e.dir, xs, ws, ys, e.params);
    const float* in0 = t0.data<float>();
    const float* in1 = t1.data<float>();
    tout.set_layout_block(0);
    winograd_conv2d(e.dir, xs, ws, ys, e.params, in0, in1, bias, tout.data<float>(), epi,
                    reinterpret_cast<float*>(d.workspace(n)));
    return;
  }
  // Layouts first, pointers after (an operand read row-major is rewritten in place by data<float>()).
  auto reads_blocked = [](const Operand& op, const Tensor& t, bool act) {
    const int b = act ? t.layout_block() : 0;
    return b != 0 && prim_block(op.prim) == b;
  };
  const bool blk0 = reads_blocked(e.in0, t0, in0_is_act(dir));
  const bool blk1 = reads_blocked(e.in1, t1, in1_is_act(dir));
  const int out_block = out_is_act(dir) && blocked_setting() ? prim_block(e.out.prim) : 0;
  const float* in0 = blk0 ? nullptr : t0.data<float>();
  const float* in1 = blk1 ? nullptr : t1.data<float>();
  if (blk0) in0 = t0.layout_block() ? static_cast<const float*>(t0.raw_data_any_layout()) : nullptr;
  if (blk1) in1 = t1.layout_block() ? static_cast<const float*>(t1.raw_data_any_layout()) : nullptr;
  if ((blk0 && !in0) || (blk1 && !in1)) {  // both views of one storage, rewritten by the other's read
    execute(d, e, xs, ws, ys, t0, t1, bias, tout, epi);
    return;
  }
  tout.set_layout_block(0);  // a timed candidate before this one may have left it blocked
  float* out = static_cast<float*>(tout.raw_data_any_layout());
  const bool direct_out = out_block != 0;
  // Workspace layout: [in0 blocked][in1 blocked][out blocked][scratchpad], each 64-byte aligned.
  const size_t n0 = e.in0.same() || blk0 ? 0 : align_up(e.in0.prim.get_size());
  const size_t n1 = e.in1.same() || blk1 ? 0 : align_up(e.in1.prim.get_size());
  const size_t no = e.out.same() || direct_out ? 0 : align_up(e.out.prim.get_size());
  const size_t ns = align_up(e.scratch.get_size());
  const size_t nw = e.fold_bn ? align_up(static_cast<size_t>(shape_numel(ws)) * sizeof(float)) : 0;
  char* ws_ptr = d.workspace(n0 + n1 + no + ns + nw + 64);
  if (e.fold_bn) {  // w * scale[o], in the workspace's last region; the shift is the bias
    float* folded = reinterpret_cast<float*>(ws_ptr + n0 + n1 + no + ns);
    const int64_t per_o = shape_numel(ws) / ws[0];
    for (int64_t o = 0; o < ws[0]; ++o)
      for (int64_t k = 0; k < per_o; ++k) folded[o * per_o + k] = in1[o * per_o + k] * epi->scale[o];
    in1 = folded;
    bias = epi->shift;
    epi = nullptr;
  }
  try {
    // With the profiler on, the reorders' share of the call is reported (profile.h).
    const bool timed = profiling::enabled();
    double layout_s = 0;
    auto reorder = [&](const dnnl::reorder& r, memory& from, memory& to) {
      const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
      r.execute(d.strm, from, to);
      if (timed) {
        d.strm.wait();
        layout_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    };
    auto bind_input = [&](Operand& op, const float* user_ptr, bool blocked, char* scratch_buf) {
      if (blocked) return memory(op.prim, d.eng, const_cast<float*>(user_ptr));
      memory user(op.user, d.eng, const_cast<float*>(user_ptr));
      if (op.same()) return user;
      memory prim(op.prim, d.eng, scratch_buf);
      reorder(*op.to_prim, user, prim);
      return prim;
    };
    memory m0 = bind_input(e.in0, in0, blk0, ws_ptr);
    memory m1 = bind_input(e.in1, in1, blk1, ws_ptr + n0);
    memory user_out(e.out.user, d.eng, out);
    memory prim_out = e.out.same() ? user_out
                      : direct_out ? memory(e.out.prim, d.eng, out)
                                   : memory(e.out.prim, d.eng, ws_ptr + n0 + n1);
    memory scratch(e.scratch, d.eng, ws_ptr + n0 + n1 + no);
    std::unordered_map<int, memory> args{
        {e.arg_in0, m0}, {e.arg_in1, m1}, {e.arg_out, prim_out}, {DNNL_ARG_SCRATCHPAD, scratch}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(e.bias, d.eng, const_cast<float*>(bias)));
    if (epi) {
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                   memory(e.per_channel, d.eng, const_cast<float*>(epi->scale)));
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1,
                   memory(e.per_channel, d.eng, const_cast<float*>(epi->shift)));
    }
    e.prim.execute(d.strm, args);
    if (!e.out.same() && !direct_out) reorder(*e.out.to_user, prim_out, user_out);
    d.strm.wait();
    if (direct_out) tout.set_layout_block(out_block);
    if (timed) profiling::add_layout_seconds(layout_s);
  } catch (const dnnl::error& err) {
    RETORT_FAIL("conv2d (oneDNN ", e.impl_name, "): x ", shape_str(xs), ", w ", shape_str(ws), ", y ",
                shape_str(ys), ": ", err.what());
  }
}

bool& tuning_setting() {
  static bool on = env_switch("RETORT_CPU_CONV_TUNE", true);
  return on;
}

}  // namespace

}  // namespace retort::cpu

namespace retort {
bool kernel_autotune() { return cpu::tuning_setting(); }
void set_kernel_autotune(bool on) { cpu::tuning_setting() = on; }
bool cpu_conv_bf16() { return cpu::bf16_setting(); }
void set_cpu_conv_bf16(bool on) {
  RETORT_CHECK(!on || !cpu::winograd_setting(), "bf16 convolutions: Winograd convolutions are on, and the ",
               "Winograd kernels are F32 only; turn them off first");
  if (on) {
    const std::string why = cpu::avx512_unsupported_reason(cpu::kBf16Convs);
    RETORT_CHECK(why.empty(), "bf16 convolutions: ", why, "; use F32 (math \"ieee\") on this machine");
  }
  cpu::bf16_setting() = on;
}
bool cpu_blocked_activations() { return cpu::blocked_setting(); }
void set_cpu_blocked_activations(bool on) { cpu::blocked_setting() = on; }
bool cpu_conv_winograd() { return cpu::winograd_setting(); }
void set_cpu_conv_winograd(bool on) {
  RETORT_CHECK(!on || !cpu::bf16_setting(), "Winograd convolutions: bf16 convolutions are on, and the Winograd ",
               "kernels are F32 only; turn bf16 off first");
  cpu::winograd_setting() = on;
}
}  // namespace retort

namespace retort::cpu {

bool dnnl_conv2d(DnnlConvDir dir, const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dParams& p,
                 const Tensor& in0, const Tensor& in1, const float* bias, Tensor& out, const DnnlEpilogue* epi) {
  if (impl_setting() == ConvImpl::Im2col) return false;
  // oneDNN 2.6's depthwise weight gradient is pathological on tiny planes (7 ms for a 64x480x2x2
  // input on 2 threads, against 0.7 ms for our plane loops: retort-bench --profile on mobile_half).
  // ("Same"-padded depthwise shapes never get here: depthwise.cpp runs them first.)
  if (impl_setting() == ConvImpl::Auto && dir == DnnlConvDir::BackwardWeight && p.groups > 1 &&
      p.groups == xs[1] && ys[2] * ys[3] < 64)
    return false;
  // 1x1 stride-1 convolutions whose per-sample GEMMs are small run faster on conv.cpp's GEMMs (OpenBLAS,
  // straight on NCHW) than in oneDNN, which spends up to 70 % of such calls reordering NCHW to and from
  // its blocked layouts. Measured in situ (retort-bench --profile, batch 64, 2 threads, session 23):
  //  - grouped, plane <= 64 values (ShuffleNetV1's g=3 layers on 8x8 and 4x4): 2-4x faster in all
  //    three directions; on 16x16 planes the two are mixed, so those stay;
  //  - ungrouped, plane >= 16 values and C*O*plane <= 2^22 multiply-adds a sample (MobileNetV2's
  //    expansions and projections, the CIFAR ResNets' 1x1 shortcut in layer1, ShuffleV1's first unit):
  //    1.3-3x; ResNet50's 64<->256 layers on 32x32 (2^24) were as fast or slower, 2x2 planes
  //    no faster.
  // bf16 keeps oneDNN, the only path that rounds operands to bf16.
  if (impl_setting() == ConvImpl::Auto && !bf16_setting() && ws[2] == 1 && ws[3] == 1 && p.stride_h == 1 &&
      p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0 && p.groups < xs[1]) {
    const int64_t plane = ys[2] * ys[3];
    if (p.groups > 1 ? plane <= 64 : plane >= 16 && ws[0] * ws[1] * plane <= (int64_t{1} << 22)) return false;
  }
  Dnnl& d = dnnl_state();
  std::lock_guard<std::mutex> lock(d.mu);
  const bool bf16 = bf16_setting();
  const bool wino = winograd_setting() && winograd_shape(ws, p);
  const std::array<int64_t, 23> key{static_cast<int64_t>(dir), xs[0], xs[1], xs[2], xs[3], ws[0], ws[1], ws[2],
                                    ws[3], ys[2], ys[3], p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                                    p.dilation_h, p.dilation_w, p.groups, bias != nullptr, epi != nullptr,
                                    epi && epi->relu, bf16, wino};
  auto it = d.cache.find(key);
  if (it == d.cache.end()) {
    Slot slot;
    slot.cand.push_back(build(d, dir, xs, ws, ys, p, bias != nullptr, epi, false, bf16, wino));
    // No bf16 or Winograd kernel for this shape: oneDNN's direct F32 one, rather than leaving it to
    // the slower im2col path.
    if ((bf16 || wino) && !slot.cand.front().supported)
      slot.cand.front() = build(d, dir, xs, ws, ys, p, bias != nullptr, epi, false, false, false);
    // A forward has a second candidate: oneDNN's choice for an inference forward, often a different
    // kernel (brgconv on NHWC instead of the direct kernel on nChw16c): timed below, once per shape.
    if (dir == DnnlConvDir::Forward && tuning_setting()) {
      Entry alt = build(d, dir, xs, ws, ys, p, bias != nullptr, epi, true, slot.cand.front().bf16,
                        slot.cand.front().winograd);
      const Entry& first = slot.cand.front();
      if (alt.supported && (!first.supported || alt.impl_name != first.impl_name || alt.in0.prim != first.in0.prim))
        slot.cand.push_back(std::move(alt));
    }
    it = d.cache.emplace(key, std::move(slot)).first;
  }
  Slot& slot = it->second;
  ++d.calls;  // one per call, however many timed runs its first call makes
  if (!tuning_setting() && slot.cand.front().supported) {  // pinned: the training-forward kernel, always
    if (slot.chosen < 0 && slot.cand.size() == 1) slot.chosen = 0;  // nothing left to decide
    slot.last = 0;
    execute(d, slot.cand.front(), xs, ws, ys, in0, in1, bias, out, epi);
    return true;
  }
  if (slot.chosen < 0) {
    std::vector<size_t> ok;
    for (size_t i = 0; i < slot.cand.size(); ++i)
      if (slot.cand[i].supported) ok.push_back(i);
    if (ok.empty()) {
      --d.calls;
      const Entry& e = slot.cand.front();
      // (A forward with an epilogue oneDNN will not fuse falls back to the plain oneDNN forward + BN.)
      if (impl_setting() == ConvImpl::Dnnl && !epi)
        RETORT_FAIL("conv2d (oneDNN, RETORT_CPU_CONV=dnnl): no oneDNN kernel for x ", shape_str(xs), ", w ",
                    shape_str(ws), ", y ", shape_str(ys), e.impl_name.empty() ? "" : " (only " + e.impl_name + ")");
      return false;
    }
    if (ok.size() == 1) {
      slot.chosen = static_cast<int>(ok.front());
    } else {
      // The fastest of kTimedRuns runs each, interleaved (the first run of each warms caches and
      // pages; on a shared, noisy machine two runs sometimes kept the slower kernel), like
      // cudnn.benchmark. The output of these runs is the call's output, so the chosen candidate
      // runs last.
      constexpr int kTimedRuns = 4;
      std::vector<double> best(slot.cand.size(), 1e30);
      for (int rep = 0; rep < kTimedRuns; ++rep)
        for (size_t i : ok) {
          const auto t0 = std::chrono::steady_clock::now();
          execute(d, slot.cand[i], xs, ws, ys, in0, in1, bias, out, epi);
          best[i] = std::min(best[i], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
      slot.chosen = static_cast<int>(ok.front());
      for (size_t i : ok)
        if (best[i] < best[static_cast<size_t>(slot.chosen)]) slot.chosen = static_cast<int>(i);
      slot.last = slot.chosen;
      if (static_cast<size_t>(slot.chosen) == ok.back()) return true;
    }
  }
  slot.last = slot.chosen;
  execute(d, slot.cand[static_cast<size_t>(slot.chosen)], xs, ws, ys, in0, in1, bias, out, epi);
  return true;
}

std::vector<std::string> dnnl_conv_choices() {
  Dnnl& d = dnnl_state();
  std::lock_guard<std::mutex> lock(d.mu);
  std::vector<std::string> out;
  static const char* dirs[] = {"fwd", "bwd-data", "bwd-weight"};
  for (const auto& [k, slot] : d.cache) {
    if (slot.last < 0) continue;
    // The kernel the latest call ran; when that was a pinned call and timing had picked another one
    // for this shape earlier in the process, both are named.
    const Entry& e = slot.cand[static_cast<size_t>(slot.last)];
    const std::string timed = slot.chosen >= 0 && slot.chosen != slot.last
                                  ? ", pinned; timing chose " + slot.cand[static_cast<size_t>(slot.chosen)].impl_name
                                  : "";
    // With bf16 on, the kernel's input type: "bf16" or "f32 (no bf16 kernel)"; with Winograd on, for
    // the 3x3 stride-1 shapes it applies to, "winograd" or "direct (no winograd kernel)".
    const std::string math = k[21] ? (e.bf16 ? " bf16" : " f32 (no bf16 kernel)")
                             : k[22] ? (e.winograd ? " winograd" : " direct (no winograd kernel)")
                                     : "";
    out.push_back(detail::cat(dirs[k[0]], k[19] ? (k[20] ? "+bn+relu" : "+bn") : "", " x[", k[1], ", ", k[2], ", ",
                              k[3], ", ", k[4], "] w[", k[5], ", ", k[6], ", ", k[7], ", ", k[8], "] g", k[17], ": ",
                              e.impl_name, math, " (", slot.cand.size(), " candidate", slot.cand.size() > 1 ? "s" : "",
                              timed, ")"));
  }
  return out;
}

int64_t dnnl_conv_calls() {
  Dnnl& d = dnnl_state();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.calls;
}

std::string dnnl_info() {
  const dnnl_version_t* v = dnnl_version();
  const char* mode = impl_setting() == ConvImpl::Im2col ? "off (RETORT_CPU_CONV=im2col)"
                     : impl_setting() == ConvImpl::Dnnl ? "forced (RETORT_CPU_CONV=dnnl)"
                                                         : "";
  const char* math = impl_setting() == ConvImpl::Im2col ? ""
                     : bf16_setting()                     ? "bf16"
                     : winograd_setting()                 ? "f32 winograd"
                                                          : "f32";
  return detail::cat("oneDNN ", v->major, ".", v->minor, ".", v->patch, " convolutions ", mode,
                     *mode && *math ? " " : "", math, ", ISA ", isa_name());
}

}  // namespace retort::cpu
