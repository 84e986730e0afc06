// Gradchecks for affine_grid and grid_sample. Bilinear interpolation has kinks wherever a sample
// position crosses an integer pixel coordinate (including the padding edges -1 and W), so every
// grid here is kept a margin away from them; finite differences across a kink are meaningless.
#include <cmath>

#include "engine/functions/sample.h"
#include "engine/gradcheck.h"

namespace retort {

namespace {
using Inputs = std::vector<Tensor>;

// align_corners=false: grid value -> pixel coordinate along an axis of `size` pixels, and back.
double to_pixel(double g, int64_t size) { return ((g + 1.0) * static_cast<double>(size) - 1.0) / 2.0; }
double from_pixel(double p, int64_t size) { return (2.0 * p + 1.0) / static_cast<double>(size) - 1.0; }
double distance_to_integer(double p) { return std::abs(p - std::round(p)); }

// Grid values uniform in [-1.1, 1.1] (some samples partly or fully in the zero padding), each moved
// 0.1 pixel away from an integer coordinate when it falls within 0.05 of one.
Tensor kink_free_grid(int64_t n, int64_t oh, int64_t ow, int64_t H, int64_t W, Generator& gen) {
  std::vector<double> v(static_cast<size_t>(n * oh * ow * 2));
  for (size_t i = 0; i < v.size(); ++i) {
    const int64_t size = i % 2 == 0 ? W : H;  // (x, y) pairs
    double p = to_pixel(gen.uniform(-1.1, 1.1), size);
    const double frac = p - std::floor(p);
    if (frac < 0.05) p += 0.1;
    else if (frac > 0.95) p -= 0.1;
    v[i] = from_pixel(p, size);
  }
  return Tensor::from_vector(v, {n, oh, ow, 2}, DType::F64).set_requires_grad();
}

// theta = identity + small noise, redrawn until every sample position of the (oh, ow) grid lies at
// least `margin` pixels from an integer coordinate of the H x W input.
Tensor kink_free_theta(int64_t oh, int64_t ow, int64_t H, int64_t W, double margin, Generator& gen) {
  for (int attempt = 0; attempt < 10000; ++attempt) {
    std::vector<double> t = {1, 0, 0, 0, 1, 0};
    for (double& x : t) x += gen.uniform(-0.15, 0.15);
    bool ok = true;
    for (int64_t i = 0; i < oh && ok; ++i)
      for (int64_t j = 0; j < ow && ok; ++j) {
        const double bx = from_pixel(static_cast<double>(j), ow), by = from_pixel(static_cast<double>(i), oh);
        const double gx = t[0] * bx + t[1] * by + t[2], gy = t[3] * bx + t[4] * by + t[5];
        ok = distance_to_integer(to_pixel(gx, W)) >= margin && distance_to_integer(to_pixel(gy, H)) >= margin;
      }
    if (ok) return Tensor::from_vector(t, {1, 2, 3}, DType::F64).set_requires_grad();
  }
  RETORT_FAIL("kink_free_theta: no theta found with every sample ", margin, " pixels from the kinks");
}
}  // namespace

void add_sample_checks(std::vector<GradcheckCase>& out) {
  out.push_back({"affine_grid.batch2", "affine_grid", [](Generator& g) { return Inputs{gc_randn({2, 2, 3}, g)}; },
                 [](const Inputs& in) { return affine_grid(in[0], 3, 4); }});
  out.push_back({"grid_sample.x_and_grid", "grid_sample",
                 [](Generator& g) { return Inputs{gc_randn({2, 2, 4, 5}, g), kink_free_grid(2, 3, 3, 4, 5, g)}; },
                 [](const Inputs& in) { return grid_sample(in[0], in[1]); }});
  // The spatial-transformer composition, differentiated through to theta.
  out.push_back({"grid_sample.through_affine_grid", "grid_sample",
                 [](Generator& g) { return Inputs{gc_randn({1, 2, 5, 5}, g), kink_free_theta(4, 4, 5, 5, 0.02, g)}; },
                 [](const Inputs& in) { return grid_sample(in[0], affine_grid(in[1], 4, 4)); }});
}

}  // namespace retort
