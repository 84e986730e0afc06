// Winograd F(4x4, 3x3) convolutions on OpenBLAS GEMMs, F32, for the 3x3 stride-1 layers
// (experiment.math "winograd" on CPUs where oneDNN has no Winograd kernels: below AVX-512; see
// conv_dnnl.cpp, which calls these).
//
// The algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): the output
// is cut into 4x4 tiles; each reads a 6x6 input patch d. With the constant matrices B^T (6x6),
// G (6x3) and A^T (4x6) below, one tile of one output channel is
//     y_tile = A^T [ sum_c (G g_oc G^T) ⊙ (B^T d_c B) ] A,
// 36 multiplications per input channel instead of 144. Summing over c at each of the 36 positions e is
// a matrix product, so a call is: transform the weights U_e[o][c] and the input tiles V_e[c][t], run
// 36 GEMMs M_e[o][t] = U_e · V_e (OpenBLAS), and transform each tile's M back.
//
//   Forward:        as above (a bias, and an eval batch norm folded in: U scaled per o, its shift the bias).
//   BackwardData:   a forward over gy with the weights flipped and transposed (w'[c][o] = rot180 w[o][c])
//                   and padding 2 - pad: the adjoint of a stride-1 convolution.
//   BackwardWeight: the adjoint of the forward's linear map in g: with Z = A gy_tile A^T,
//                   gw_oc = G^T [ sum_t Z_e[o][t] V_e[c][t] ] G, 36 GEMMs with the tiles as the sum.
//
// Threads take whole chunks of samples (whose tiles are a few MiB: cache-sized, and a workspace that
// does not grow with the batch) and run a chunk's transforms and its 36 GEMMs alone (OpenBLAS's OpenMP
// build runs single-threaded inside a parallel region). A transform works one channel at a time: that
// channel's patch of every tile in the chunk gathered, then each 1-D transform vectorised across those
// tiles. The weight gradient instead transforms a round of chunks in parallel over channels and runs
// the 36 GEMMs in parallel over e, summing into one GW. Rounding: the transforms' constants (up to 8
// and 1/24) make the error several times the direct kernel's, 1-5e-6 of the output scale
// (tests/engine/test_conv.cpp).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <utility>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

constexpr int64_t kE = 36;                      // transformed tile values (6x6)
// V + M (or V + Z) per chunk of samples, per thread: 4 MiB (L2 would be better but makes the GEMMs too
// narrow; measured on the 2-core AMD EPYC, session 24).
size_t& chunk_bytes() {
  static size_t bytes = size_t{4} << 20;
  return bytes;
}

struct Geom {
  int64_t N, Cin, H, W, Cout, OH, OW, ph, pw, TH, TW, P;  // P = tiles per sample
  Geom(int64_t n, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t oh, int64_t ow, int64_t ph_, int64_t pw_)
      : N(n), Cin(cin), H(h), W(w), Cout(cout), OH(oh), OW(ow), ph(ph_), pw(pw_), TH((oh + 3) / 4),
        TW((ow + 3) / 4), P(TH * TW) {}
};

// ---- the 1-D transforms -----------------------------------------------------------------------------
// B^T d (6 -> 6): the input transform, applied to columns and then to rows.
#define RETORT_WINO_BT(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) \
  do {                                                                 \
    o0 = 4.f * d0 - 5.f * d2 + d4;                                     \
    o1 = -4.f * (d1 + d2) + d3 + d4;                                   \
    o2 = 4.f * (d1 - d2) - d3 + d4;                                    \
    o3 = 2.f * (d3 - d1) - d2 + d4;                                    \
    o4 = 2.f * (d1 - d3) - d2 + d4;                                    \
    o5 = 4.f * d1 - 5.f * d3 + d5;                                     \
  } while (0)
// A^T m (6 -> 4): the output transform.
#define RETORT_WINO_AT(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3) \
  do {                                                         \
    const float s12 = m1 + m2, d12 = m1 - m2;                  \
    const float s34 = m3 + m4, d34 = m3 - m4;                  \
    o0 = m0 + s12 + s34;                                       \
    o1 = d12 + 2.f * d34;                                      \
    o2 = s12 + 4.f * s34;                                      \
    o3 = d12 + 8.f * d34 + m5;                                 \
  } while (0)
