// Depthwise convolutions ("same" padding, any stride) as vectorised sweeps over channel segments.
//
// Why: mobile_half and ShuffleV2 run their 3x3 depthwise layers on 16x16 down to 2x2 planes. oneDNN's
// depthwise kernels work on nChw16c, so every call pays two or three reorders that cost more than the
// arithmetic (2-27 GFLOP/s measured, the backward-weight worst), and a plane-at-a-time loop (conv.cpp,
// the reference) spends its time in loop set-up on rows of 2-4 values.
//
// How: within one sample, B consecutive channels are one contiguous segment of L = B*H*W values. For a
// stride-1 "same" convolution, kernel tap t = (kh, kw) reads, for the value at flat position j of the
// segment, the value at j + off_t with off_t = (kh - ph)*W + (kw - pw), provided the 2-D position stays
// inside the plane. So each tap is one multiply-add over the whole segment, with per-slot weight and
// mask vectors built once per segment:
//   forward          y[j]     = bias[c(j)] + sum_t mask_t[j] ? w[c(j), t] * x[j + off_t]
//   backward data    gx[j]    = sum_t mask'_t[j] ? w[c(j), t] * gy[j - off_t]      (mask': j - off_t inside)
//   backward weight  gw[c, t] = sum_n sum_{j in c} mask_t[j] ? gy[j] * x[j + off_t]
// The operands are copied into a zero-margined buffer first, so j +- off_t never leaves it. Masked
// slots contribute an exact zero (a select, not a multiply by 0, so a non-finite value in one channel
// never leaks into its neighbour). A stride s > 1 computes the stride-1 output and keeps every s-th
// row and column (forward), or spreads gy onto the stride-1 grid with zeros in between (backward) —
// "same" padding makes the stride-s outputs exactly the stride-1 outputs at multiples of s.
//
// Measured in mobile_half's training step at batch 64, 2 threads (retort-bench --profile, an AVX-512
// machine): the weight gradients of its depthwise layers 11.5 -> 5.3 ms per step, forward and data
// gradient at stride 1 level with oneDNN (3.9 and 4.5 ms either way). On AVX2 machines the tap loop
// was scalar until session 23 (see masked_fma); vectorised there, 2-2.5x faster per call. Strided F32
// forwards and data gradients stay with oneDNN (see depthwise_conv2d); everything else of this shape
// family runs here, F64 included.
//
// Determinism: forward and backward-data outputs are each written by one iteration; the weight
// gradient sums per segment over the whole batch in a fixed order (kChunkRows samples in T, then in
// double), whatever the thread count.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/env.h"

namespace retort::cpu {

namespace {

constexpr int64_t kSegmentElems = 512;  // values per sample in one segment (one channel if its plane is larger)
constexpr int64_t kMaxPlane = 4096;     // larger planes go to oneDNN / the reference loops
constexpr int64_t kMaxTaps = 49;        // up to 7x7 kernels
constexpr int64_t kChunkRows = 64;      // samples summed in T before the weight gradient goes to double
constexpr int64_t kBatchChunk = 16;     // samples per parallel work item (forward, backward data)

struct Dw {
  int64_t N, C, H, W, KH, KW, ph, pw, sh, sw, OH, OW;
  int64_t hw() const { return H * W; }
  int64_t ohw() const { return OH * OW; }
  int64_t taps() const { return KH * KW; }
  int64_t seg_channels() const { return std::max<int64_t>(1, kSegmentElems / hw()); }
  int64_t segments() const { return (C + seg_channels() - 1) / seg_channels(); }
  int64_t margin() const { return ph * W + pw; }  // largest |off_t|
  int64_t off(int64_t t) const { return (t / KW - ph) * W + (t % KW - pw); }
  bool strided() const { return sh != 1 || sw != 1; }
};

std::atomic<int64_t> g_calls{0};

bool direct_enabled() {
  static const bool on = env_switch("RETORT_CPU_DEPTHWISE", true);
  return on;
}

// The shapes this file handles: depthwise (groups == C == O, one input channel per group), odd
// kernels with "same" padding (k - 1) / 2, no dilation, any stride.
bool supported(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p, Dw& d) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) return false;
  d = Dw{x[0], x[1], x[2], x[3], w[2], w[3], p.pad_h, p.pad_w, p.stride_h, p.stride_w, y[2], y[3]};
  return p.groups == d.C && w[0] == d.C && w[1] == 1 && y[1] == d.C && p.dilation_h == 1 && p.dilation_w == 1 &&
         d.KH % 2 == 1 && d.KW % 2 == 1 && d.ph == (d.KH - 1) / 2 && d.pw == (d.KW - 1) / 2 &&
         d.OH == (d.H - 1) / d.sh + 1 && d.OW == (d.W - 1) / d.sw + 1 && d.hw() <= kMaxPlane &&
         d.taps() <= kMaxTaps && d.N > 0 && d.C > 0;
}

