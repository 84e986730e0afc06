"""The PyTorch twin of a Retort Fashion-MNIST recipe: same model definition (tools/models_torch.py),
same data pipeline (random crop with zero padding, horizontal flip, normalisation), same optimizer and
the same per-step schedule (the LR is evaluated at the fractional epoch epoch + batch/batches, as
Retort's Trainer does). Reads the Retort config so both sides train exactly one recipe.

  /usr/bin/python3 tools/train_torch_fmnist.py configs/fmnist/resnet8x4.json [--threads 2] [--channels-last]

Prints one line per epoch and a final JSON line with best/last top-1 and wall time."""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import models_torch  # noqa: E402


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_split(root, train):
    prefix = "train" if train else "t10k"
    imgs = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    return imgs.unsqueeze(1).float().div_(255.0), labels.long()


def augment(x, padding, hflip, gen):
    n, _, h, w = x.shape
    if padding > 0:
        xp = F.pad(x, (padding, padding, padding, padding))
        out = torch.empty_like(x)
        tops = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
        lefts = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
        for i in range(n):
            out[i] = xp[i, :, tops[i]:tops[i] + h, lefts[i]:lefts[i] + w]
        x = out
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def lr_at(sched, base, epoch):
    kind = sched.get("type", "constant")
    if kind == "cosine":
        total, lo = sched["total_epochs"], sched.get("min_lr", 0.0)
        e = min(epoch, total)
        return lo + (base - lo) * (1 + math.cos(math.pi * e / total)) / 2
    if kind == "multistep":
        return base * sched.get("gamma", 0.1) ** sum(1 for m in sched["milestones"] if math.floor(epoch) >= m)
    return base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    cfg = json.load(open(args.config))
    torch.set_num_threads(args.threads)
    seed = cfg.get("experiment", {}).get("seed", 0)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    data, solver = cfg["data"], cfg["solver"]
    aug = data.get("augment", {})
    mean, std = data["normalize"]["mean"][0], data["normalize"]["std"][0]
    xtr, ytr = load_split(args.root, True)
    xte, yte = load_split(args.root, False)
    xte = (xte - mean) / std
    model = getattr(models_torch, cfg["model"]["arch"])(num_classes=10, in_channels=1)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=solver["lr"], momentum=solver.get("momentum", 0.9),
                          weight_decay=solver.get("weight_decay", 5e-4), nesterov=solver.get("nesterov", False))
    bs, epochs = data.get("batch_size", 128), solver["epochs"]
    nb = math.ceil(len(xtr) / bs)
    best, last, t0 = 0.0, 0.0, time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        t_ep = time.time()
        for b in range(nb):
            idx = perm[b * bs:(b + 1) * bs]
            x = augment(xtr[idx], aug.get("random_crop_padding", 0), aug.get("hflip", False), gen)
            x = ((x - mean) / std).contiguous(memory_format=fmt)
            for g in opt.param_groups:
                g["lr"] = lr_at(solver.get("schedule", {}), solver["lr"], epoch + b / nb)
            loss = F.cross_entropy(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xte), 256):
                correct += (model(xte[i:i + 256].contiguous(memory_format=fmt)).argmax(1) == yte[i:i + 256]).sum().item()
        last = 100.0 * correct / len(xte)
        best = max(best, last)
        print(f"epoch {epoch + 1}/{epochs} test top-1 {last:.2f}% ({len(xtr) / (time.time() - t_ep):.0f} img/s incl. eval)",
              flush=True)
    print(json.dumps({"framework": f"torch {torch.__version__}", "arch": cfg["model"]["arch"], "best_top1": best,
                      "last_top1": last, "wall_seconds": time.time() - t0, "threads": args.threads}))


if __name__ == "__main__":
    main()