// A y (4 -> 6): the output gradient's transform (the adjoint of A^T).
#define RETORT_WINO_A(y0, y1, y2, y3, o0, o1, o2, o3, o4, o5) \
  do {                                                        \
    const float s02 = y0 + y2, s13 = y1 + y3;                 \
    const float f02 = y0 + 4.f * y2, f13 = 2.f * y1 + 8.f * y3; \
    o0 = y0;                                                  \
    o1 = s02 + s13;                                           \
    o2 = s02 - s13;                                           \
    o3 = f02 + f13;                                           \
    o4 = f02 - f13;                                           \
    o5 = y3;                                                  \
  } while (0)

// G g (3 -> 6): the weight transform, applied to columns and then to rows.
#define RETORT_WINO_G(g0, g1, g2, o0, o1, o2, o3, o4, o5)      \
  do {                                                         \
    const float s02 = g0 + g2;                                 \
    o0 = 0.25f * g0;                                           \
    o1 = (-1.f / 6) * (s02 + g1);                              \
    o2 = (-1.f / 6) * (s02 - g1);                              \
    o3 = (1.f / 24) * g0 + (1.f / 12) * g1 + (1.f / 6) * g2;   \
    o4 = (1.f / 24) * g0 - (1.f / 12) * g1 + (1.f / 6) * g2;   \
    o5 = g2;                                                   \
  } while (0)
// G^T m (6 -> 3), in double: the weight gradient's last step, once per weight.
constexpr double k6 = 1.0 / 6, k12 = 1.0 / 12, k24 = 1.0 / 24;
inline void wino_gt(const double m[6], double r[3]) {
  r[0] = 0.25 * m[0] - k6 * (m[1] + m[2]) + k24 * (m[3] + m[4]);
  r[1] = k6 * (m[2] - m[1]) + k12 * (m[3] - m[4]);
  r[2] = k6 * (m[3] + m[4] - m[1] - m[2]) + m[5];
}

// U[e][r][q] = (G g G^T)[e] * scale[r] for g = w[r][q] (forward: r the output, q the input channel),
// or, with `flip`, for g = rot180(w[q][r]) (backward data: the transposed, flipped convolution). One
// row r at a time: its 3x3 kernels gathered tap by tap, then transformed vectorised across q.
// Thread i gathers the taps into 9 * max(O, C) floats at taps + i * stride.
void transform_weights(const float* w, int64_t O, int64_t C, bool flip, const float* scale, float* U, float* taps,
                       size_t stride, int threads) {
  const int64_t rows = flip ? C : O, cols = flip ? O : C;
#pragma omp parallel num_threads(threads)
  {
    float* gk = taps + omp_get_thread_num() * stride;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t q = 0; q < cols; ++q)
        for (int k = 0; k < 9; ++k)  // tap k of g; rot180 reverses the 9 taps
          gk[k * cols + q] = flip ? w[(q * C + r) * 9 + 8 - k] : w[(r * C + q) * 9 + k];
      const float s = scale ? scale[r] : 1.f;
      float* u = U + r * cols;
      const int64_t es = rows * cols;
#pragma omp simd
      for (int64_t q = 0; q < cols; ++q) {
        float t[6][3];  // G g, column by column
        for (int j = 0; j < 3; ++j) {
          const float g0 = gk[j * cols + q], g1 = gk[(3 + j) * cols + q], g2 = gk[(6 + j) * cols + q];
          RETORT_WINO_G(g0, g1, g2, t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j]);
        }
        for (int k = 0; k < 6; ++k) {
          float o0, o1, o2, o3, o4, o5;
          RETORT_WINO_G(t[k][0], t[k][1], t[k][2], o0, o1, o2, o3, o4, o5);
          float* uk = u + k * 6 * es + q;
          uk[0] = o0 * s, uk[es] = o1 * s, uk[2 * es] = o2 * s, uk[3 * es] = o3 * s, uk[4 * es] = o4 * s,
          uk[5 * es] = o5 * s;
        }
      }
    }
  }
}

// One thread's scratch for the transforms.
struct Scratch {
  float* rows;   // per-channel values (rows_floats)
  float* plane;  // one plane, zero-padded to whole tiles: (4 TH + 2) x (4 TW + 2); its border stays zero
};