// A slot's mask: all ones (keep) or zero (drop), as wide as T, so that masking is a bitwise and.
template <class T>
using MaskOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

// The tap masks of a full segment, shared by every segment of the call (a shorter last segment uses a
// prefix): mk[t*L + j] = ~0 where tap t at slot j stays inside the plane, reading forward (j + off_t:
// the forward and the weight gradient) or backward (j - off_t: the data gradient). They depend only on
// the position within the plane, so one plane is worked out and repeated.
template <class T>
std::vector<MaskOf<T>> build_masks(const Dw& d, bool backward) {
  const int64_t hw = d.hw(), len = d.seg_channels() * hw;
  std::vector<MaskOf<T>> mk(static_cast<size_t>(d.taps() * len));
  for (int64_t t = 0; t < d.taps(); ++t) {
    const int64_t dh = t / d.KW - d.ph, dw = t % d.KW - d.pw;
    const int64_t sh = backward ? -dh : dh, sw = backward ? -dw : dw;
    MaskOf<T>* mt = mk.data() + t * len;
    for (int64_t q = 0; q < hw; ++q) {
      const int64_t h = q / d.W + sh, w = q % d.W + sw;
      mt[q] = h >= 0 && h < d.H && w >= 0 && w < d.W ? ~MaskOf<T>(0) : MaskOf<T>(0);
    }
    for (int64_t c = 1; c < d.seg_channels(); ++c) std::copy_n(mt, hw, mt + c * hw);
  }
  return mk;
}

// wv[t*len + j] = w[c0 + j / HW, t] for the b channels of a segment.
template <class T>
void fill_weights(const Dw& d, const T* w, int64_t c0, int64_t b, T* wv) {
  const int64_t hw = d.hw(), len = b * hw;
  for (int64_t t = 0; t < d.taps(); ++t)
    for (int64_t c = 0; c < b; ++c) std::fill_n(wv + t * len + c * hw, hw, w[(c0 + c) * d.taps() + t]);
}

// One tap over a segment: out[j] += m[j] ? a[j] * b[j] : 0, written as a bitwise and of the product
// with the slot's mask. A function of its own (not inlined) so that GCC vectorises it: inlined into
// the loop over taps, -O3's unroll-and-jam fused two taps into one scalar loop instead (measured 5x
// slower). The mask is not a byte and not a ?: because GCC 12 left those forms scalar in the AVX2
// clone (-ftrapping-math forbids evaluating a product the ?: might skip; byte masks then need
// widening): 5x slower again, found by perf in session 23. (The and between the product and the sum
// keeps them a separate multiply and add — the product is rounded before the add, where the old form
// compiled to a fused multiply-add; the AVX-512 timings above predate this form.)
template <class T>
__attribute__((noinline)) RETORT_SIMD_CLONES void masked_fma(const T* __restrict a, const T* __restrict b,
                                                            const MaskOf<T>* __restrict m, int64_t len,
                                                            T* __restrict out) {
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) out[j] += std::bit_cast<T>(std::bit_cast<MaskOf<T>>(a[j] * b[j]) & m[j]);
}

