"""Golden fixtures for VID, NST, CC, OFD, AB, FSP, FT and KDSVD (distill/nodes/feature.h vid_loss, nst_loss,
ofd_loss, ofd_margin, ab_loss, fsp_matrix, fsp_loss and ft_loss, distill/nodes/relation.h cc_loss;
distill/connectors.h Paraphraser and Translator): each is computed with the reference implementation's
own code (copied below from RepDistiller's distiller_zoo: VID.py, NST.py, CC.py, AB.py, FSP.py, FT.py,
and models/util.py; mdistiller's distillers/OFD.py and KDSVD.py) and differentiated by PyTorch, in float64. tests/distill/test_zoo_nodes.cpp recomputes them with Retort in f64 and f32.

Regenerate (Debian's python3-torch):
  cd tools && /usr/bin/python3 gen_golden_distill_zoo.py ../tests/fixtures/golden_distill_zoo.safetensors

Each case NAME stores NAME/in<i> (inputs), NAME/out (output), NAME/upstream and NAME/grad_in<i>
(gradient of sum(out * upstream) with respect to each input that requires one; tools/golden.py)."""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from golden import record_case, save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
tensors = {}


# RepDistiller distiller_zoo/VID.py: VIDLoss.forward after its regressor (pred_mean given).
def vid_after_regressor(pred_mean, target, log_scale, eps=1e-5):
    pred_var = torch.log(1.0 + torch.exp(log_scale)) + eps
    pred_var = pred_var.view(1, -1, 1, 1)
    neg_log_prob = 0.5 * ((pred_mean - target) ** 2 / pred_var + torch.log(pred_var))
    loss = torch.mean(neg_log_prob)
    return loss


# VIDLoss.forward whole: pooling, the regressor conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1 (weights
# given), then the loss.
def vid_module(input, target, w0, w2, w4, log_scale, eps=1e-5):
    s_H, t_H = input.shape[2], target.shape[2]
    if s_H > t_H:
        input = F.adaptive_avg_pool2d(input, (t_H, t_H))
    elif s_H < t_H:
        target = F.adaptive_avg_pool2d(target, (s_H, s_H))
    pred_mean = F.conv2d(F.relu(F.conv2d(F.relu(F.conv2d(input, w0)), w2)), w4)
    return vid_after_regressor(pred_mean, target, log_scale, eps)


# RepDistiller distiller_zoo/NST.py: NSTLoss.nst_loss and poly_kernel
def nst(f_s, f_t):
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    f_s = f_s.view(f_s.shape[0], f_s.shape[1], -1)
    f_s = F.normalize(f_s, dim=2)
    f_t = f_t.view(f_t.shape[0], f_t.shape[1], -1)
    f_t = F.normalize(f_t, dim=2)
    return (poly_kernel(f_t, f_t).mean().detach() + poly_kernel(f_s, f_s).mean()
            - 2 * poly_kernel(f_s, f_t).mean())


def poly_kernel(a, b):
    a = a.unsqueeze(1)
    b = b.unsqueeze(2)
    res = (a * b).sum(-1).pow(2)
    return res


# RepDistiller distiller_zoo/CC.py: Correlation.forward
def cc(f_s, f_t):
    delta = torch.abs(f_s - f_t)
    loss = torch.mean((delta[:-1] * delta[1:]).sum(1))
    return loss


# mdistiller distillers/OFD.py: feat_loss, and the margins of OFD.init_ofd_modules. scipy's norm.cdf is
# written with math.erfc (the same function; scipy is not a dependency of Debian's python3-torch).
def ofd(source, target, margin):
    margin = margin.view(1, -1, 1, 1).to(source)  # OFD keeps it as margin.unsqueeze(1).unsqueeze(2).unsqueeze(0)
    loss = (
        (source - margin) ** 2 * ((source > margin) & (target <= margin)).float()
        + (source - target) ** 2
        * ((source > target) & (target > margin) & (target <= 0)).float()
        + (source - target) ** 2 * (target > 0).float()
    )
    return torch.abs(loss).mean(dim=0).sum()