size_t plane_floats(const Geom& g) { return static_cast<size_t>((4 * g.TH + 2) * (4 * g.TW + 2)); }
// Per-channel scratch of the transforms: 72 values per tile of a chunk (input: 36 + 36; output: 24 + 16;
// output gradient: 16 + 24).
size_t rows_floats(const Geom& g, int64_t nb) { return static_cast<size_t>(72 * nb * g.P); }
size_t tile_floats(const Geom& g, int64_t nb) { return static_cast<size_t>(kE * (g.Cin + g.Cout) * nb * g.P); }

// The K x K patch of every tile of one zero-padded plane (rows of `width` values, tiles 4 apart), into
// d[K * K][T] from tile q0 on: d[i * K + m][q0 + ty * TW + tx] = plane[(4 ty + i) * width + 4 tx + m].
template <int K>
inline void gather_patches(const float* plane, int64_t width, const Geom& g, float* d, int64_t T, int64_t q0) {
  for (int64_t ty = 0; ty < g.TH; ++ty)
    for (int i = 0; i < K; ++i) {
      const float* row = plane + (4 * ty + i) * width;
      float* di = d + (i * K) * T + q0 + ty * g.TW;
      for (int m = 0; m < K; ++m) {
        float* dm = di + m * T;
#pragma omp simd
        for (int64_t tx = 0; tx < g.TW; ++tx) dm[tx] = row[4 * tx + m];
      }
    }
}

// V[e][c][t] for channels [c0, c1) of the input tiles of samples [n0, n0 + nb) (t: tile of the chunk,
// row-major over sample, tile row, tile column; T = nb * P). One channel at a time: its tiles' 6x6
// patches are gathered from the zero-padded planes into d[36][T], then B^T d B runs vectorised across
// all T tiles and writes V's row for c directly.
RETORT_SIMD_CLONES void transform_input(const float* x, const Geom& g, int64_t n0, int64_t nb, int64_t c0, int64_t c1,
                                        float* V, const Scratch& sc) {
  const int64_t T = nb * g.P, PW = 4 * g.TW + 2, es = g.Cin * T;
  float* pad = sc.plane;
  float* d = sc.rows;       // [36][T]: patch value (i, m) of each tile
  float* t = d + kE * T;    // [36][T]: B^T down the patches' columns
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t n = 0; n < nb; ++n) {
      const float* src = x + ((n0 + n) * g.Cin + c) * g.H * g.W;
      for (int64_t r = 0; r < g.H; ++r) std::copy(src + r * g.W, src + (r + 1) * g.W, pad + (r + g.ph) * PW + g.pw);
      gather_patches<6>(pad, PW, g, d, T, n * g.P);
    }
    for (int m = 0; m < 6; ++m) {  // t[k][m] = sum_i B^T[k][i] d[i][m]
      const float *d0 = d + m * T, *d1 = d + (6 + m) * T, *d2 = d + (12 + m) * T, *d3 = d + (18 + m) * T,
                  *d4 = d + (24 + m) * T, *d5 = d + (30 + m) * T;
      float *t0 = t + m * T, *t1 = t + (6 + m) * T, *t2 = t + (12 + m) * T, *t3 = t + (18 + m) * T,
            *t4 = t + (24 + m) * T, *t5 = t + (30 + m) * T;
#pragma omp simd
      for (int64_t q = 0; q < T; ++q)
        RETORT_WINO_BT(d0[q], d1[q], d2[q], d3[q], d4[q], d5[q], t0[q], t1[q], t2[q], t3[q], t4[q], t5[q]);
    }
    for (int k = 0; k < 6; ++k) {  // V[k][l] = sum_m t[k][m] B[m][l]
      const float* tk = t + k * 6 * T;
      float* v = V + (k * 6) * es + c * T;
#pragma omp simd
      for (int64_t q = 0; q < T; ++q)
        RETORT_WINO_BT(tk[q], tk[T + q], tk[2 * T + q], tk[3 * T + q], tk[4 * T + q], tk[5 * T + q], v[q], v[es + q],
                       v[2 * es + q], v[3 * es + q], v[4 * es + q], v[5 * es + q]);
    }
  }
}

