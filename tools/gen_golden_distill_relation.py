"""Golden fixtures for the relation distillation nodes (distill/nodes/relation.h): each loss is
computed with the reference implementation's own code (copied below from RepDistiller's
distiller_zoo: SP.py, PKT.py, RKD.py) and differentiated by PyTorch, in float64.
tests/distill/test_relation_nodes.cpp recomputes them with Retort in f64 and f32.

Regenerate (Debian's python3-torch):
  /usr/bin/python3 tools/gen_golden_distill_relation.py tests/fixtures/golden_distill_relation.safetensors

Each case NAME stores NAME/in0, NAME/in1 (inputs), NAME/out (output), NAME/upstream and NAME/grad_in0,
NAME/grad_in1 (gradient of sum(out * upstream) with respect to each input). As in the references'
training loops the teacher input needs no gradient for RKD (RKD.py computes its relations under
torch.no_grad()); SP and PKT are differentiated in both."""
import sys

import torch
import torch.nn.functional as F

from golden import record_case, save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
tensors = {}


# RepDistiller distiller_zoo/SP.py (one feature pair)
def sp(f_s, f_t):
    bsz = f_s.shape[0]
    f_s = f_s.view(bsz, -1)
    f_t = f_t.view(bsz, -1)
    G_s = torch.mm(f_s, torch.t(f_s))
    G_s = torch.nn.functional.normalize(G_s)
    G_t = torch.mm(f_t, torch.t(f_t))
    G_t = torch.nn.functional.normalize(G_t)
    G_diff = G_t - G_s
    return (G_diff * G_diff).view(-1, 1).sum(0)[0] / (bsz * bsz)


# RepDistiller distiller_zoo/PKT.py: cosine_similarity_loss
def pkt(output_net, target_net, eps=0.0000001):
    output_net = output_net.view(output_net.shape[0], -1)
    target_net = target_net.view(target_net.shape[0], -1)
    output_net_norm = torch.sqrt(torch.sum(output_net ** 2, dim=1, keepdim=True))
    output_net = output_net / (output_net_norm + eps)
    output_net[output_net != output_net] = 0
    target_net_norm = torch.sqrt(torch.sum(target_net ** 2, dim=1, keepdim=True))
    target_net = target_net / (target_net_norm + eps)
    target_net[target_net != target_net] = 0
    model_similarity = torch.mm(output_net, output_net.transpose(0, 1))
    target_similarity = torch.mm(target_net, target_net.transpose(0, 1))
    model_similarity = (model_similarity + 1.0) / 2.0
    target_similarity = (target_similarity + 1.0) / 2.0
    model_similarity = model_similarity / torch.sum(model_similarity, dim=1, keepdim=True)
    target_similarity = target_similarity / torch.sum(target_similarity, dim=1, keepdim=True)
    return torch.mean(target_similarity * torch.log((target_similarity + eps) / (model_similarity + eps)))


# RepDistiller distiller_zoo/RKD.py
def pdist(e, squared=False, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps)
    if not squared:
        res = res.sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd(f_s, f_t, w_d=25, w_a=50):
    student = f_s.view(f_s.shape[0], -1)
    teacher = f_t.view(f_t.shape[0], -1)
    with torch.no_grad():
        t_d = pdist(teacher, squared=False)
        mean_td = t_d[t_d > 0].mean()
        t_d = t_d / mean_td
    d = pdist(student, squared=False)
    mean_d = d[d > 0].mean()
    d = d / mean_d
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = (teacher.unsqueeze(0) - teacher.unsqueeze(1))
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = (student.unsqueeze(0) - student.unsqueeze(1))
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return w_d * loss_d + w_a * loss_a


def case(name, fn, *inputs, teacher_grad=True):
    record_case(tensors, name, fn, inputs, lambda i, x: i == 0 or teacher_grad)


r = torch.randn
# SP on last-stage-like maps (post-ReLU), different widths, and on embeddings
case("sp_maps", sp, F.relu(r(6, 4, 3, 3)), F.relu(r(6, 8, 3, 3)))
case("sp_embeddings", sp, r(5, 7), r(5, 3))
# PKT on pooled embeddings (post-ReLU, so cosines are positive) and on signed vectors
case("pkt_pooled", pkt, F.relu(r(6, 8)), F.relu(r(6, 12)))
case("pkt_signed", pkt, r(5, 2, 2, 2), r(5, 4))
# RKD at its defaults (25, 50) and with one part only
case("rkd_defaults", rkd, r(6, 8), r(6, 5), teacher_grad=False)
case("rkd_maps", rkd, F.relu(r(5, 3, 2, 2)), F.relu(r(5, 4, 2, 2)), teacher_grad=False)
case("rkd_distance_only", lambda s, t: rkd(s, t, 1, 0), r(4, 3) * 3, r(4, 6), teacher_grad=False)
case("rkd_angle_only", lambda s, t: rkd(s, t, 0, 1), r(4, 3), r(4, 6), teacher_grad=False)

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_distill_relation.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
