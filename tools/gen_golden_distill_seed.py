"""Golden fixtures for the seed methods' nodes and modules (distill/nodes/sokd.h, distill/nodes/stage.h,
distill/connectors.h), written from their definitions in methods.md §3.1-3.2 with PyTorch and
differentiated by torch autograd in float64. tests/distill/test_golden_seed.cpp recomputes every case
with Retort in f32 and f64 and compares.

Regenerate (Debian's python3-torch):
  /usr/bin/python3 tools/gen_golden_distill_seed.py tests/fixtures/golden_distill_seed.safetensors

Cases (layout of tools/golden.py's record_case: NAME/in<i>, NAME/out, NAME/upstream, NAME/grad_in<i>):
  SoKD   feature_op_<op>       the five geometric feature ops (affine_grid + grid_sample, bilinear, zeros,
                               align_corners False) at a fixed value v, gradient to the feature
         masked_feature_mse    mse(fs * M, ft * M) over every element, M [B, H, W] broadcast over channels
         dam                   the DAM's three heads, cat(sigmoid(heatmap), wh, offset); its weights are
                               stored as dam/state/<name> (PyTorch names = Retort's)
         dam_regions_<k>       the region extraction (not differentiable): dam_regions_<k>/{heatmap, wh,
                               offset} in; /mask, /boxes (x1, y1, x2, y2), /scores, /classes out
  MTKD   stage_response        Σ_k T² KL(softmax(z_t^k / T) ‖ softmax(z_s^k / T)), T = 4, three stages
         cross_stage_review    the review over (learner j, teacher k) = (0,1), (0,2), (1,2), teachers detached
         channel_distill       mean((GAP(fs) − GAP(ft))²), different spatial sizes
         aux_classifier_<mode> the auxiliary stage classifier (two stride-2 blocks) in train and eval mode;
                               weights and running statistics as aux/state/<name>
"""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import record_case, save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
tensors = {}
r = torch.randn


def case(name, fn, *inputs, grads=None):
    record_case(tensors, name, fn, inputs, (lambda i, x: True) if grads is None else (lambda i, x: grads[i]))


# ---- SoKD feature ops (methods.md §3.1.1; translations by 2v, our reading) ----------------------------

def warp(f, theta):
    t = torch.tensor(theta, dtype=f.dtype).view(1, 2, 3).expand(f.shape[0], 2, 3)
    grid = F.affine_grid(t, list(f.shape), align_corners=False)
    return F.grid_sample(f, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(v):
    a = math.radians(v)
    return [[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]]


ops = {
    "ShearX": (0.17, lambda v: [[1, v, 0], [0, 1, 0]]),
    "ShearY": (-0.23, lambda v: [[1, 0, 0], [v, 1, 0]]),
    "TranslateX": (0.31, lambda v: [[1, 0, 2 * v], [0, 1, 0]]),
    "TranslateY": (-0.12, lambda v: [[1, 0, 0], [0, 1, 2 * v]]),
    "Rotate": (23.0, rotate),
}
for name, (v, theta) in ops.items():
    case(f"feature_op_{name}", lambda f, th=theta(v): warp(f, th), r(2, 3, 6, 5))
    tensors[f"feature_op_{name}/value"] = torch.tensor([v])

# ---- masked feature MSE -------------------------------------------------------------------------------
mask = torch.randint(0, 3, (2, 5, 4)).to(torch.float64)
case("masked_feature_mse", lambda fs, ft, m: F.mse_loss(fs * m.unsqueeze(1), ft * m.unsqueeze(1)),
     r(2, 3, 5, 4), r(2, 3, 5, 4), mask, grads=[True, True, False])


# ---- DAM (methods.md §3.1.2): the heads, then the regions ----------------------------------------------

class Dam(nn.Module):
    def __init__(self, c, k):
        super().__init__()
        branch = lambda out: nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, out, 1), nn.ReLU())
        self.heatmap_head, self.wh_head, self.offset_head = branch(k), branch(2), branch(2)

    def forward(self, x):
        return torch.cat([torch.sigmoid(self.heatmap_head(x)), self.wh_head(x), self.offset_head(x)], 1)


dam = Dam(4, 5)
for p in dam.parameters():  # larger biases so that the trailing ReLUs keep a fair share of positives
    p.data.add_(0.05 * torch.randn_like(p))