// Channels [o0, o1) of y for samples [n0, n0 + nb) from M[e][o][t]: A^T M A per tile, + bias[o], then
// max(., 0) with relu. One channel at a time, vectorised across its T tiles, then the 4x4 results put
// in place.
RETORT_SIMD_CLONES void transform_output(const Geom& g, int64_t n0, int64_t nb, int64_t o0, int64_t o1, const float* M,
                                         const float* bias, bool relu, const Scratch& sc, float* y) {
  const int64_t T = nb * g.P, es = g.Cout * T;
  float* s = sc.rows;        // [4][6][T]: A^T down the columns
  float* yt = s + 24 * T;    // [4][4][T]: the output tiles
  for (int64_t o = o0; o < o1; ++o) {
    const float b = bias ? bias[o] : 0.f;
    const float* mo = M + o * T;
    for (int l = 0; l < 6; ++l) {
      const float *m0 = mo + l * es, *m1 = mo + (6 + l) * es, *m2 = mo + (12 + l) * es, *m3 = mo + (18 + l) * es,
                  *m4 = mo + (24 + l) * es, *m5 = mo + (30 + l) * es;
      float *s0 = s + l * T, *s1 = s + (6 + l) * T, *s2 = s + (12 + l) * T, *s3 = s + (18 + l) * T;
#pragma omp simd
      for (int64_t q = 0; q < T; ++q)
        RETORT_WINO_AT(m0[q], m1[q], m2[q], m3[q], m4[q], m5[q], s0[q], s1[q], s2[q], s3[q]);
    }
    for (int a = 0; a < 4; ++a) {
      const float* sa = s + a * 6 * T;
      float *y0 = yt + (a * 4) * T, *y1 = y0 + T, *y2 = y0 + 2 * T, *y3 = y0 + 3 * T;
#pragma omp simd
      for (int64_t q = 0; q < T; ++q) {
        float o0, o1, o2, o3;
        RETORT_WINO_AT(sa[q], sa[T + q], sa[2 * T + q], sa[3 * T + q], sa[4 * T + q], sa[5 * T + q], o0, o1, o2, o3);
        o0 += b, o1 += b, o2 += b, o3 += b;
        if (relu) o0 = std::max(o0, 0.f), o1 = std::max(o1, 0.f), o2 = std::max(o2, 0.f), o3 = std::max(o3, 0.f);
        y0[q] = o0, y1[q] = o1, y2[q] = o2, y3[q] = o3;
      }
    }
    for (int64_t n = 0; n < nb; ++n) {
      float* plane = y + ((n0 + n) * g.Cout + o) * g.OH * g.OW;
      for (int64_t ty = 0; ty < g.TH; ++ty)
        for (int64_t a = 0; a < 4 && 4 * ty + a < g.OH; ++a) {
          float* row = plane + (4 * ty + a) * g.OW;
          const float* ya = yt + (a * 4) * T + n * g.P + ty * g.TW;
          if (g.OW == 4 * g.TW) {  // whole tiles across: interleave the four columns of each
            for (int bb = 0; bb < 4; ++bb) {
              const float* yb = ya + bb * T;
#pragma omp simd
              for (int64_t tx = 0; tx < g.TW; ++tx) row[4 * tx + bb] = yb[tx];
            }
          } else {
            for (int64_t col = 0; col < g.OW; ++col) row[col] = ya[(col & 3) * T + (col >> 2)];
          }
        }
    }
  }
}

// Z[e][o][t] = (A gy_tile A^T)[e] for channels [o0, o1) of samples [n0, n0 + nb); gy_tile is zero
// beyond the output's edge. Like transform_input: the 4x4 tiles gathered per channel, then transformed
// across them. (sc.plane holds gy's plane at its top left.)
RETORT_SIMD_CLONES void transform_grad_output(const float* gy, const Geom& g, int64_t n0, int64_t nb, int64_t o0,
                                              int64_t o1, float* Z, const Scratch& sc) {
  const int64_t T = nb * g.P, RW = 4 * g.TW + 2, es = g.Cout * T;
  float* pad = sc.plane;
  float* d = sc.rows;      // [16][T]
  float* z = d + 16 * T;   // [6][4][T]: A down the columns
  for (int64_t o = o0; o < o1; ++o) {
    for (int64_t n = 0; n < nb; ++n) {
      const float* src = gy + ((n0 + n) * g.Cout + o) * g.OH * g.OW;
      for (int64_t r = 0; r < g.OH; ++r) std::copy(src + r * g.OW, src + (r + 1) * g.OW, pad + r * RW);
      gather_patches<4>(pad, RW, g, d, T, n * g.P);
    }
    for (int bb = 0; bb < 4; ++bb) {
      const float *d0 = d + bb * T, *d1 = d + (4 + bb) * T, *d2 = d + (8 + bb) * T, *d3 = d + (12 + bb) * T;
      float *z0 = z + bb * T, *z1 = z + (4 + bb) * T, *z2 = z + (8 + bb) * T, *z3 = z + (12 + bb) * T,
            *z4 = z + (16 + bb) * T, *z5 = z + (20 + bb) * T;
#pragma omp simd
      for (int64_t q = 0; q < T; ++q)
        RETORT_WINO_A(d0[q], d1[q], d2[q], d3[q], z0[q], z1[q], z2[q], z3[q], z4[q], z5[q]);
    }
    for (int k = 0; k < 6; ++k) {
      const float* zk = z + k * 4 * T;
      float* out = Z + (k * 6) * es + o * T;
#pragma omp simd
      for (int64_t q = 0; q < T; ++q)
        RETORT_WINO_A(zk[q], zk[T + q], zk[2 * T + q], zk[3 * T + q], out[q], out[es + q], out[2 * es + q],
                      out[3 * es + q], out[4 * es + q], out[5 * es + q]);
    }
  }
}