// out[j] += sum_t mk_t[j] ? wv_t[j] * src[j + sign * off_t]; src points at the segment's first value
// inside a buffer with margin() readable values on each side; mk rows are L = seg_channels * HW apart.
template <class T>
void stencil(const Dw& d, const T* src, const T* wv, const MaskOf<T>* mk, int64_t len, int sign, T* out) {
  const int64_t mstride = d.seg_channels() * d.hw();
  for (int64_t t = 0; t < d.taps(); ++t) masked_fma(wv + t * len, src + sign * d.off(t), mk + t * mstride, len, out);
}

// acc_t[j] += mk_t[j] ? g[j] * src[j + off_t] for every tap (acc rows len apart).
template <class T>
void weight_taps(const Dw& d, const T* g, const T* src, const MaskOf<T>* mk, int64_t len, T* acc) {
  const int64_t mstride = d.seg_channels() * d.hw();
  for (int64_t t = 0; t < d.taps(); ++t) masked_fma(g, src + d.off(t), mk + t * mstride, len, acc + t * len);
}

// Copies sample n's segment of a [N, C, H, W] tensor (or, with spread, puts its [N, C, OH, OW] values on
// the stride-1 grid with zeros in between) into buf[0, len).
template <class T>
void load_segment(const Dw& d, const T* src, int64_t n, int64_t c0, int64_t b, bool spread, T* buf) {
  const int64_t hw = d.hw();
  if (!spread) {
    std::copy_n(src + (n * d.C + c0) * hw, b * hw, buf);
    return;
  }
  std::fill_n(buf, b * hw, T(0));
  for (int64_t c = 0; c < b; ++c) {
    const T* sp = src + (n * d.C + c0 + c) * d.ohw();
    T* bp = buf + c * hw;
    for (int64_t oh = 0; oh < d.OH; ++oh)
      for (int64_t ow = 0; ow < d.OW; ++ow) bp[oh * d.sh * d.W + ow * d.sw] = sp[oh * d.OW + ow];
  }
}

bool parallel(const Dw& d) { return d.N * d.C * d.hw() * d.taps() > kParallelGrain; }

// Forward (backward = false) or backward data: parallel over (segment, chunk of kBatchChunk samples);
// each output value is written by one iteration.
template <class T>
void forward_or_data(const Dw& d, const T* in, const T* w, const T* bias, T* out, bool backward) {
  const std::vector<MaskOf<T>> mk = build_masks<T>(d, backward);
  const int64_t chunks = (d.N + kBatchChunk - 1) / kBatchChunk, items = d.segments() * chunks;
  const int64_t m = d.margin(), full = d.seg_channels() * d.hw();
  // A strided forward computes the stride-1 plane into `plane` and keeps every s-th value; a strided
  // backward spreads gy onto the stride-1 grid when loading.
  const bool subsample = !backward && d.strided(), spread = backward && d.strided();
#pragma omp parallel if (parallel(d))
  {
    std::vector<T> wv(static_cast<size_t>(d.taps() * full)), buf(static_cast<size_t>(full + 2 * m), T(0)),
        plane(static_cast<size_t>(full));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < items; ++i) {
      const int64_t seg = i / chunks, n0 = (i % chunks) * kBatchChunk, n1 = std::min(d.N, n0 + kBatchChunk);
      const int64_t c0 = seg * d.seg_channels(), b = std::min(d.seg_channels(), d.C - c0), len = b * d.hw();
      fill_weights(d, w, c0, b, wv.data());
      for (int64_t n = n0; n < n1; ++n) {
        load_segment(d, in, n, c0, b, spread, buf.data() + m);
        T* dst = subsample ? plane.data() : out + (n * d.C + c0) * d.hw();
        for (int64_t c = 0; c < b; ++c) std::fill_n(dst + c * d.hw(), d.hw(), bias ? bias[c0 + c] : T(0));
        stencil(d, buf.data() + m, wv.data(), mk.data(), len, backward ? -1 : +1, dst);
        if (!subsample) continue;
        for (int64_t c = 0; c < b; ++c) {
          T* yp = out + (n * d.C + c0 + c) * d.ohw();
          const T* pp = plane.data() + c * d.hw();
          for (int64_t oh = 0; oh < d.OH; ++oh)
            for (int64_t ow = 0; ow < d.OW; ++ow) yp[oh * d.OW + ow] = pp[oh * d.sh * d.W + ow * d.sw];
        }
      }
    }
  }
}