for k, t in dam.state_dict().items():
    tensors[f"dam/state/{k}"] = t.clone()
case("dam", lambda x: dam(x), r(2, 4, 6, 5))


def dam_regions(heat, wh, off, k):
    """methods.md §3.1.2: local maxima (3x3 max-pool equality), top-k over classes x positions, boxes
    centre ± wh/2 clamped and truncated, mask = Σ boxes (inclusive)."""
    b, c, h, w = heat.shape
    keep = (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    scores, idx = torch.topk((heat * keep).view(b, -1), k)
    cls, pos = idx // (h * w), idx % (h * w)
    ys, xs = pos // w, pos % w
    mask = torch.zeros(b, h, w)
    boxes = torch.zeros(b, k, 4, dtype=torch.int64)
    for i in range(b):
        for j in range(k):
            y, x = int(ys[i, j]), int(xs[i, j])
            cx, cy = x + float(off[i, 0, y, x]), y + float(off[i, 1, y, x])
            bw, bh = float(wh[i, 0, y, x]), float(wh[i, 1, y, x])
            x1, y1 = int(max(cx - bw / 2, 0.0)), int(max(cy - bh / 2, 0.0))
            x2, y2 = int(min(cx + bw / 2, w - 1.0)), int(min(cy + bh / 2, h - 1.0))
            boxes[i, j] = torch.tensor([x1, y1, x2, y2])
            if x2 >= x1 and y2 >= y1:
                mask[i, y1:y2 + 1, x1:x2 + 1] += 1
    return mask, boxes, scores, cls


for k, (c, h, w) in {4: (3, 6, 6), 7: (5, 8, 7)}.items():
    heat = torch.sigmoid(r(2, c, h, w) * 2)  # continuous: no ties among the kept maxima
    wh = torch.rand(2, 2, h, w) * 4
    off = torch.rand(2, 2, h, w)
    m, bx, sc, cl = dam_regions(heat, wh, off, k)
    for n, t in [("heatmap", heat), ("wh", wh), ("offset", off), ("mask", m), ("boxes", bx), ("scores", sc),
                 ("classes", cl)]:
        tensors[f"dam_regions_{k}/{n}"] = t

# ---- MTKD-SSR stage losses (methods.md §3.2) -----------------------------------------------------------


def kd(zs, zt, T):
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="batchmean") * T * T


def srd(s0, s1, s2, t0, t1, t2):
    return sum(kd(s, t.detach(), 4.0) for s, t in [(s0, t0), (s1, t1), (s2, t2)])


case("stage_response", srd, *[r(4, 6) * 2 for _ in range(6)], grads=[True] * 3 + [False] * 3)


def crd(z0, z1, z2):
    z = [z0, z1, z2]
    return sum(kd(z[j], z[k].detach(), 4.0) for j, k in [(0, 1), (0, 2), (1, 2)])


case("cross_stage_review", crd, *[r(4, 6) * 2 for _ in range(3)])
case("channel_distill", lambda fs, ft: ((fs.mean((2, 3)) - ft.mean((2, 3))) ** 2).mean(), r(2, 5, 6, 6),
     r(2, 5, 3, 3))


# ---- AuxClassifier: stage [N, 4, 8, 8] -> final 16 channels at 2x2, 7 classes -------------------------
# Two stride-2 blocks; channels grow geometrically: round(4 * (16/4)^(1/2)) = 8, then 16.

class Aux(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 7)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


aux = Aux()
for m in aux.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.weight.data = 1 + 0.2 * torch.randn_like(m.weight)
        m.bias.data = 0.1 * torch.randn_like(m.bias)
        m.running_mean.data = 0.1 * torch.randn_like(m.running_mean)
        m.running_var.data = 0.5 + torch.rand_like(m.running_var)
for k, t in aux.state_dict().items():
    tensors[f"aux/state/{k}"] = t.clone()
x_aux = r(3, 4, 8, 8)
aux.eval()
case("aux_classifier_eval", lambda x: aux(x), x_aux)
aux.train()
case("aux_classifier_train", lambda x: aux(x), x_aux)  # batch statistics (the running ones move after)

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_distill_seed.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