// The products C_e = A_e · op(B_e) (op: transposed with trans_b) at positions e in [e0, e1), A_e
// [m x k], C_e [m x n]. Straight to OpenBLAS, as conv.cpp's backend GEMM does, but not through
// backend_for(): with the profiler on that is a decorator, not to be entered from inside a timed
// convolution and from several threads at once. Every call here is made inside a parallel region,
// where OpenBLAS's OpenMP build runs single-threaded.
void gemm_positions(int64_t e0, int64_t e1, int64_t m, int64_t n, int64_t k, const float* A, const float* B,
                    bool trans_b, float beta, float* C) {
  for (int64_t e = e0; e < e1; ++e)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.f, A + e * m * k, static_cast<int>(k), B + e * k * n,
                static_cast<int>(trans_b ? k : n), beta, C + e * m * n, static_cast<int>(n));
}

Geom geom_of(DnnlConvDir dir, const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dParams& p) {
  if (dir == DnnlConvDir::BackwardData)  // a forward from gy to gx with padding 2 - pad
    return Geom(ys[0], ys[1], ys[2], ys[3], xs[1], xs[2], xs[3], 2 - p.pad_h, 2 - p.pad_w);
  return Geom(xs[0], xs[1], xs[2], xs[3], ws[0], ys[2], ys[3], p.pad_h, p.pad_w);
}

// How the batch is split: `threads` threads each take whole chunks of `nb` samples, as many chunks per
// thread as keep a chunk's tiles within chunk_bytes(), and an equal count of them (the last may be
// short). In rounds (the weight gradient, and any call with fewer chunks than threads: a small batch),
// `threads` chunks at a time are transformed in parallel over channels and their GEMMs run in parallel
// over e instead.
struct Plan {
  int threads;
  int64_t nb, chunks;
  bool rounds;
  int64_t round() const { return nb * threads; }
  int64_t span() const { return rounds ? round() : nb; }  // samples whose tiles one buffer holds
};
Plan plan_of(const Geom& g, bool weight_grad) {
  const int threads = std::max(1, omp_get_max_threads());
  const size_t per_sample = tile_floats(g, 1) * sizeof(float);
  const size_t budget = threads * chunk_bytes();
  const int64_t rounds = std::max<int64_t>(1, static_cast<int64_t>((g.N * per_sample + budget - 1) / budget));
  const int64_t nb = std::max<int64_t>(1, (g.N + threads * rounds - 1) / (threads * rounds));
  const int64_t chunks = (g.N + nb - 1) / nb;
  return {threads, nb, chunks, weight_grad || chunks < threads};
}