def norm_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def ofd_margins(weight, bias):
    margin = []
    std = weight.data
    mean = bias.data
    for (s, m) in zip(std, mean):
        s = abs(s.item())
        m = m.item()
        if norm_cdf(-m / s) > 0.001:
            margin.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / norm_cdf(-m / s) + m)
        else:
            margin.append(-3 * s)
    return torch.tensor(margin)


# RepDistiller distiller_zoo/AB.py: ABLoss
class ABLoss:
    def __init__(self, feat_num, margin=1.0):
        self.w = [2**(i-feat_num+1) for i in range(feat_num)]
        self.margin = margin

    def forward(self, g_s, g_t):
        bsz = g_s[0].shape[0]
        losses = [self.criterion_alternative_l2(s, t) for s, t in zip(g_s, g_t)]
        losses = [w * l for w, l in zip(self.w, losses)]
        losses = [l / bsz for l in losses]
        losses = [l / 1000 * 3 for l in losses]
        return losses

    def criterion_alternative_l2(self, source, target):
        loss = ((source + self.margin) ** 2 * ((source > -self.margin) & (target <= 0)).float() +
                (source - self.margin) ** 2 * ((source <= self.margin) & (target > 0)).float())
        return torch.abs(loss).sum()


# RepDistiller distiller_zoo/FSP.py: FSP.compute_fsp and compute_loss
def compute_fsp(g):
    fsp_list = []
    for i in range(len(g) - 1):
        bot, top = g[i], g[i + 1]
        b_H, t_H = bot.shape[2], top.shape[2]
        if b_H > t_H:
            bot = F.adaptive_avg_pool2d(bot, (t_H, t_H))
        elif b_H < t_H:
            top = F.adaptive_avg_pool2d(top, (b_H, b_H))
        else:
            pass
        bot = bot.unsqueeze(1)
        top = top.unsqueeze(2)
        bot = bot.view(bot.shape[0], bot.shape[1], bot.shape[2], -1)
        top = top.view(top.shape[0], top.shape[1], top.shape[2], -1)

        fsp = (bot * top).mean(-1)
        fsp_list.append(fsp)
    return fsp_list


def fsp_forward(g_s, g_t):
    return sum((s - t).pow(2).mean() for s, t in zip(compute_fsp(g_s), compute_fsp(g_t)))


# RepDistiller distiller_zoo/FT.py: FactorTransfer
class FactorTransfer:
    def __init__(self, p1=2, p2=1):
        self.p1 = p1
        self.p2 = p2

    def factor_loss(self, f_s, f_t):
        s_H, t_H = f_s.shape[2], f_t.shape[2]
        if s_H > t_H:
            f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
        elif s_H < t_H:
            f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
        else:
            pass
        if self.p2 == 1:
            return (self.factor(f_s) - self.factor(f_t)).abs().mean()
        else:
            return (self.factor(f_s) - self.factor(f_t)).pow(self.p2).mean()

    def factor(self, f):
        return F.normalize(f.pow(self.p1).mean(1).view(f.size(0), -1))


