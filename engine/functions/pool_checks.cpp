// Gradchecks for pooling and nearest resizing. Max pool inputs come from gc_separated: with no ties a
// finite-difference step never moves the argmax, so the numeric gradient is well defined.
#include "engine/functions/pool.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

GradcheckCase pool_case(std::string name, std::string function, Shape shape, bool separated, GradcheckFn fn) {
  return {std::move(name), std::move(function),
          [shape, separated](Generator& g) { return Inputs{separated ? gc_separated(shape, g) : gc_randn(shape, g)}; },
          std::move(fn)};
}

Pool2dParams avg_params(int64_t kernel, int64_t stride, int64_t pad, bool count_include_pad) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = kernel;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.count_include_pad = count_include_pad;
  return p;
}
}  // namespace

void add_pool_checks(std::vector<GradcheckCase>& out) {
  out.push_back(pool_case("max_pool2d.k2s2", "max_pool2d", {2, 2, 4, 4}, true,
                          [](const Inputs& in) { return max_pool2d(in[0], 2, 2); }));
  out.push_back(pool_case("max_pool2d.k3s2p1", "max_pool2d", {1, 2, 5, 6}, true,
                          [](const Inputs& in) { return max_pool2d(in[0], 3, 2, 1); }));
  out.push_back(pool_case("avg_pool2d.k2s2", "avg_pool2d", {2, 2, 4, 5}, false,
                          [](const Inputs& in) { return avg_pool2d(in[0], 2); }));
  out.push_back(pool_case("avg_pool2d.pad_include", "avg_pool2d", {1, 2, 5, 5}, false,
                          [](const Inputs& in) { return avg_pool2d(in[0], avg_params(3, 2, 1, true)); }));
  out.push_back(pool_case("avg_pool2d.pad_exclude", "avg_pool2d", {1, 2, 5, 5}, false,
                          [](const Inputs& in) { return avg_pool2d(in[0], avg_params(3, 2, 1, false)); }));
  out.push_back(pool_case("adaptive_avg_pool2d.to_1x1", "adaptive_avg_pool2d", {2, 3, 3, 4}, false,
                          [](const Inputs& in) { return adaptive_avg_pool2d(in[0], 1, 1); }));
  out.push_back(pool_case("adaptive_avg_pool2d.5x5_to_3x3", "adaptive_avg_pool2d", {1, 2, 5, 5}, false,
                          [](const Inputs& in) { return adaptive_avg_pool2d(in[0], 3, 3); }));
  out.push_back(pool_case("interpolate_nearest.up_x2", "interpolate_nearest", {1, 2, 3, 3}, false,
                          [](const Inputs& in) { return interpolate_nearest(in[0], 6, 6); }));
  out.push_back(pool_case("interpolate_nearest.3x3_to_5x4", "interpolate_nearest", {1, 2, 3, 3}, false,
                          [](const Inputs& in) { return interpolate_nearest(in[0], 5, 4); }));
  out.push_back(pool_case("interpolate_nearest.down", "interpolate_nearest", {1, 2, 5, 6}, false,
                          [](const Inputs& in) { return interpolate_nearest(in[0], 3, 2); }));
}

}  // namespace retort