// The workspace: the transformed weights (or the weight gradient's sum) [36][Cout][Cin] and the folded
// bias [Cout] first, then
//  - by chunks: per thread, its chunk's V and M, scratch rows and a plane;
//  - in rounds: one round's V and M (Z for the weight gradient), then per thread scratch rows and two
//    planes (x's and gy's for the weight gradient).
// Per thread also the weight transform's gathered taps, 9 * max(Cin, Cout).
size_t align16(size_t n) { return (n + 15) / 16 * 16; }
struct Layout {
  size_t head, shared_tiles, per_thread, total;  // in floats
};
Layout layout_of(const Geom& g, const Plan& pl) {
  Layout l;
  const int64_t nb = pl.span();
  l.head = align16(static_cast<size_t>(kE * g.Cin * g.Cout)) + align16(static_cast<size_t>(g.Cout));
  l.shared_tiles = pl.rounds ? align16(tile_floats(g, nb)) : 0;
  l.per_thread = (pl.rounds ? 0 : align16(tile_floats(g, nb))) + align16(rows_floats(g, nb)) +
                 align16(plane_floats(g)) * 2 + align16(static_cast<size_t>(9 * std::max(g.Cin, g.Cout)));
  l.total = l.head + l.shared_tiles + pl.threads * l.per_thread;
  return l;
}
// One thread's part of the per-thread region: [tiles (by chunks)][rows][plane][plane2][taps].
struct ThreadPart {
  float *V, *rows, *plane, *plane2, *taps;
};
ThreadPart thread_part(const Geom& g, const Plan& pl, const Layout& l, float* per_thread, int tid) {
  const int64_t nb = pl.span();
  ThreadPart t;
  t.V = per_thread + tid * l.per_thread;
  t.rows = t.V + (pl.rounds ? 0 : align16(tile_floats(g, nb)));
  t.plane = t.rows + align16(rows_floats(g, nb));
  t.plane2 = t.plane + align16(plane_floats(g));
  t.taps = t.plane2 + align16(plane_floats(g));
  return t;
}

// gw for the (o, c) pairs [b0, b0 + nb) of OC from the summed products GW_e ([36][OC]): G^T GW G,
// vectorised across the pairs.
constexpr int64_t kBlock = 64;
RETORT_SIMD_CLONES void gw_block(const float* GW, int64_t OC, int64_t b0, int64_t nb, float* out) {
#pragma omp simd
  for (int64_t j = 0; j < nb; ++j) {
    double t[3][6];
    for (int l = 0; l < 6; ++l) {  // G^T down the columns
      double col[6], r[3];
      for (int k = 0; k < 6; ++k) col[k] = GW[(k * 6 + l) * OC + b0 + j];
      wino_gt(col, r);
      for (int i = 0; i < 3; ++i) t[i][l] = r[i];
    }
    for (int i = 0; i < 3; ++i) {  // then along the rows
      double r[3];
      wino_gt(t[i], r);
      for (int k = 0; k < 3; ++k) out[j * 9 + i * 3 + k] = static_cast<float>(r[k]);
    }
  }
}

}  // namespace

size_t set_winograd_chunk_bytes(size_t bytes) {
  return std::exchange(chunk_bytes(), std::max<size_t>(bytes, 1));
}

bool winograd_shape_ok(const Shape& ws, const Conv2dParams& p) {
  return ws[2] == 3 && ws[3] == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 &&
         p.groups == 1 && p.pad_h >= 0 && p.pad_h <= 2 && p.pad_w >= 0 && p.pad_w <= 2;
}

size_t winograd_workspace_bytes(DnnlConvDir dir, const Shape& xs, const Shape& ws, const Shape& ys,
                                const Conv2dParams& p) {
  const Geom g = geom_of(dir, xs, ws, ys, p);
  return layout_of(g, plan_of(g, dir == DnnlConvDir::BackwardWeight)).total * sizeof(float);
}