# RepDistiller models/util.py: Paraphraser and Translator
class Paraphraser(torch.nn.Module):
    def __init__(self, t_shape, k=0.5, use_bn=False):
        super(Paraphraser, self).__init__()
        in_channel = t_shape[1]
        out_channel = int(t_shape[1] * k)
        nn = torch.nn
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channel, in_channel, 3, 1, 1),
            nn.BatchNorm2d(in_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(in_channel, out_channel, 3, 1, 1),
            nn.BatchNorm2d(out_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_channel, out_channel, 3, 1, 1),
            nn.BatchNorm2d(out_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(out_channel, out_channel, 3, 1, 1),
            nn.BatchNorm2d(out_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
            nn.ConvTranspose2d(out_channel, in_channel, 3, 1, 1),
            nn.BatchNorm2d(in_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
            nn.ConvTranspose2d(in_channel, in_channel, 3, 1, 1),
            nn.BatchNorm2d(in_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
        )

    def forward(self, f_s, is_factor=False):
        factor = self.encoder(f_s)
        if is_factor:
            return factor
        rec = self.decoder(factor)
        return factor, rec


class Translator(torch.nn.Module):
    def __init__(self, s_shape, t_shape, k=0.5, use_bn=True):
        super(Translator, self).__init__()
        in_channel = s_shape[1]
        out_channel = int(t_shape[1] * k)
        nn = torch.nn
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channel, in_channel, 3, 1, 1),
            nn.BatchNorm2d(in_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(in_channel, out_channel, 3, 1, 1),
            nn.BatchNorm2d(out_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_channel, out_channel, 3, 1, 1),
            nn.BatchNorm2d(out_channel) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
        )

    def forward(self, f_s):
        return self.encoder(f_s)


# mdistiller distillers/KDSVD.py: kdsvd_loss, svd, removenan, align_rsv (RepDistiller's KDSVD.py is the
# same but for its svd's view, repdistiller_svd below, and returning the list of per-pair losses, which
# train_student.py sums). Changes, all marked: kdsvd_loss takes the svd to use; svd keeps the input's
# dtype (mdistiller calls .float()); the right singular vectors get Retort's sign convention (each
# column's largest-magnitude entry positive) — torch.svd leaves the sign to LAPACK, and the loss depends
# on the teacher's signs.
def kdsvd_loss(g_s, g_t, k, kdsvd_svd):  # changed: the svd is an argument
    v_sb = None
    v_tb = None
    losses = []
    for i, f_s, f_t in zip(range(len(g_s)), g_s, g_t):
        u_t, s_t, v_t = kdsvd_svd(f_t, k)
        u_s, s_s, v_s = kdsvd_svd(f_s, k + 3)
        v_s, v_t = align_rsv(v_s, v_t)
        s_t = s_t.unsqueeze(1)
        v_t = v_t * s_t
        v_s = v_s * s_t

        if i > 0:
            s_rbf = torch.exp(-(v_s.unsqueeze(2) - v_sb.unsqueeze(1)).pow(2) / 8)
            t_rbf = torch.exp(-(v_t.unsqueeze(2) - v_tb.unsqueeze(1)).pow(2) / 8)

            l2loss = (s_rbf - t_rbf.detach()).pow(2)
            l2loss = torch.where(torch.isfinite(l2loss), l2loss, torch.zeros_like(l2loss))
            losses.append(l2loss.sum())

        v_tb = v_t
        v_sb = v_s

    bsz = g_s[0].shape[0]
    losses = [l / bsz for l in losses]
    return sum(losses)


def mdistiller_svd(feat, n=1):
    size = feat.shape
    assert len(size) == 4

    x = feat.view(size[0], size[1] * size[2], size[3])  # changed: no .float()
    return kdsvd_svd_tail(x, n)


def repdistiller_svd(feat, n=1):  # RepDistiller's KDSVD.svd (square maps)
    size = feat.shape
    assert len(size) == 4

    x = feat.view(-1, size[1], size[2] * size[2]).transpose(-2, -1)
    return kdsvd_svd_tail(x, n)


def kdsvd_svd_tail(x, n):  # the two svds' common part
    u, s, v = torch.svd(x)
    # changed: Retort's sign convention for the right singular vectors
    v = v * torch.sign(torch.gather(v, 1, v.abs().argmax(dim=1, keepdim=True))).detach()

    u = removenan(u)
    s = removenan(s)
    v = removenan(v)

    if n > 0:
        u = F.normalize(u[:, :, :n], dim=1)
        s = F.normalize(s[:, :n], dim=1)
        v = F.normalize(v[:, :, :n], dim=1)

    return u, s, v


def removenan(x):
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    return x


def align_rsv(a, b):
    cosine = torch.matmul(a.transpose(-2, -1), b)
    max_abs_cosine, _ = torch.max(torch.abs(cosine), 1, keepdim=True)
    mask = torch.where(torch.eq(max_abs_cosine, torch.abs(cosine)), torch.sign(cosine), torch.zeros_like(cosine))
    a = torch.matmul(a, mask)
    return a, b


def module_case(name, module, fn, x):
    """Inputs: x, then the module's parameters in its named_parameters order (the order Retort's
    Module::parameters() has), so the test loads in1.. into its own module; training mode (BN batch
    statistics)."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone() for _, p in module.named_parameters()]

    def run(x_, *ps):
        return fn(torch.nn.utils.stateless.functional_call(module, dict(zip(names, ps)), (x_,)))
    record_case(tensors, name, run, [x] + params, lambda i, v: True)


def case(name, fn, *inputs, grads=None):
    """grads: which inputs require grad (all by default)."""
    record_case(tensors, name, fn, inputs, lambda i, x: grads is None or i in grads)


r = torch.randn
init = float(np.log(np.exp(5.0 - 1e-5) - 1.0))  # VIDLoss's log_scale initialisation
# VID's loss on a prediction: at the initial scale, and at scales across softplus's knee
case("vid_initial_scale", vid_after_regressor, r(3, 4, 2, 2), r(3, 4, 2, 2), torch.full((4,), init))
case("vid_learned_scale", vid_after_regressor, r(2, 3, 3, 3), F.relu(r(2, 3, 3, 3)), torch.tensor([-3.0, 0.2, 4.0]))
# VIDLoss whole (student 8x8 pooled to the teacher's 4x4; 3 -> 5 channels, mid 5), teacher frozen as
# in RepDistiller's loop
w = lambda o, i: r(o, i, 1, 1) * 0.5
case("vid_module", vid_module, F.relu(r(2, 3, 8, 8)), F.relu(r(2, 5, 4, 4)), w(5, 3), w(5, 5), w(5, 5),
     torch.full((5,), init) + 0.3 * r(5), grads={0, 2, 3, 4, 5})
# NST: channels differ, a pooled student, and a pooled teacher; the teacher is frozen (the reference
# detaches its teacher-teacher term, which only matters when the teacher is trained)
case("nst_channels_differ", nst, F.relu(r(2, 3, 4, 4)), F.relu(r(2, 6, 4, 4)), grads={0})
case("nst_student_pooled", nst, r(3, 4, 6, 6), r(3, 2, 3, 3), grads={0})
case("nst_teacher_pooled", nst, F.relu(r(2, 5, 2, 2)), F.relu(r(2, 3, 4, 4)), grads={0})
# CC on embeddings, both sides trained (RepDistiller trains embed_t)
case("cc_embeddings", cc, r(6, 8), r(6, 8))
case("cc_batch2", cc, r(2, 5), r(2, 5))

# OFD: standard normal pre-ReLU features against margins around -0.5 reach every region of the partial
# L2; the margins from BN parameters on both sides of the 0.001 cut (bias 3.5 |weight| is beyond it)
case("ofd_regions", ofd, r(3, 4, 3, 3), r(3, 4, 3, 3), torch.rand(4) * -0.8 - 0.2, grads={0, 1})
bn_w, bn_b = torch.tensor([1.0, 0.5, -2.0, 0.3, 1.2, 0.01]), torch.tensor([0.0, 1.0, -0.5, 1.05, -3.0, 0.2])
tensors["ofd_margin/in0"], tensors["ofd_margin/in1"] = bn_w, bn_b
tensors["ofd_margin/out"] = ofd_margins(bn_w, bn_b)

# AB: one stage's criterion / batch (the node), at margins 1 and 0.5; and ABLoss over three stages
# (the strategy's weights 2^(i-n+1) * 3 / 1000), the teacher frozen
case("ab_stage", lambda s_, t_: ABLoss(1).criterion_alternative_l2(s_, t_) / s_.shape[0], 1.5 * r(3, 4, 3, 3),
     r(3, 4, 3, 3), grads={0})
case("ab_stage_margin0_5", lambda s_, t_: ABLoss(1, 0.5).criterion_alternative_l2(s_, t_) / s_.shape[0],
     r(2, 3, 2, 2), r(2, 3, 2, 2), grads={0})
case("ab_three_stages", lambda s1, t1, s2, t2, s3, t3: sum(ABLoss(3).forward([s1, s2, s3], [t1, t2, t3])),
     r(2, 2, 4, 4), r(2, 2, 4, 4), r(2, 3, 2, 2), r(2, 3, 2, 2), r(2, 4, 1, 1), r(2, 4, 1, 1), grads={0, 2, 4})

# FSP: one pair at one size, pairs with either map of a pair pooled and the student at another spatial
# size than the teacher (only the channels must agree), teacher frozen; RepDistiller's sum over pairs
case("fsp_matrix_same_size", lambda b, t: compute_fsp([b, t])[0], r(2, 3, 3, 3), r(2, 4, 3, 3))
case("fsp_matrix_bot_pooled", lambda b, t: compute_fsp([b, t])[0], r(2, 2, 6, 6), r(2, 3, 3, 3))
case("fsp_three_pairs", lambda s0, s1, s2, s3, t0, t1, t2, t3: fsp_forward([s0, s1, s2, s3], [t0, t1, t2, t3]),
     F.relu(r(2, 2, 4, 4)), F.relu(r(2, 2, 4, 4)), F.relu(r(2, 3, 2, 2)), F.relu(r(2, 4, 1, 1)),
     F.relu(r(2, 2, 8, 8)), F.relu(r(2, 2, 8, 8)), F.relu(r(2, 3, 4, 4)), F.relu(r(2, 4, 2, 2)), grads={0, 1, 2, 3})
# FT's factor loss: student pooled, teacher pooled, p2 = 2
case("ft_student_pooled", lambda s_, t_: FactorTransfer().factor_loss(s_, t_), r(3, 4, 6, 6), r(3, 2, 3, 3))
case("ft_teacher_pooled", lambda s_, t_: FactorTransfer().factor_loss(s_, t_), r(2, 3, 2, 2), r(2, 5, 4, 4),
     grads={0})
case("ft_p2_2", lambda s_, t_: FactorTransfer(2, 2).factor_loss(s_, t_), r(2, 3, 3, 3), r(2, 3, 3, 3))
# The Paraphraser (no BN; its reconstruction and its factor) and the Translator (BN, training mode) on
# 6 channels, rate 0.5 -> 3 factor channels
para = Paraphraser((2, 6, 4, 4))
module_case("paraphraser_reconstruction", para, lambda out: out[1], r(2, 6, 4, 4))
module_case("paraphraser_factor", para, lambda out: out[0], r(2, 6, 4, 4))
module_case("translator", Translator((2, 4, 4, 4), (2, 6, 4, 4)), lambda out: out, r(3, 4, 4, 4))

# KDSVD, mdistiller's width view over three stages of widths 8, 4, 2 (the student's k + 3 candidates
# clipped to 2 at the last), channels and heights differing between the networks; full-rank maps
# (C·H >= W, no ReLU zeros), so torch.svd's gradient is finite; the teacher frozen as in the references.
# k = 1 (the references' default), 2.
for k in (1, 2):
    case(f"kdsvd_width_three_stages_k{k}",
         lambda s1, s2, s3, t1, t2, t3, k=k: kdsvd_loss([s1, s2, s3], [t1, t2, t3], k, mdistiller_svd),
         r(2, 3, 4, 8), r(2, 4, 3, 4), r(2, 5, 2, 2), r(2, 4, 4, 8), r(2, 6, 2, 4), r(2, 3, 2, 2), grads={0, 1, 2})
# The singular vectors alone (two of them and their values)
case("kdsvd_width_svd_top2",
     lambda f: torch.cat([mdistiller_svd(f, 2)[2], torch.svd(f.view(2, 12, 5))[1][:, None, :2]], 1), r(2, 3, 4, 5))
# RepDistiller's channels view (the paper's): 6, 4, 3 channels (candidates clipped to 3 at the last),
# square maps of other sizes in the teacher (H·W >= C)
for k in (1, 2):
    case(f"kdsvd_channels_three_stages_k{k}",
         lambda s1, s2, s3, t1, t2, t3, k=k: kdsvd_loss([s1, s2, s3], [t1, t2, t3], k, repdistiller_svd),
         r(2, 6, 4, 4), r(2, 4, 3, 3), r(2, 3, 2, 2), r(2, 6, 8, 8), r(2, 4, 4, 4), r(2, 3, 2, 2), grads={0, 1, 2})
case("kdsvd_channels_svd_top2",
     lambda f: torch.cat([repdistiller_svd(f, 2)[2], torch.svd(f.view(2, 5, 9).transpose(1, 2))[1][:, None, :2]], 1),
     r(2, 5, 3, 3))

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_distill_zoo.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
