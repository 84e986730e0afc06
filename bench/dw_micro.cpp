// Depthwise-convolution micro-benchmark: the direct segment kernels (engine/cpu/depthwise.cpp) against
// oneDNN's depthwise kernels with their reorders, on the 3x3 depthwise shapes of mobile_half and
// ShuffleV2 at batch 64; forward, backward-data and backward-weight, median of 20 after 3 warm-ups,
// and the largest difference between the two.
// Built on demand (not part of `all`):  cmake --build build --target bench_dw_micro
//   OMP_NUM_THREADS=2 build/bench/bench_dw_micro
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/tensor.h"
#include "bench/micro_timer.h"

static double max_diff(const retort::Tensor& a, const retort::Tensor& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

int main() {
  using retort::cpu::ConvImpl;
  struct S {
    int64_t c, h, stride;
  };
  const std::vector<S> shapes = {{16, 16, 1}, {48, 16, 1}, {72, 16, 1}, {72, 16, 2}, {96, 8, 1}, {96, 8, 2},
                                 {192, 4, 1}, {288, 4, 1}, {288, 4, 2}, {480, 2, 1}, {116, 8, 1}, {232, 4, 1}};
  retort::Generator gen(1);
  double tot[2][3] = {};
  std::printf("%-26s %8s %8s %8s %8s %8s %8s %9s\n", "x (3x3 depthwise)", "fwd dnl", "fwd dir", "bwd-d dnl",
              "bwd-d dir", "bwd-w dnl", "bwd-w dir", "max diff");
  for (const S& s : shapes) {
    const int64_t n = 64, oh = (s.h - 1) / s.stride + 1;
    auto x = retort::Tensor::randn({n, s.c, s.h, s.h}, gen), w = retort::Tensor::randn({s.c, 1, 3, 3}, gen);
    auto gy = retort::Tensor::randn({n, s.c, oh, oh}, gen);
    retort::Conv2dParams p;
    p.stride_h = p.stride_w = s.stride;
    p.pad_h = p.pad_w = 1;
    p.groups = s.c;
    auto& be = retort::backend_for(x);
    double t[2][3], diff = 0;
    retort::Tensor out[2][3];
    for (int k = 0; k < 2; ++k) {
      retort::cpu::set_conv_impl(k == 0 ? ConvImpl::Dnnl : ConvImpl::Auto);
      auto y = retort::Tensor::empty({n, s.c, oh, oh}), gx = retort::Tensor::empty(x.shape()),
           gw = retort::Tensor::empty(w.shape());
      t[k][0] = micro_time_ms([&] { be.conv2d_forward(x, w, retort::Tensor(), p, y); });
      t[k][1] = micro_time_ms([&] { be.conv2d_backward_input(gy, w, p, gx); });
      t[k][2] = micro_time_ms([&] { be.conv2d_backward_weight(gy, x, p, gw); });
      out[k][0] = y;
      out[k][1] = gx;
      out[k][2] = gw;
      for (int j = 0; j < 3; ++j) tot[k][j] += t[k][j];
    }
    for (int j = 0; j < 3; ++j) diff = std::max(diff, max_diff(out[0][j], out[1][j]));
    std::printf("[64,%lld,%lld,%lld] s%lld %*s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %9.2e\n", (long long)s.c,
                (long long)s.h, (long long)s.h, (long long)s.stride, 4, "", t[0][0], t[1][0], t[0][1], t[1][1],
                t[0][2], t[1][2], diff);
  }
  std::printf("total ms: fwd %.2f -> %.2f, bwd-data %.2f -> %.2f, bwd-weight %.2f -> %.2f\n", tot[0][0], tot[1][0],
              tot[0][1], tot[1][1], tot[0][2], tot[1][2]);
}
