// Kernels on activations in oneDNN's blocked layouts (docs/architecture.md, "Blocked activations").
//
// A 4-d F32 activation [N, C, H, W] in nChw{B}c (B = 8 on AVX2, 16 on AVX-512, the layouts oneDNN's
// convolutions choose) stores, for each sample n and channel block cb, S = H*W pixels of B consecutive
// channels: element (n, c, s) at ((n * C/B + c/B) * S + s) * B + c % B. A convolution leaves its output so
// (conv_dnnl.cpp); batch norm (below) and the elementwise kernels (elementwise.cpp) read and write the same
// layout, so the next convolution reads it without a reorder. Anything else reads row-major through
// Tensor::raw_data(), which rewrites the storage in place first.
//
// Batch norm here vectorises across the B channels of a block (one register of B lanes) and walks the
// pixels. Work items are (channel block, chunk of kRows samples); every item writes its own partial sums
// (double, per channel), summed in item order afterwards, so results do not depend on the thread count.
// Within a sample the sums run in F32 over runs of kRun pixels, each run's sum added to a double.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/profile.h"

namespace retort::cpu {

int common_block(std::initializer_list<const Tensor*> operands) {
  int block = 0;
  const Shape* shape = nullptr;
  for (const Tensor* t : operands) {
    if (!t->defined()) continue;
    if (t->dtype() != DType::F32 || !t->device().is_cpu() || t->dim() != 4) return 0;
    if (shape && t->shape() != *shape) return 0;
    shape = &t->shape();
    if (block == 0) block = t->layout_block();
  }
  if (block == 0 || (*shape)[1] % block != 0) return 0;
  for (const Tensor* t : operands)  // a second blocked operand in the other block size: row-major
    if (t->defined() && t->layout_block() != 0 && t->layout_block() != block) return 0;
  return block;
}

Tensor in_block_layout(const Tensor& t, int block) {
  if (t.layout_block() == block) return t;
  const Shape& sh = t.shape();
  const int64_t s = sh[2] * sh[3], len = block * s, chunks = sh[0] * (sh[1] / block);
  const bool timed = profiling::enabled();  // counted as the calling kernel's layout time
  const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  Tensor out = Tensor::empty(sh, DType::F32);
  const float* src = t.data<float>();
  float* dst = static_cast<float*>(out.raw_data_any_layout());
#pragma omp parallel for if (t.numel() > kParallelGrain)
  for (int64_t i = 0; i < chunks; ++i) {
    const float* a = src + i * len;  // [B][S]
    float* b = dst + i * len;        // [S][B]
    for (int64_t j = 0; j < s; ++j)
      for (int64_t k = 0; k < block; ++k) b[j * block + k] = a[k * s + j];
  }
  out.set_layout_block(block);
  if (timed) profiling::add_layout_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return out;
}

namespace {

constexpr int64_t kRows = 8;  // samples per work item

struct Geo {
  int64_t n, cb, s;  // samples, channel blocks, pixels
  int64_t chunks() const { return (n + kRows - 1) / kRows; }
  int64_t items() const { return cb * chunks(); }
};

Geo geo_of(const Tensor& x, int b) { return {x.shape()[0], x.shape()[1] / b, x.shape()[2] * x.shape()[3]}; }

// Runs f(cb, n0, n1, item) over every (channel block, sample chunk).
template <class F>
void for_items(const Geo& g, int64_t numel, F&& f) {
  const int64_t chunks = g.chunks();
#pragma omp parallel for if (numel > kParallelGrain)
  for (int64_t it = 0; it < g.items(); ++it) {
    const int64_t cb = it / chunks, ch = it % chunks;
    f(cb, ch * kRows, std::min(g.n, (ch + 1) * kRows), it);
  }
}

// Per-channel totals of the items' partials: part[item][k] over the chunks of block cb.
template <int B>
void totals(const Geo& g, const std::vector<double>& part, std::vector<double>& out) {
  out.assign(static_cast<size_t>(g.cb * B), 0.0);
  const int64_t chunks = g.chunks();
  for (int64_t cb = 0; cb < g.cb; ++cb)
    for (int64_t ch = 0; ch < chunks; ++ch)
      for (int k = 0; k < B; ++k) out[static_cast<size_t>(cb * B + k)] += part[static_cast<size_t>((cb * chunks + ch) * B + k)];
}

// Pixels per F32 partial sum: each lane adds at most kRun values in F32 before its double total takes
// them. A lane runs down a whole plane of one channel, where norm.cpp's row sums split a plane over the
// vector's lanes; without the cap a 28x28 plane was 784 sequential F32 additions per lane, and batch
// statistics that much less accurate flipped ReLUs near zero that the row-major path (and PyTorch's
// F32) kept on the float64 side (session 27: resnet20's golden gradients off by 5.6 %, bound 5 %).
constexpr int64_t kRun = 32;

// acc[k] += sum over the rows' pixels of x (sq: of (x - m[k])^2), in F32 runs of kRun pixels.
template <int B>
RETORT_SIMD_CLONES void sums(const float* __restrict x, int64_t n0, int64_t n1, int64_t row_stride, int64_t s,
                             const float* __restrict m, bool sq, double* __restrict acc) {
  for (int64_t i = n0; i < n1; ++i) {
    const float* xr = x + i * row_stride;
    for (int64_t j0 = 0; j0 < s; j0 += kRun) {
      const int64_t j1 = std::min(s, j0 + kRun);
      float p[B] = {};
      if (sq) {
        for (int64_t j = j0; j < j1; ++j)
#pragma omp simd
          for (int k = 0; k < B; ++k) {
            const float d = xr[j * B + k] - m[k];
            p[k] += d * d;
          }
      } else {
        for (int64_t j = j0; j < j1; ++j)
#pragma omp simd
          for (int k = 0; k < B; ++k) p[k] += xr[j * B + k];
      }
      for (int k = 0; k < B; ++k) acc[k] += static_cast<double>(p[k]);
    }
  }
}

template <int B>
RETORT_SIMD_CLONES void normalize(const float* __restrict x, float* __restrict y, int64_t n0, int64_t n1,
                                  int64_t row_stride, int64_t s, const float* __restrict sc,
                                  const float* __restrict sh, bool relu) {
  for (int64_t i = n0; i < n1; ++i) {
    const float* xr = x + i * row_stride;
    float* yr = y + i * row_stride;
    for (int64_t j = 0; j < s; ++j)
#pragma omp simd
      for (int k = 0; k < B; ++k) {
        const float v = xr[j * B + k] * sc[k] + sh[k];
        yr[j * B + k] = relu ? relu_keep_nan(v) : v;
      }
  }
}

// acc_g[k] += sum g, acc_gx[k] += sum g * (x - m[k]); g = gy masked where relu_out <= 0.
template <int B>
RETORT_SIMD_CLONES void backward_sums(const float* __restrict gy, const float* __restrict x,
                                      const float* __restrict r, int64_t n0, int64_t n1, int64_t row_stride,
                                      int64_t s, const float* __restrict m, double* __restrict acc_g,
                                      double* __restrict acc_gx) {
  for (int64_t i = n0; i < n1; ++i) {
    const int64_t off = i * row_stride;
    for (int64_t j0 = 0; j0 < s; j0 += kRun) {
      const int64_t j1 = std::min(s, j0 + kRun);
      float pg[B] = {}, pgx[B] = {};
      for (int64_t j = j0; j < j1; ++j)
#pragma omp simd
        for (int k = 0; k < B; ++k) {
          const int64_t e = off + j * B + k;
          const float g = r ? (r[e] > 0.f ? gy[e] : 0.f) : gy[e];
          pg[k] += g;
          pgx[k] += g * (x[e] - m[k]);
        }
      for (int k = 0; k < B; ++k) {
        acc_g[k] += static_cast<double>(pg[k]);
        acc_gx[k] += static_cast<double>(pgx[k]);
      }
    }
  }
}

template <int B>
RETORT_SIMD_CLONES void backward_gx(const float* __restrict gy, const float* __restrict x, const float* __restrict r,
                                    float* __restrict gx, int64_t n0, int64_t n1, int64_t row_stride, int64_t s,
                                    const float* __restrict a, const float* __restrict b, const float* __restrict c) {
  for (int64_t i = n0; i < n1; ++i) {
    const int64_t off = i * row_stride;
    for (int64_t j = 0; j < s; ++j)
#pragma omp simd
      for (int k = 0; k < B; ++k) {
        const int64_t e = off + j * B + k;
        const float g = r ? (r[e] > 0.f ? gy[e] : 0.f) : gy[e];
        gx[e] = a[k] * g + b[k] * x[e] + c[k];
      }
  }
}

double value_or(const Tensor& t, int64_t c, double fallback) {
  return t.defined() ? static_cast<double>(t.data<float>()[c]) : fallback;
}

const float* ptr(const Tensor& t) { return static_cast<const float*>(t.raw_data_any_layout()); }
float* mut_ptr(const Tensor& t) { return static_cast<float*>(t.raw_data_any_layout()); }

template <int B>
void forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool relu, Tensor& y,
                   Tensor& mean, Tensor& invstd) {
  const Geo g = geo_of(x, B);
  const int64_t row = g.cb * g.s * B;  // one sample
  const double count = static_cast<double>(g.n * g.s);
  float* pm = mean.data<float>();
  float* pi = invstd.data<float>();
  std::vector<float> w(static_cast<size_t>(g.cb * B)), bi(w.size());
  for (size_t c = 0; c < w.size(); ++c) {
    w[c] = static_cast<float>(value_or(weight, static_cast<int64_t>(c), 1.0));
    bi[c] = static_cast<float>(value_or(bias, static_cast<int64_t>(c), 0.0));
  }
  const float* px = ptr(x);
  float* py = mut_ptr(y);
  std::vector<double> part(static_cast<size_t>(g.items() * B)), tot;
  std::vector<float> mf(static_cast<size_t>(g.cb * B)), sc(mf.size()), sh(mf.size());
  for_items(g, x.numel(), [&](int64_t cb, int64_t n0, int64_t n1, int64_t it) {
    double* acc = part.data() + it * B;
    std::fill(acc, acc + B, 0.0);
    sums<B>(px + cb * g.s * B, n0, n1, row, g.s, nullptr, false, acc);
  });
  totals<B>(g, part, tot);
  std::vector<double> md(mf.size());
  for (size_t c = 0; c < mf.size(); ++c) {
    md[c] = tot[c] / count;
    mf[c] = static_cast<float>(md[c]);  // the squares' centre in F32, as norm.cpp's
  }
  for_items(g, x.numel(), [&](int64_t cb, int64_t n0, int64_t n1, int64_t it) {
    double* acc = part.data() + it * B;
    std::fill(acc, acc + B, 0.0);
    sums<B>(px + cb * g.s * B, n0, n1, row, g.s, mf.data() + cb * B, true, acc);
  });
  totals<B>(g, part, tot);
  for (size_t c = 0; c < mf.size(); ++c) {
    const double m = md[c];  // the affine takes the double mean, as norm.cpp's
    const double is = bn_invstd(tot[c] / count, eps);
    pm[c] = mf[c];
    pi[c] = static_cast<float>(is);
    const BnAffine a = bn_affine(m, is, w[c], bi[c]);
    sc[c] = static_cast<float>(a.scale);
    sh[c] = static_cast<float>(a.shift);
  }
  for_items(g, x.numel(), [&](int64_t cb, int64_t n0, int64_t n1, int64_t) {
    const int64_t off = cb * g.s * B;
    normalize<B>(px + off, py + off, n0, n1, row, g.s, sc.data() + cb * B, sh.data() + cb * B, relu);
  });
  y.set_layout_block(B);
}

template <int B>
void forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, double eps, bool relu, Tensor& y) {
  const Geo g = geo_of(x, B);
  const int64_t row = g.cb * g.s * B;
  const float* rm = running_mean.data<float>();
  const float* rv = running_var.data<float>();
  std::vector<float> sc(static_cast<size_t>(g.cb * B)), sh(sc.size());
  for (size_t c = 0; c < sc.size(); ++c) {
    const int64_t ch = static_cast<int64_t>(c);
    const BnAffine a = bn_affine(static_cast<double>(rm[c]), bn_invstd(static_cast<double>(rv[c]), eps),
                                 value_or(weight, ch, 1.0), value_or(bias, ch, 0.0));
    sc[c] = static_cast<float>(a.scale);
    sh[c] = static_cast<float>(a.shift);
  }
  const float* px = ptr(x);
  float* py = mut_ptr(y);
  for_items(g, x.numel(), [&](int64_t cb, int64_t n0, int64_t n1, int64_t) {
    const int64_t off = cb * g.s * B;
    normalize<B>(px + off, py + off, n0, n1, row, g.s, sc.data() + cb * B, sh.data() + cb * B, relu);
  });
  y.set_layout_block(B);
}

