// Engine functions against PyTorch: tests/fixtures/golden_ops.safetensors holds inputs, outputs and
// input gradients (for a fixed upstream gradient) computed by tools/gen_golden_ops.py. Each case here
// recomputes them with Retort in f32 and compares per tensor.
#include <gtest/gtest.h>

#include <functional>

#include "engine/functions.h"
#include "tests/common/golden.h"

using namespace retort;
using retort::testing::close_to;
using retort::testing::GoldenFile;

namespace {

const GoldenFile& golden() {
  static const GoldenFile g("golden_ops.safetensors");
  return g;
}

void check_case(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                double atol = 1e-5, double rtol = 1e-4) {
  retort::testing::check_golden_case(golden(), name, fn, std::nullopt, atol, rtol);
}

}  // namespace

TEST(GoldenOps, Conv2d) {
  check_case("conv2d_basic", [](const auto& in) { return conv2d(in[0], in[1], in[2], 1, 1); });
  check_case("conv2d_stride_dil", [](const auto& in) { return conv2d(in[0], in[1], Tensor(), 2, 2, 2); });
  check_case("conv2d_groups", [](const auto& in) { return conv2d(in[0], in[1], in[2], 1, 1, 1, 2); });
  check_case("conv2d_depthwise", [](const auto& in) { return conv2d(in[0], in[1], Tensor(), 2, 1, 1, 8); });
  check_case("conv2d_pointwise", [](const auto& in) { return conv2d(in[0], in[1]); });
}

TEST(GoldenOps, BatchNorm) {
  check_case("batch_norm_train",
             [](const auto& in) { return batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true); });
  check_case("batch_norm_eval",
             [](const auto& in) { return batch_norm(in[0], in[3], in[4], in[1], in[2], false); });
}

TEST(GoldenOps, PoolingAndResampling) {
  check_case("max_pool2d", [](const auto& in) { return max_pool2d(in[0], 3, 2, 1); });
  check_case("avg_pool2d_pad", [](const auto& in) { return avg_pool2d(in[0], 3, 2, 1); });
  check_case("avg_pool2d_nopad_count", [](const auto& in) {
    Pool2dParams p{3, 3, 2, 2, 1, 1, false};
    return avg_pool2d(in[0], p);
  });
  check_case("adaptive_avg_pool2d", [](const auto& in) { return adaptive_avg_pool2d(in[0], 3, 2); });
  check_case("interpolate_nearest", [](const auto& in) { return interpolate_nearest(in[0], 7, 10); });
  check_case("affine_grid", [](const auto& in) { return affine_grid(in[0], 5, 6); });
  check_case("grid_sample", [](const auto& in) { return grid_sample(in[0], in[1]); }, 1e-5, 1e-3);
}

TEST(GoldenOps, SoftmaxAndLosses) {
  check_case("softmax_dim1", [](const auto& in) { return softmax(in[0], 1); });
  check_case("log_softmax_last", [](const auto& in) { return log_softmax(in[0], -1); });
  check_case("cross_entropy", [](const auto& in) { return cross_entropy(in[0], in[1]); });
  check_case("cross_entropy_ls", [](const auto& in) { return cross_entropy(in[0], in[1], 0.1); });
  check_case("kl_div_batchmean", [](const auto& in) { return kl_div(log_softmax(in[0], 1), softmax(in[1], 1)); });
  check_case("mse_loss", [](const auto& in) { return mse_loss(in[0], in[1]); });
  check_case("smooth_l1_loss", [](const auto& in) { return smooth_l1_loss(in[0], in[1]); });
  check_case("smooth_l1_loss_beta0_5", [](const auto& in) { return smooth_l1_loss(in[0], in[1], 0.5); });
  check_case("leaky_relu_0_1", [](const auto& in) { return leaky_relu(in[0], 0.1); });
}

TEST(GoldenOps, ReductionsAndShapes) {
  check_case("var_unbiased", [](const auto& in) { return var(in[0], {0, 2}, true, true); });
  check_case("std_biased", [](const auto& in) { return stddev(in[0], {1}, false); });
  check_case("linear", [](const auto& in) { return linear(in[0], in[1], in[2]); });
  check_case("matmul_batched", [](const auto& in) { return matmul(in[0], in[1]); });
  check_case("pad", [](const auto& in) { return pad(in[0], {1, 2, 0, 1}, 0.5); });
}

// eigh against torch.linalg.eigh (with our sign convention applied on the torch side): values and
// vectors with the gradient through both, and through the top eigenvector alone.
TEST(GoldenOps, Eigh) {
  check_case("eigh", [](const auto& in) {
    const EighResult e = eigh(in[0]);
    return cat({unsqueeze(e.values, 1), e.vectors}, 1);
  });
  check_case("eigh_top_vector", [](const auto& in) { return slice(eigh(in[0]).vectors, 2, 5, 6); });
}
