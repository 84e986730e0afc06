"""Golden fixtures for the feature distillation nodes and conv_transpose2d: each loss is computed with
the reference implementation's own formula (copied below from mdistiller's AT, mmrazor's
ChannelWiseDivergence, ReviewKD's hcl_loss) and differentiated by PyTorch, in float64.
tests/distill/test_feature_nodes.cpp recomputes them with Retort in f64 and f32.

Regenerate (Debian's python3-torch):
  /usr/bin/python3 tools/gen_golden_distill_feature.py tests/fixtures/golden_distill_feature.safetensors

Each case NAME stores NAME/in0, NAME/in1, ... (inputs), NAME/out (output), NAME/upstream and
NAME/grad_in0, ... (gradient of sum(out * upstream) with respect to each float input)."""
import sys

import torch
import torch.nn.functional as F

from golden import record_case, save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
tensors = {}


def case(name, fn, *inputs):
    record_case(tensors, name, fn, inputs, lambda i, x: True)


# mdistiller/distillers/AT.py
def at(feat, p):
    return F.normalize(feat.pow(p).mean(1).reshape(feat.size(0), -1))


def single_stage_at_loss(f_s, f_t, p):
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    return (at(f_s, p) - at(f_t, p)).pow(2).mean()


# mmrazor/models/losses/cwd.py (loss_weight 1)
def cwd(preds_S, preds_T, tau):
    N, C, H, W = preds_S.shape
    softmax_pred_T = F.softmax(preds_T.view(-1, W * H) / tau, dim=1)
    logsoftmax = torch.nn.LogSoftmax(dim=1)
    loss = torch.sum(softmax_pred_T * logsoftmax(preds_T.view(-1, W * H) / tau) -
                     softmax_pred_T * logsoftmax(preds_S.view(-1, W * H) / tau)) * (tau ** 2)
    return loss / (C * N)


# ReviewKD (mdistiller/distillers/ReviewKD.py: hcl_loss), one level
def hcl(fs, ft):
    n, c, h, w = fs.shape
    loss = F.mse_loss(fs, ft, reduction="mean")
    cnt = 1.0
    tot = 1.0
    for l in [4, 2, 1]:
        if l >= h:
            continue
        tmpfs = F.adaptive_avg_pool2d(fs, (l, l))
        tmpft = F.adaptive_avg_pool2d(ft, (l, l))
        cnt /= 2.0
        loss += F.mse_loss(tmpfs, tmpft, reduction="mean") * cnt
        tot += cnt
    return loss / tot


r = torch.randn
# AT: post-ReLU-like features (the loss is defined for any sign with p = 2)
case("attention_map", lambda f: at(f, 2), r(2, 4, 5, 5))
case("at_same", lambda s, t: single_stage_at_loss(s, t, 2), F.relu(r(3, 4, 6, 6)) + 0.01, r(3, 6, 6, 6))
case("at_student_larger", lambda s, t: single_stage_at_loss(s, t, 2), r(2, 3, 8, 8), r(2, 5, 4, 4))
case("at_teacher_larger", lambda s, t: single_stage_at_loss(s, t, 2), r(2, 3, 4, 4), r(2, 3, 8, 8))
case("at_uneven_pool", lambda s, t: single_stage_at_loss(s, t, 2), r(2, 3, 7, 7), r(2, 3, 3, 3))
# CWD
case("cwd_tau1", lambda s, t: cwd(s, t, 1.0), r(2, 3, 4, 5), r(2, 3, 4, 5))
case("cwd_tau4", lambda s, t: cwd(s, t, 4.0), r(2, 3, 4, 5) * 3, r(2, 3, 4, 5) * 3)
# HCL
case("hcl_h8", hcl, r(2, 3, 8, 8), r(2, 3, 8, 8))
case("hcl_h4", hcl, r(2, 3, 4, 4), r(2, 3, 4, 4))
case("hcl_h5", hcl, r(2, 2, 5, 5), r(2, 2, 5, 5))
case("hcl_h1", hcl, r(4, 6, 1, 1), r(4, 6, 1, 1))
# conv_transpose2d (ConvReg's upsampler and a general setting)
case("conv_transpose2d_k4s2p1", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1),
     r(2, 3, 4, 4), r(3, 5, 4, 4), r(5))
case("conv_transpose2d_general",
     lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2,
                                        dilation=(1, 2)),
     r(2, 4, 3, 4), r(4, 3, 3, 2), r(6))

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_distill_feature.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