// norm.cpp's batchnorm_backward, in the blocked layout (the same coefficients, gx = a * g + b * x + k).
template <int B>
void backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& invstd,
              bool training, const Tensor& relu_out, Tensor& gx, Tensor& gweight, Tensor& gbias) {
  const Geo g = geo_of(x, B);
  const int64_t row = g.cb * g.s * B;
  const double count = static_cast<double>(g.n * g.s);
  // Every row-major read before the first blocked pointer (the rule in tensor.h).
  const float* pm = mean.data<float>();
  const float* pi = invstd.data<float>();
  float* pgw = gweight.defined() ? gweight.data<float>() : nullptr;
  float* pgb = gbias.defined() ? gbias.data<float>() : nullptr;
  std::vector<double> wv(static_cast<size_t>(g.cb * B));
  for (size_t c = 0; c < wv.size(); ++c) wv[c] = value_or(weight, static_cast<int64_t>(c), 1.0);
  const float* pg = ptr(gy);
  const float* px = ptr(x);
  const float* pr = relu_out.defined() ? ptr(relu_out) : nullptr;
  std::vector<double> part_g(static_cast<size_t>(g.items() * B)), part_gx(part_g.size()), sum_g, sum_gx;
  for_items(g, x.numel(), [&](int64_t cb, int64_t n0, int64_t n1, int64_t it) {
    double* ag = part_g.data() + it * B;
    double* agx = part_gx.data() + it * B;
    std::fill(ag, ag + B, 0.0);
    std::fill(agx, agx + B, 0.0);
    const int64_t off = cb * g.s * B;
    backward_sums<B>(pg + off, px + off, pr ? pr + off : nullptr, n0, n1, row, g.s, pm + cb * B, ag, agx);
  });
  totals<B>(g, part_g, sum_g);
  totals<B>(g, part_gx, sum_gx);
  std::vector<float> av(static_cast<size_t>(g.cb * B)), bv(av.size()), kv(av.size());
  for (size_t c = 0; c < av.size(); ++c) {
    const double m = pm[c], is = pi[c], w = wv[c];
    if (pgb) pgb[c] = static_cast<float>(sum_g[c]);
    if (pgw) pgw[c] = static_cast<float>(sum_gx[c] * is);
    const double scale = w * is;
    const double mean_g = training ? sum_g[c] / count : 0.0;
    const double proj = training ? is * is * sum_gx[c] / count : 0.0;
    av[c] = static_cast<float>(scale);
    bv[c] = static_cast<float>(-scale * proj);
    kv[c] = static_cast<float>(scale * (m * proj - mean_g));
  }
  if (!gx.defined()) return;
  float* pgx = mut_ptr(gx);
  for_items(g, x.numel(), [&](int64_t cb, int64_t n0, int64_t n1, int64_t) {
    const int64_t off = cb * g.s * B;
    backward_gx<B>(pg + off, px + off, pr ? pr + off : nullptr, pgx + off, n0, n1, row, g.s, av.data() + cb * B,
                   bv.data() + cb * B, kv.data() + cb * B);
  });
  gx.set_layout_block(B);
}

}  // namespace

