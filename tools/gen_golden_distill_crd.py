"""Golden fixtures for CRD's nodes (distill/nodes/contrast.h): RepDistiller's ContrastMemory (one
forward with given negatives, the normalisers Z set from it, and its memory update) and ContrastLoss,
copied below, differentiated by PyTorch in float64. tests/distill/test_crd.cpp recomputes them with
contrast_scores, nce_loss and the strategy's memory update.

Regenerate (Debian's python3-torch):
  /usr/bin/python3 tools/gen_golden_distill_crd.py tests/fixtures/golden_distill_crd.safetensors

Case "crd": in0 = student embedding v1 [B, D], in1 = teacher embedding v2 [B, D] (both L2-normalised
rows, as Embed makes them), out = s_loss + t_loss, grad_in0/1; plus crd/memory_v1, crd/memory_v2
(before), crd/y (the batch's sample indices), crd/contrast_idx [B, K+1], crd/z [2] and
crd/memory_v1_after, crd/memory_v2_after."""
import math
import sys

import torch

from golden import save_safetensors

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
eps = 1e-7


# RepDistiller crd/criterion.py
class ContrastLoss(torch.nn.Module):
    def __init__(self, n_data):
        super().__init__()
        self.n_data = n_data

    def forward(self, x):
        bsz = x.shape[0]
        m = x.size(1) - 1
        Pn = 1 / float(self.n_data)
        P_pos = x.select(1, 0)
        log_D1 = torch.div(P_pos, P_pos.add(m * Pn + eps)).log_()
        P_neg = x.narrow(1, 1, m)
        log_D0 = torch.div(P_neg.clone().fill_(m * Pn), P_neg.add(m * Pn + eps)).log_()
        loss = - (log_D1.sum(0) + log_D0.view(-1, 1).sum(0)) / bsz
        return loss


# RepDistiller crd/memory.py ContrastMemory.forward, with the memories and K as arguments
def contrast_memory(memory_v1, memory_v2, v1, v2, y, idx, T, momentum, Z):
    batchSize = v1.size(0)
    outputSize = memory_v1.size(0)
    inputSize = memory_v1.size(1)
    K = idx.size(1) - 1
    weight_v1 = torch.index_select(memory_v1, 0, idx.view(-1)).detach()
    weight_v1 = weight_v1.view(batchSize, K + 1, inputSize)
    out_v2 = torch.bmm(weight_v1, v2.view(batchSize, inputSize, 1))
    out_v2 = torch.exp(torch.div(out_v2, T))
    weight_v2 = torch.index_select(memory_v2, 0, idx.view(-1)).detach()
    weight_v2 = weight_v2.view(batchSize, K + 1, inputSize)
    out_v1 = torch.bmm(weight_v2, v1.view(batchSize, inputSize, 1))
    out_v1 = torch.exp(torch.div(out_v1, T))
    if Z[0] < 0:
        Z[0] = (out_v1.mean() * outputSize).item()
    if Z[1] < 0:
        Z[1] = (out_v2.mean() * outputSize).item()
    out_v1 = torch.div(out_v1, Z[0]).contiguous()
    out_v2 = torch.div(out_v2, Z[1]).contiguous()
    with torch.no_grad():
        l_pos = torch.index_select(memory_v1, 0, y.view(-1))
        l_pos.mul_(momentum)
        l_pos.add_(torch.mul(v1, 1 - momentum))
        l_norm = l_pos.pow(2).sum(1, keepdim=True).pow(0.5)
        updated_v1 = l_pos.div(l_norm)
        memory_v1.index_copy_(0, y, updated_v1)
        ab_pos = torch.index_select(memory_v2, 0, y.view(-1))
        ab_pos.mul_(momentum)
        ab_pos.add_(torch.mul(v2, 1 - momentum))
        ab_norm = ab_pos.pow(2).sum(1, keepdim=True).pow(0.5)
        updated_v2 = ab_pos.div(ab_norm)
        memory_v2.index_copy_(0, y, updated_v2)
    return out_v1, out_v2


N, D, B, K, T, M = 12, 5, 4, 6, 0.07, 0.5
stdv = 1. / math.sqrt(D / 3)
memory_v1 = torch.rand(N, D).mul_(2 * stdv).add_(-stdv)
memory_v2 = torch.rand(N, D).mul_(2 * stdv).add_(-stdv)
v1 = torch.nn.functional.normalize(torch.randn(B, D), dim=1).requires_grad_()
v2 = torch.nn.functional.normalize(torch.randn(B, D), dim=1).requires_grad_()
y = torch.tensor([3, 0, 7, 10])
idx = torch.randint(0, N, (B, K + 1))
idx[:, 0] = y
tensors = {"crd/in0": v1.detach().clone(), "crd/in1": v2.detach().clone(), "crd/memory_v1": memory_v1.clone(),
           "crd/memory_v2": memory_v2.clone(), "crd/y": y.clone(), "crd/contrast_idx": idx.clone()}
Z = [-1.0, -1.0]
out_v1, out_v2 = contrast_memory(memory_v1, memory_v2, v1, v2, y, idx, T, M, Z)
loss = ContrastLoss(N)(out_v1)[0] + ContrastLoss(N)(out_v2)[0]
up = torch.randn(())
(loss * up).backward()
tensors.update({"crd/out": loss.detach(), "crd/upstream": up, "crd/grad_in0": v1.grad, "crd/grad_in1": v2.grad,
                "crd/z": torch.tensor(Z), "crd/memory_v1_after": memory_v1, "crd/memory_v2_after": memory_v2})

save_safetensors(sys.argv[1], tensors, {"generator": "tools/gen_golden_distill_crd.py", "seed": 0})
print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")
