// Batch-norm micro-benchmark: the CPU backend's training forward (with fused ReLU) and backward on the
// [N, C, H*W] shapes of mobile_half and ShuffleV2, whose small planes (2x2 to 16x16) make a per-row
// sweep short. Median of 20 after 3 warm-ups, per shape, with the effective bandwidth.
// Built on demand (not part of `all`):  cmake --build build --target bench_bn_micro
//   OMP_NUM_THREADS=2 build/bench/bench_bn_micro
#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "engine/backend.h"
#include "engine/tensor.h"
#include "bench/micro_timer.h"

int main() {
  struct S {
    int64_t n, c, hw;
  };
  const std::vector<S> shapes = {{64, 16, 1024}, {64, 48, 256}, {64, 72, 256}, {64, 12, 256}, {64, 96, 64},
                                 {64, 16, 64},   {64, 192, 16}, {64, 288, 16}, {64, 48, 16},  {64, 480, 4},
                                 {64, 80, 4},    {64, 1280, 4}, {128, 288, 16}, {128, 480, 4}};
  retort::Generator gen(1);
  double tf_total = 0, tb_total = 0;
  std::printf("%-18s %9s %9s %9s %9s\n", "shape [N,C,S]", "fwd ms", "fwd GB/s", "bwd ms", "bwd GB/s");
  for (const S& s : shapes) {
    const int64_t h = s.hw == 1024 ? 32 : s.hw == 256 ? 16 : s.hw == 64 ? 8 : s.hw == 16 ? 4 : 2;
    auto x = retort::Tensor::randn({s.n, s.c, h, h}, gen);
    auto w = retort::Tensor::randn({s.c}, gen), b = retort::Tensor::randn({s.c}, gen);
    auto y = retort::Tensor::empty(x.shape()), gy = retort::Tensor::randn(x.shape(), gen);
    auto gx = retort::Tensor::empty(x.shape());
    auto m = retort::Tensor::empty({s.c}), is = retort::Tensor::empty({s.c});
    auto gw = retort::Tensor::empty({s.c}), gb = retort::Tensor::empty({s.c});
    auto& be = retort::backend_for(x);
    const double tf = micro_time_ms([&] { be.batchnorm_forward_train(x, w, b, 1e-5, true, y, m, is); });
    const double tb = micro_time_ms([&] { be.batchnorm_backward(gy, x, w, m, is, true, y, gx, gw, gb); });
    const double bytes = static_cast<double>(x.numel()) * 4;
    tf_total += tf;
    tb_total += tb;
    std::printf("[%lld,%lld,%lld]%*s %9.3f %9.1f %9.3f %9.1f\n", (long long)s.n, (long long)s.c, (long long)s.hw, 4,
                "", tf, 4 * bytes / tf * 1e-6, tb, 5 * bytes / tb * 1e-6);
  }
  std::printf("total fwd %.3f ms, bwd %.3f ms\n", tf_total, tb_total);
}
