// Spatial transformers (see sample.h), PyTorch's align_corners=false convention throughout: pixel j
// of a size-W axis has its centre at x = (2j + 1) / W - 1, so [-1, 1] spans the pixels' outer edges.
// affine_grid is one batched matmul against a constant base grid; grid_sample runs the backend's
// bilinear kernels.
#include "engine/functions/sample.h"

#include "engine/functions/common.h"
#include "engine/functions/linalg.h"
#include "engine/functions/shape.h"

namespace retort {

Tensor affine_grid(const Tensor& theta, int64_t H, int64_t W) {
  fn::check_float("affine_grid", theta, "theta");
  RETORT_CHECK(theta.dim() == 3 && theta.shape()[1] == 2 && theta.shape()[2] == 3,
               "affine_grid: theta must be [N, 2, 3], got ", theta.meta_str());
  RETORT_CHECK(H > 0 && W > 0, "affine_grid: output size must be positive, got H=", H, ", W=", W);
  const int64_t n = theta.shape()[0];
  // Rows (x_j, y_i, 1) in output order (i outer, j inner).
  std::vector<double> base(static_cast<size_t>(H * W * 3));
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < W; ++j) {
      double* row = &base[static_cast<size_t>((i * W + j) * 3)];
      row[0] = static_cast<double>(2 * j + 1) / static_cast<double>(W) - 1.0;
      row[1] = static_cast<double>(2 * i + 1) / static_cast<double>(H) - 1.0;
      row[2] = 1.0;
    }
  Tensor base_t = Tensor::from_vector(base, {H * W, 3}, theta.dtype()).to(theta.device());
  Tensor out;
  {
    NoGradGuard ng;
    // grid[n] = base @ theta[n]^T; the 2-D base is shared across the batch without copies.
    out = reshape(matmul(base_t, transpose(theta, 1, 2)), {n, H, W, 2});
  }
  return record(out, "AffineGridBackward", {theta}, [b = base_t, n, H, W](const Tensor& g, const Node&) {
    // dtheta[n] = g[n]^T @ base, with g[n] viewed as [H*W, 2].
    return std::vector<Tensor>{matmul(transpose(g.view_as_shape({n, H * W, 2}), 1, 2), b)};
  });
}

Tensor grid_sample(const Tensor& x, const Tensor& grid) {
  fn::check_compatible("grid_sample", x, grid, "input", "grid");
  RETORT_CHECK(x.dim() == 4, "grid_sample: input must be 4-D [N, C, H, W], got ", x.meta_str(), " (grid ",
               grid.meta_str(), ")");
  RETORT_CHECK(grid.dim() == 4 && grid.shape()[3] == 2 && grid.shape()[0] == x.shape()[0],
               "grid_sample: grid must be [N, OH, OW, 2] with the input's N, got input ", x.meta_str(), " and grid ",
               grid.meta_str());
  const Shape& s = x.shape();
  Tensor y = Tensor::empty({s[0], s[1], grid.shape()[1], grid.shape()[2]}, x.dtype(), x.device());
  backend_for(x).grid_sample_forward(x, grid, y);
  return record(y, "GridSampleBackward", {x, grid},
                [x = saved(x), grid = saved(grid)](const Tensor& g, const Node& node) {
                  Tensor gx = node.needs_grad(0) ? Tensor::empty_like(x) : Tensor();
                  Tensor ggrid = node.needs_grad(1) ? Tensor::empty_like(grid) : Tensor();
                  backend_for(x).grid_sample_backward(g, x, grid, gx, ggrid);
                  return std::vector<Tensor>{gx, ggrid};
                });
}

}  // namespace retort
