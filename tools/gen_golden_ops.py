"""Golden fixtures for the engine's functions: inputs, outputs and input gradients computed by
PyTorch for a fixed upstream gradient. tests/engine/test_golden_ops.cpp recomputes each case with
Retort and compares per tensor.

Regenerate (Debian's python3-torch):  /usr/bin/python3 tools/gen_golden_ops.py tests/fixtures/golden_ops.safetensors

Each case NAME stores NAME/in0, NAME/in1, ... (inputs), NAME/out (output) and NAME/grad_in0, ...
(gradient of sum(out * NAME/upstream) with respect to each float input)."""
import sys

import torch
import torch.nn.functional as F

from golden import record_case, save_safetensors

torch.manual_seed(0)
tensors = {}


def case(name, fn, *inputs, grad_inputs=None):
    record_case(tensors, name, fn, inputs,
                lambda i, x: x.is_floating_point() and (grad_inputs is None or i in grad_inputs))


r = torch.randn
# convolution
case("conv2d_basic", lambda x, w, b: F.conv2d(x, w, b, padding=1), r(2, 3, 7, 7), r(4, 3, 3, 3), r(4))
case("conv2d_stride_dil", lambda x, w: F.conv2d(x, w, stride=2, padding=2, dilation=2), r(2, 4, 9, 8), r(6, 4, 3, 3))
case("conv2d_groups", lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1, groups=2), r(2, 4, 6, 6), r(6, 2, 3, 3), r(6))
case("conv2d_depthwise", lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=8), r(2, 8, 8, 8), r(8, 1, 3, 3))
case("conv2d_pointwise", lambda x, w: F.conv2d(x, w), r(2, 8, 5, 5), r(16, 8, 1, 1))
# batch norm (training: batch statistics; eval: running statistics)
case("batch_norm_train", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5),
     r(4, 3, 5, 5), r(3), r(3))
case("batch_norm_eval", lambda x, w, b, m, v: F.batch_norm(x, m, v, w, b, training=False, eps=1e-5),
     r(4, 3, 5, 5), r(3), r(3), r(3), torch.rand(3) + 0.5, grad_inputs={0, 1, 2})
# pooling and resampling
case("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1), r(2, 3, 9, 9))
case("avg_pool2d_pad", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True), r(2, 3, 8, 8))
case("avg_pool2d_nopad_count", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), r(2, 3, 8, 8))
case("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), r(2, 3, 7, 5))
case("interpolate_nearest", lambda x: F.interpolate(x, size=(7, 10), mode="nearest"), r(2, 3, 5, 4))
theta = torch.tensor([[[0.9, 0.1, 0.05], [-0.1, 1.1, -0.02]], [[1.0, 0.0, 0.1], [0.0, 0.8, 0.0]]])
case("affine_grid", lambda t: F.affine_grid(t, (2, 3, 5, 6), align_corners=False), theta)
case("grid_sample", lambda x, g: F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False),
     r(2, 3, 6, 5), torch.rand(2, 4, 7, 2) * 2.2 - 1.1)
# softmax family and losses
case("softmax_dim1", lambda x: F.softmax(x, 1), r(3, 5, 2))
case("log_softmax_last", lambda x: F.log_softmax(x, -1), r(4, 7) * 3)
targets = torch.tensor([3, 0, 9, 4, 4])
case("cross_entropy", lambda x, t: F.cross_entropy(x, t), r(5, 10), targets)
case("cross_entropy_ls", lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), r(5, 10), targets)
case("kl_div_batchmean", lambda a, b: F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction="batchmean"),
     r(4, 6), r(4, 6))
case("mse_loss", lambda a, b: F.mse_loss(a, b), r(3, 4), r(3, 4))
# reductions and shapes where PyTorch semantics matter
case("var_unbiased", lambda x: torch.var(x, dim=(0, 2), unbiased=True, keepdim=True), r(3, 4, 5))
case("std_biased", lambda x: torch.std(x, dim=1, unbiased=False), r(3, 4, 5))
case("linear", lambda x, w, b: F.linear(x, w, b), r(2, 3, 5), r(4, 5), r(4))
case("matmul_batched", lambda a, b: torch.matmul(a, b), r(2, 1, 3, 4), r(3, 4, 2))
case("pad", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), r(2, 2, 3, 3))
# appended later (new cases go last so the draws above stay as they were)
case("smooth_l1_loss", lambda a, b: F.smooth_l1_loss(a, b), r(4, 5) * 1.5, r(4, 5))
case("smooth_l1_loss_beta0_5", lambda a, b: F.smooth_l1_loss(a, b, beta=0.5), r(3, 6), r(3, 6))
case("leaky_relu_0_1", lambda x: F.leaky_relu(x, 0.1), r(3, 7))


def eigh_signed(x):
    """torch.linalg.eigh of (x + x^T) / 2 with Retort's sign convention: each eigenvector's component
    of largest magnitude is positive (the sign is piecewise constant, so it carries no gradient)."""
    w, v = torch.linalg.eigh((x + x.transpose(-1, -2)) / 2)
    sign = torch.sign(torch.gather(v, -2, v.abs().argmax(dim=-2, keepdim=True))).detach()
    return w, v * sign


case("eigh", lambda x: torch.cat([eigh_signed(x)[0].unsqueeze(-2), eigh_signed(x)[1]], -2), r(3, 5, 5))
case("eigh_top_vector", lambda x: eigh_signed(x)[1][..., -1:], r(2, 6, 6))

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_ops.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
