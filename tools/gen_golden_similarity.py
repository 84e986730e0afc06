"""Golden fixtures for distill/similarity.h: minibatch linear CKA (Nguyen, Raghu & Kornblith 2021) with
the unbiased HSIC estimator (Song et al. 2012), written the way the public reference implementations
write it (matrix products, not the row sums Retort uses). tests/distill/test_similarity.cpp recomputes
every case.

Regenerate (Debian's python3-torch):
  cd tools && /usr/bin/python3 gen_golden_similarity.py ../tests/fixtures/golden_similarity.safetensors

Stored (float64): for each case C and batch b, C/x<b> and C/y<b> (features of the two networks, any rank,
batch first), C/hsic_xy<b>, C/hsic_xx<b>, C/hsic_yy<b> (the batch's HSIC_1 values) and C/cka (the
minibatch CKA over all the case's batches)."""
import sys

import torch

from golden import save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)


def unbiased_hsic(K, L):
    n = K.shape[0]
    K = K.clone()
    L = L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    ones = torch.ones(n, 1)
    t = torch.trace(K @ L)
    t = t + (ones.T @ K @ ones @ ones.T @ L @ ones).squeeze() / ((n - 1) * (n - 2))
    t = t - (ones.T @ K @ L @ ones).squeeze() * 2 / (n - 2)
    return t / (n * (n - 3))


def gram(x):
    x = x.reshape(x.shape[0], -1)
    return x @ x.T


tensors = {}


def case(name, batches):
    xy = xx = yy = 0.0
    for b, (x, y) in enumerate(batches):
        K, L = gram(x), gram(y)
        h = unbiased_hsic(K, L), unbiased_hsic(K, K), unbiased_hsic(L, L)
        tensors[f"{name}/x{b}"] = x
        tensors[f"{name}/y{b}"] = y
        for key, v in zip(("hsic_xy", "hsic_xx", "hsic_yy"), h):
            tensors[f"{name}/{key}{b}"] = v.reshape(1)
        xy, xx, yy = xy + h[0], xx + h[1], yy + h[2]
    tensors[f"{name}/cka"] = (xy / torch.sqrt(xx * yy)).reshape(1)


# Related features: y is a random linear map of relu(x) plus noise (CKA well inside (0, 1)); feature
# maps against vectors; three batches of unequal size, the last small (n = 5).
batches = []
w = torch.randn(4 * 3 * 3, 10)
for n in (16, 12, 5):
    x = torch.randn(n, 4, 3, 3)
    y = torch.relu(x).reshape(n, -1) @ w + 0.5 * torch.randn(n, 10)
    batches.append((x, y))
case("related", batches)

# Unrelated features with a nonzero mean (the estimator centres them): CKA near 0.
case("unrelated", [(torch.randn(32, 6) + 3.0, torch.randn(32, 2, 2, 2) - 1.0) for _ in range(2)])

# Low-rank features: y depends on one direction of x only.
x = torch.randn(24, 8)
case("rank_one", [(x, (x[:, :1] * torch.randn(1, 5)) + 0.1 * torch.randn(24, 5))])

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_similarity.py", "seed": 0})
