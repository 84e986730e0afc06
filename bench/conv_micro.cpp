// Convolution micro-benchmark: Retort's CPU conv2d (whatever the backend runs for F32: oneDNN with
// reorders by default, im2col + OpenBLAS with RETORT_CPU_CONV=im2col) against oneDNN called directly
// with plain NCHW memory and with the blocked layouts it picks itself (format any, no reorders
// counted). Forward, backward-data and backward-weights, median of 10 after 2 warm-ups, per shape.
// Built on demand (not part of `all`):  cmake --build build --target bench_conv_micro
//   OMP_NUM_THREADS=2 build/bench/bench_conv_micro [--winograd]
// Results: bench/results/2026-11-22_conv_micro_intel-xeon-2c.txt.
#include <dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <vector>
#include <algorithm>
#include <functional>
#include <string>
#include "engine/tensor.h"
#include "engine/backend.h"
using namespace dnnl;
using clk = std::chrono::steady_clock;
double timeit(std::function<void()> f, int reps = 10) {
  f(); f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) { auto a = clk::now(); f(); t.push_back(std::chrono::duration<double>(clk::now() - a).count()); }
  std::sort(t.begin(), t.end()); return t[reps / 2] * 1e3;
}
int main(int argc, char** argv) {
  // --winograd: ours with F32 direct kernels against ours with Winograd (retort::set_cpu_conv_winograd).
  const bool winograd = argc > 1 && std::string(argv[1]) == "--winograd";
  engine eng(engine::kind::cpu, 0); stream s(eng);
  struct S { int N, C, H, O, k, st; };
  std::vector<S> shapes = {{64,16,32,16,3,1},{64,32,16,32,3,1},{64,64,8,64,3,1},{64,64,32,64,3,1},{64,128,16,128,3,1},{64,256,8,256,3,1},{64,64,32,128,3,2},{64,128,16,128,3,1}};
  retort::Generator gen(1);
  for (auto sh : shapes) {
    int OH = (sh.H + 2 - sh.k) / sh.st + 1;
    double flops = 2.0 * sh.N * sh.O * OH * OH * sh.C * sh.k * sh.k;
    memory::dims xd{sh.N, sh.C, sh.H, sh.H}, wd{sh.O, sh.C, sh.k, sh.k}, yd{sh.N, sh.O, OH, OH}, st{sh.st, sh.st}, pad{1, 1};
    // ours
    auto x = retort::Tensor::randn({sh.N, sh.C, sh.H, sh.H}, gen), w = retort::Tensor::randn({sh.O, sh.C, sh.k, sh.k}, gen);
    auto y = retort::Tensor::empty({sh.N, sh.O, OH, OH}), gx = retort::Tensor::empty(x.shape()), gw = retort::Tensor::empty(w.shape());
    retort::Conv2dParams p; p.stride_h = p.stride_w = sh.st; p.pad_h = p.pad_w = 1;
    auto& be = retort::backend_for(x);
    double of = timeit([&] { be.conv2d_forward(x, w, retort::Tensor(), p, y); });
    double ob = timeit([&] { be.conv2d_backward_input(y, w, p, gx); });
    double ow = timeit([&] { be.conv2d_backward_weight(y, x, p, gw); });
    if (winograd) {  // the same calls with Winograd on (3x3 stride 1 only; others run the direct kernel)
      retort::set_cpu_conv_winograd(true);
      double wf = timeit([&] { be.conv2d_forward(x, w, retort::Tensor(), p, y); });
      double wb = timeit([&] { be.conv2d_backward_input(y, w, p, gx); });
      double ww = timeit([&] { be.conv2d_backward_weight(y, x, p, gw); });
      retort::set_cpu_conv_winograd(false);
      printf("N%d C%d H%d O%d k%d s%d | ours f %.2f bd %.2f bw %.2f ms | winograd f %.2f bd %.2f bw %.2f ms | speed-up %.2fx\n",
             sh.N, sh.C, sh.H, sh.O, sh.k, sh.st, of, ob, ow, wf, wb, ww, (of + ob + ow) / (wf + wb + ww));
      continue;
    }
    for (int fmt : {0, 2}) {  // plain NCHW, blocked (nhwc f32 runs oneDNN 2.6's reference kernel: 100x slower)
      auto tag_a = fmt == 0 ? memory::format_tag::nchw : fmt == 1 ? memory::format_tag::nhwc : memory::format_tag::any;
      auto wtag = fmt == 2 ? memory::format_tag::any : memory::format_tag::oihw;
      memory::desc xm(xd, memory::data_type::f32, tag_a), wm(wd, memory::data_type::f32, wtag), ym(yd, memory::data_type::f32, tag_a);
      auto fpd = convolution_forward::primitive_desc({prop_kind::forward_training, algorithm::convolution_direct, xm, wm, ym, st, pad, pad}, eng);
      auto bdpd = convolution_backward_data::primitive_desc({algorithm::convolution_direct, xm, wm, ym, st, pad, pad}, eng, fpd);
      auto bwpd = convolution_backward_weights::primitive_desc({algorithm::convolution_direct, xm, wm, ym, st, pad, pad}, eng, fpd);
      memory X(fpd.src_desc(), eng), W(fpd.weights_desc(), eng), Y(fpd.dst_desc(), eng), GX(bdpd.diff_src_desc(), eng), GW(bwpd.diff_weights_desc(), eng), GY(bdpd.diff_dst_desc(), eng), GYw(bwpd.diff_dst_desc(), eng), Xw(bwpd.src_desc(), eng);
      convolution_forward cf(fpd); convolution_backward_data cbd(bdpd); convolution_backward_weights cbw(bwpd);
      double df = timeit([&] { cf.execute(s, {{DNNL_ARG_SRC, X}, {DNNL_ARG_WEIGHTS, W}, {DNNL_ARG_DST, Y}}); s.wait(); });
      double db = timeit([&] { cbd.execute(s, {{DNNL_ARG_DIFF_DST, GY}, {DNNL_ARG_WEIGHTS, W}, {DNNL_ARG_DIFF_SRC, GX}}); s.wait(); });
      double dw = timeit([&] { cbw.execute(s, {{DNNL_ARG_DIFF_DST, GYw}, {DNNL_ARG_SRC, Xw}, {DNNL_ARG_DIFF_WEIGHTS, GW}}); s.wait(); });
      if (fmt == 0) printf("N%d C%d H%d O%d k%d s%d | %.1f GFLOP/ours f %.2f bd %.2f bw %.2f ms\n", sh.N, sh.C, sh.H, sh.O, sh.k, sh.st, flops/1e9, of, ob, ow);
      printf("   dnnl %s f %.2f bd %.2f bw %.2f ms (%s)  GF/s f %.0f\n", fmt==0?"nchw":fmt==1?"nhwc":"any ", df, db, dw, fpd.impl_info_str(), flops/df/1e6);
    }
  }
}