void winograd_conv2d(DnnlConvDir dir, const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dParams& p,
                     const float* in0, const float* in1, const float* bias, float* out, const DnnlEpilogue* epi,
                     float* workspace) {
  const Geom g = geom_of(dir, xs, ws, ys, p);
  const bool wgrad = dir == DnnlConvDir::BackwardWeight;
  const Plan pl = plan_of(g, wgrad);
  const Layout lay = layout_of(g, pl);
  float* W6 = workspace;  // U, or the summed GW for the weight gradient
  float* folded = workspace + align16(static_cast<size_t>(kE * g.Cin * g.Cout));
  float* tiles = workspace + lay.head;  // a round's V then M (or Z)
  float* per_thread = tiles + lay.shared_tiles;
  if (wgrad && g.N == 0) {  // no samples: no gradient
    std::fill(out, out + g.Cout * g.Cin * 9, 0.f);
    return;
  }
  float* taps = thread_part(g, pl, lay, per_thread, 0).taps;  // thread i's: + i * lay.per_thread
  bool relu = false;
  if (dir == DnnlConvDir::Forward) {
    // An eval batch norm (and a conv bias) fold into the weights and one bias: y = conv(x, w * s) + b * s + t.
    if (epi) {
      for (int64_t o = 0; o < g.Cout; ++o) folded[o] = (bias ? bias[o] * epi->scale[o] : 0.f) + epi->shift[o];
      bias = folded;
      relu = epi->relu;
    }
    transform_weights(in1, g.Cout, g.Cin, false, epi ? epi->scale : nullptr, W6, taps, lay.per_thread, pl.threads);
  } else if (dir == DnnlConvDir::BackwardData) {
    transform_weights(in1, ws[0], ws[1], true, nullptr, W6, taps, lay.per_thread, pl.threads);  // U[e][c][o]
    bias = nullptr;
  }
  if (pl.rounds) {
    // A round of samples at a time: the tiles transformed in parallel over channels, the 36 GEMMs in
    // parallel over e, then (forward) the outputs in parallel over channels. The weight gradient,
    // gw[o][c] = G^T (sum over tiles of Z_e[o][t] V_e[c][t]) G, adds each round's products into its GW_e
    // (no per-thread copies of the gradient).
    const int64_t R = std::min(pl.round(), g.N);
    const float* x = wgrad ? in1 : in0;
    for (int64_t n0 = 0; n0 < g.N; n0 += R) {
      const int64_t nb = std::min(R, g.N - n0), T = nb * g.P;
      float* V = tiles;
      float* M = V + kE * g.Cin * T;  // M [36][Cout][T], or Z for the weight gradient
#pragma omp parallel num_threads(pl.threads)
      {
        const ThreadPart t = thread_part(g, pl, lay, per_thread, omp_get_thread_num());
        const Scratch sx{t.rows, t.plane}, sy{t.rows, t.plane2};
        std::fill(t.plane, t.plane + plane_floats(g), 0.f);  // the borders stay zero
        std::fill(t.plane2, t.plane2 + plane_floats(g), 0.f);
#pragma omp for schedule(static)
        for (int64_t c = 0; c < g.Cin; ++c) transform_input(x, g, n0, nb, c, c + 1, V, sx);
        if (wgrad) {
#pragma omp for schedule(static)
          for (int64_t o = 0; o < g.Cout; ++o) transform_grad_output(in0, g, n0, nb, o, o + 1, M, sy);
#pragma omp for schedule(static)
          for (int64_t e = 0; e < kE; ++e) gemm_positions(e, e + 1, g.Cout, g.Cin, T, M, V, true, n0 == 0 ? 0.f : 1.f, W6);
        } else {
#pragma omp for schedule(static)
          for (int64_t e = 0; e < kE; ++e) gemm_positions(e, e + 1, g.Cout, T, g.Cin, W6, V, false, 0.f, M);
#pragma omp for schedule(static)
          for (int64_t o = 0; o < g.Cout; ++o) transform_output(g, n0, nb, o, o + 1, M, bias, relu, sx, out);
        }
      }
    }
    if (!wgrad) return;
    const int64_t OC = g.Cout * g.Cin;
#pragma omp parallel for schedule(static) if (OC > 256)
    for (int64_t b0 = 0; b0 < OC; b0 += kBlock) gw_block(W6, OC, b0, std::min(kBlock, OC - b0), out + b0 * 9);
    return;
  }
  // By chunks: each thread takes whole chunks of samples, their tiles transformed, multiplied and
  // transformed back by it alone.
#pragma omp parallel num_threads(pl.threads)
  {
    const ThreadPart t = thread_part(g, pl, lay, per_thread, omp_get_thread_num());
    float* V = t.V;
    float* M = V + kE * g.Cin * pl.nb * g.P;
    const Scratch s{t.rows, t.plane};
    std::fill(t.plane, t.plane + plane_floats(g), 0.f);  // the border stays zero
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < pl.chunks; ++chunk) {
      const int64_t n0 = chunk * pl.nb, nb = std::min(pl.nb, g.N - n0), T = nb * g.P;
      transform_input(in0, g, n0, nb, 0, g.Cin, V, s);
      gemm_positions(0, kE, g.Cout, T, g.Cin, W6, V, false, 0.f, M);
      transform_output(g, n0, nb, 0, g.Cout, M, bias, relu, s, out);
    }
  }
}

}  // namespace retort::cpu