bool blocked_batchnorm_forward_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool relu,
                                     Tensor& y, Tensor& mean, Tensor& invstd) {
  const int b = common_block({&x});
  if (b == 8) forward_train<8>(x, weight, bias, eps, relu, y, mean, invstd);
  if (b == 16) forward_train<16>(x, weight, bias, eps, relu, y, mean, invstd);
  return b != 0;
}

bool blocked_batchnorm_forward_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                    const Tensor& running_mean, const Tensor& running_var, double eps, bool relu,
                                    Tensor& y) {
  const int b = common_block({&x});
  if (b == 8) forward_eval<8>(x, weight, bias, running_mean, running_var, eps, relu, y);
  if (b == 16) forward_eval<16>(x, weight, bias, running_mean, running_var, eps, relu, y);
  return b != 0;
}

bool blocked_batchnorm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                const Tensor& invstd, bool training, const Tensor& relu_out, Tensor& gx,
                                Tensor& gweight, Tensor& gbias) {
  const int b = common_block({&gy, &x, &relu_out});
  if (b == 0) return false;
  // The operands not yet in the layout are copied into it (layouts decided before any pointer is taken).
  const Tensor g2 = in_block_layout(gy, b), x2 = in_block_layout(x, b);
  const Tensor r2 = relu_out.defined() ? in_block_layout(relu_out, b) : Tensor();
  if (b == 8) backward<8>(g2, x2, weight, mean, invstd, training, r2, gx, gweight, gbias);
  if (b == 16) backward<16>(g2, x2, weight, mean, invstd, training, r2, gx, gweight, gbias);
  return true;
}

}  // namespace retort::cpu