// Parallel over segments; each sums its channels' taps over the whole batch.
template <class T>
void backward_weight(const Dw& d, const T* gy, const T* x, T* gw) {
  const std::vector<MaskOf<T>> mk = build_masks<T>(d, false);
  const int64_t m = d.margin(), kk = d.taps(), full = d.seg_channels() * d.hw();
#pragma omp parallel if (parallel(d))
  {
    std::vector<T> xb(static_cast<size_t>(full + 2 * m), T(0)), gb(static_cast<size_t>(full)),
        acc(static_cast<size_t>(kk * full));
    std::vector<double> total(static_cast<size_t>(kk * full));
#pragma omp for schedule(static)
    for (int64_t seg = 0; seg < d.segments(); ++seg) {
      const int64_t c0 = seg * d.seg_channels(), b = std::min(d.seg_channels(), d.C - c0), len = b * d.hw();
      std::fill(total.begin(), total.end(), 0.0);
      for (int64_t r0 = 0; r0 < d.N; r0 += kChunkRows) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t n = r0; n < std::min(d.N, r0 + kChunkRows); ++n) {
          load_segment(d, x, n, c0, b, false, xb.data() + m);
          const T* g = gy + (n * d.C + c0) * d.hw();
          if (d.strided()) {
            load_segment(d, gy, n, c0, b, true, gb.data());
            g = gb.data();
          }
          weight_taps(d, g, xb.data() + m, mk.data(), len, acc.data());
        }
        for (int64_t i = 0; i < kk * len; ++i) total[static_cast<size_t>(i)] += static_cast<double>(acc[static_cast<size_t>(i)]);
      }
      for (int64_t c = 0; c < b; ++c)
        for (int64_t t = 0; t < kk; ++t) {
          double s = 0;
          for (int64_t q = 0; q < d.hw(); ++q) s += total[static_cast<size_t>(t * len + c * d.hw() + q)];
          gw[(c0 + c) * kk + t] = static_cast<T>(s);
        }
    }
  }
}

}  // namespace

bool depthwise_conv2d(DnnlConvDir dir, DType dt, const Shape& x, const Shape& w, const Shape& y,
                      const Conv2dParams& p, const Tensor& t0, const Tensor& t1, const Tensor& tb, Tensor& tout) {
  Dw d{};
  if (!direct_enabled() || conv_impl() != ConvImpl::Auto || !supported(x, w, y, p, d)) return false;
  // A strided forward or data gradient does s^2 times the arithmetic here (the whole stride-1 plane);
  // in F32 oneDNN's kernels are as fast or faster for those (measured in mobile_half's training step),
  // so only F64 runs them here.
  if (dt == DType::F32 && d.strided() && dir != DnnlConvDir::BackwardWeight) return false;
  g_calls.fetch_add(1, std::memory_order_relaxed);
  const void* in0 = t0.raw_data();
  const void* in1 = t1.raw_data();
  const void* bias = tb.defined() ? tb.raw_data() : nullptr;
  void* out = tout.raw_data();
  dispatch_float(dt, "depthwise_conv2d", [&](auto tag) {
    using T = decltype(tag);
    switch (dir) {
      case DnnlConvDir::Forward:
        forward_or_data(d, static_cast<const T*>(in0), static_cast<const T*>(in1), static_cast<const T*>(bias),
                        static_cast<T*>(out), false);
        break;
      case DnnlConvDir::BackwardData:
        forward_or_data(d, static_cast<const T*>(in0), static_cast<const T*>(in1), static_cast<const T*>(nullptr),
                        static_cast<T*>(out), true);
        break;
      case DnnlConvDir::BackwardWeight:
        backward_weight(d, static_cast<const T*>(in0), static_cast<const T*>(in1), static_cast<T*>(out));
        break;
    }
  });
  return true;
}

int64_t depthwise_direct_calls() { return g_calls.load(std::memory_order_relaxed); }
bool depthwise_direct_enabled() { return direct_enabled(); }

}  // namespace retort::cpu
