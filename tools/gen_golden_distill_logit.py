"""Golden fixtures for the logit distillation nodes (distill/nodes/logit.h): KD, DKD and the LS z-score
written as the reference code writes them (mdistiller's KD.py / DKD.py, logit-standardization-KD's
normalize()), differentiated by torch autograd in float64. tests/distill/test_logit_nodes.cpp
recomputes each case with Retort in f32 and f64 and compares.

Regenerate (Debian's python3-torch):
  /usr/bin/python3 tools/gen_golden_distill_logit.py tests/fixtures/golden_distill_logit.safetensors

Each case NAME stores NAME/in0 (student logits), NAME/in1 (teacher logits), NAME/in2 (targets, for
DKD), NAME/out, NAME/upstream (the gradient fed to backward) and NAME/grad_in0, NAME/grad_in1
(gradients of sum(out * upstream); the teacher is NOT detached here so its gradient is defined).
Hyperparameters are repeated in the C++ test; they are also in the file's metadata."""
import sys

import torch
import torch.nn.functional as F

from golden import record_case, save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
tensors = {}
meta = {"generator": "tools/gen_golden_distill_logit.py", "seed": 0}


def kd(zs, zt, T):
    # mdistiller/distillers/KD.py: kd_loss
    log_ps = F.log_softmax(zs / T, dim=1)
    pt = F.softmax(zt / T, dim=1)
    return F.kl_div(log_ps, pt, reduction="none").sum(1).mean() * T ** 2


def cat_mask(t, mask1, mask2):
    return torch.cat([(t * mask1).sum(1, keepdims=True), (t * mask2).sum(1, keepdims=True)], dim=1)


def dkd(zs, zt, y, alpha, beta, T):
    # mdistiller/distillers/DKD.py: dkd_loss (the ±1000 mask; exact enough for these moderate logits)
    gt = torch.zeros_like(zs).scatter_(1, y.unsqueeze(1), 1.0)
    other = 1.0 - gt
    ps = cat_mask(F.softmax(zs / T, dim=1), gt, other)
    pt = cat_mask(F.softmax(zt / T, dim=1), gt, other)
    tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * T ** 2 / y.shape[0]
    # mdistiller: F.kl_div(log_ps2, softmax(zt/T - 1000*gt), reduction="sum"). The same sum, written with
    # the teacher's log_softmax: kl_div's gradient wrt its target is log(target) + 1, -inf at the masked
    # entry where the probability underflows to 0, and autograd would turn 0 * -inf into NaN there.
    log_pt2 = F.log_softmax(zt / T - 1000.0 * gt, dim=1)
    log_ps2 = F.log_softmax(zs / T - 1000.0 * gt, dim=1)
    nckd = (log_pt2.exp() * (log_pt2 - log_ps2)).sum() * T ** 2 / y.shape[0]
    return alpha * tckd + beta * nckd


def zscore(z):
    # logit-standardization-KD: normalize(); torch.std is unbiased, eps added to the std
    return (z - z.mean(dim=-1, keepdims=True)) / (1e-7 + z.std(dim=-1, keepdims=True))


def case(name, fn, inputs, **params):
    record_case(tensors, name, fn, inputs, lambda i, x: x.is_floating_point())
    for k, v in params.items():
        meta[f"{name}.{k}"] = v


def logits(b, k, scale):
    return torch.randn(b, k) * scale


def targets(b, k):
    return torch.randint(0, k, (b,))


case("kd_t4", lambda s, t: kd(s, t, 4.0), [logits(4, 10, 3.0), logits(4, 10, 3.0)], T=4.0)
case("kd_t1_k100", lambda s, t: kd(s, t, 1.0), [logits(6, 100, 2.0), logits(6, 100, 2.0)], T=1.0)
case("dkd_a1_b8_t4", lambda s, t, y: dkd(s, t, y, 1.0, 8.0, 4.0),
     [logits(5, 10, 3.0), logits(5, 10, 3.0), targets(5, 10)], alpha=1.0, beta=8.0, T=4.0)
case("dkd_a2_b05_t1_k50", lambda s, t, y: dkd(s, t, y, 2.0, 0.5, 1.0),
     [logits(4, 50, 2.0), logits(4, 50, 2.0), targets(4, 50)], alpha=2.0, beta=0.5, T=1.0)
case("zscore", zscore, [logits(4, 10, 3.0) + 1.5])
case("kd_ls_t2", lambda s, t: kd(zscore(s), zscore(t), 2.0), [logits(4, 20, 3.0), logits(4, 20, 5.0) - 2.0], T=2.0)
case("dkd_ls_a9_b72_t2", lambda s, t, y: dkd(zscore(s), zscore(t), y, 9.0, 72.0, 2.0),
     [logits(4, 20, 3.0), logits(4, 20, 5.0), targets(4, 20)], alpha=9.0, beta=72.0, T=2.0)

def generous_teacher(zg, zs, y, k, tckd_weight, only_correct, standard_std=False):
    # Generous Teacher (methods.md §3.3): DKD+LS per sample, NCKD masked to the rows the standard
    # teacher (zs here) classifies right; the batch mean is over every row. standard_std: the generous
    # rows are centred by their own mean but scaled by the standard teacher's std (the other reading).
    ga = (zg - zg.mean(dim=-1, keepdims=True)) / (1e-7 + zs.std(dim=-1, keepdims=True)) if standard_std else zscore(zg)
    a, b = ga / k, zscore(zs) / k
    gt = torch.zeros_like(a).scatter_(1, y.unsqueeze(1), 1.0)
    pa, pb = cat_mask(F.softmax(a, dim=1), gt, 1 - gt), cat_mask(F.softmax(b, dim=1), gt, 1 - gt)
    tckd = (pb * (torch.log(pb) - torch.log(pa))).sum(1)
    log_pb2, log_pa2 = F.log_softmax(b - 1000.0 * gt, dim=1), F.log_softmax(a - 1000.0 * gt, dim=1)
    nckd = (log_pb2.exp() * (log_pb2 - log_pa2)).sum(1)
    m = (zs.argmax(1) == y).to(zs.dtype) if only_correct else torch.ones_like(nckd)
    return (tckd_weight * tckd + m * nckd).mean() * k ** 2


# Appended after the older cases so that their random inputs stay what they were.
y_gt = targets(6, 20)
z_st = logits(6, 20, 3.0)
z_st[torch.arange(0, 6, 2), y_gt[0::2]] += 12.0  # the standard teacher is right on rows 0, 2, 4
case("generous_k2_all", lambda g, s, y: generous_teacher(g, s, y, 2.0, 0.0, False),
     [logits(6, 20, 3.0), z_st.clone(), y_gt], k=2.0, tckd_weight=0.0, select="all")
case("generous_k3_tckd05_teacher_correct", lambda g, s, y: generous_teacher(g, s, y, 3.0, 0.5, True),
     [logits(6, 20, 3.0), z_st.clone(), y_gt], k=3.0, tckd_weight=0.5, select="teacher_correct")

# Appended later (session 7): the standard teacher's std for both rows.
case("generous_k2_standard_std_tckd025", lambda g, s, y: generous_teacher(g, s, y, 2.0, 0.25, False, True),
     [logits(6, 20, 3.0), logits(6, 20, 2.0), targets(6, 20)], k=2.0, tckd_weight=0.25, select="all",
     std="standard_teacher")

save_safetensors(sys.argv[1], tensors, meta)
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
