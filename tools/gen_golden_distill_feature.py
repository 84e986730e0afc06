"""Golden fixtures for the feature distillation nodes and conv_transpose2d: each loss is computed with
the reference implementation's own formula (copied below from mdistiller's AT, mmrazor's
ChannelWiseDivergence, ReviewKD's hcl_loss) and differentiated by PyTorch, in float64.
tests/distill/test_feature_nodes.cpp recomputes them with Retort in f64 and f32.

Regenerate (Debian's python3-torch):
  /usr/bin/python3 tools/gen_golden_distill_feature.py tests/fixtures/golden_distill_feature.safetensors

Each case NAME stores NAME/in0, NAME/in1, ... (inputs), NAME/out (output), NAME/upstream and
NAME/grad_in0, ... (gradient of sum(out * upstream) with respect to each float input). The whole
reviewkd term (reviewkd_case: the ABF chain and HCL, with its parameters) has its own layout, described
there."""
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



# ReviewKD, the whole term (methods.md §1.7): one ABF per level; from the deepest level (the pooled vector
# as a 1x1 map) up, each ABF maps its student feature to the mid channels (1x1 conv + BN), fuses it with
# the residual from the level below (nearest-upsampled to its size; attention = sigmoid(1x1 conv of both),
# two weights per position), brings it to the teacher's size (nearest) and maps it to the teacher's
# channels (3x3 conv + BN); HCL against the teacher's feature, summed over levels. BN in training mode.
# Written from mdistiller's distillers/ReviewKD.py (ABF.forward, forward_train), parameters named as
# Retort's reviewkd strategy names them: abfs.<level, shallow first>.conv1.0.weight, ...
def abf(p, x, res, out_hw):
    mid = F.batch_norm(F.conv2d(x, p["conv1.0.weight"]), None, None, p["conv1.1.weight"], p["conv1.1.bias"],
                       training=True)
    if res is not None:
        res = F.interpolate(res, x.shape[-2:], mode="nearest")
        z = torch.sigmoid(F.conv2d(torch.cat([mid, res], 1), p["att_conv.0.weight"], p["att_conv.0.bias"]))
        mid = mid * z[:, 0:1] + res * z[:, 1:2]
    if tuple(mid.shape[-2:]) != tuple(out_hw):
        mid = F.interpolate(mid, out_hw, mode="nearest")
    y = F.batch_norm(F.conv2d(mid, p["conv2.0.weight"], padding=1), None, None, p["conv2.1.weight"],
                     p["conv2.1.bias"], training=True)
    return y, mid


def reviewkd_case(name, students, teachers):
    """NAME/s<i>, NAME/t<i> (level i, shallow first; a pooled [B, C] vector as it is tapped), NAME/state/<key>
    (the term's state dict), NAME/out, NAME/upstream, NAME/grad_s<i> and NAME/grad/<parameter key>."""
    as_map = lambda f: f if f.dim() == 4 else f[:, :, None, None]
    n = len(students)
    mid_c = min(512, as_map(students[-1]).shape[1])
    state, params = {}, []
    for i, (s, t) in enumerate(zip(students, teachers)):
        cin, cout = as_map(s).shape[1], as_map(t).shape[1]
        shapes = {"conv1.0.weight": (mid_c, cin, 1, 1), "conv2.0.weight": (cout, mid_c, 3, 3)}
        if i + 1 < n:
            shapes.update({"att_conv.0.weight": (2, 2 * mid_c, 1, 1), "att_conv.0.bias": (2,)})
        p = {k: r(*sh) * 0.5 for k, sh in shapes.items()}
        for bn, c in (("conv1.1", mid_c), ("conv2.1", cout)):
            p[bn + ".weight"] = 1 + 0.2 * r(c)
            p[bn + ".bias"] = 0.1 * r(c)
        p = {k: v.requires_grad_() for k, v in p.items()}
        params.append(p)
        for k, v in p.items():
            state[f"abfs.{i}.{k}"] = v
        for bn, c in (("conv1.1", mid_c), ("conv2.1", cout)):
            state[f"abfs.{i}.{bn}.running_mean"] = torch.zeros(c)
            state[f"abfs.{i}.{bn}.running_var"] = torch.ones(c)
            state[f"abfs.{i}.{bn}.num_batches_tracked"] = torch.zeros((), dtype=torch.int64)
    xs = [s.clone().requires_grad_() for s in students]
    res, total = None, 0.0
    for i in reversed(range(n)):
        t = as_map(teachers[i])
        y, res = abf(params[i], as_map(xs[i]), res, t.shape[-2:])
        total = total + hcl(y, t)
    up = torch.randn(())
    (total * up).backward()
    for i in range(n):
        tensors[f"{name}/s{i}"] = students[i]
        tensors[f"{name}/t{i}"] = teachers[i]
        tensors[f"{name}/grad_s{i}"] = xs[i].grad
    for k, v in state.items():
        tensors[f"{name}/state/{k}"] = v.detach()
        if v.requires_grad:
            tensors[f"{name}/grad/{k}"] = v.grad
    tensors[f"{name}/out"] = total.detach()
    tensors[f"{name}/upstream"] = up


# Student and teacher maps of one size per level (a ResNet pair), and a student at half the teacher's
# size (a ShuffleNet student): its levels are upsampled to the teacher's.
reviewkd_case("reviewkd_same_size", [r(2, 4, 8, 8), r(2, 6, 4, 4), r(2, 8, 2, 2), r(2, 8)],
              [r(2, 5, 8, 8), r(2, 7, 4, 4), r(2, 9, 2, 2), r(2, 9)])
reviewkd_case("reviewkd_student_half", [r(2, 4, 4, 4), r(2, 6, 2, 2), r(2, 8)], [r(2, 5, 8, 8), r(2, 7, 4, 4), r(2, 9)])

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_distill_feature.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
