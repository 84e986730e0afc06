"""Golden fixtures for whole models: one train-mode forward/backward of resnet8x4, resnet20, wrn_16_2,
vgg8, mobile_half, ShuffleV2, ShuffleV1 and ResNet50 (tools/models_torch.py), and a 10-step SGD
trajectory of resnet8x4.
tests/models/test_golden_models.cpp rebuilds each case with Retort and compares per tensor.

Regenerate (Debian's python3-torch):  /usr/bin/python3 tools/gen_golden_models.py tests/fixtures [CASE...]
(the cases named, or all of them)

Size. The eight models hold 33 M parameters; their weights and gradients in float32 would take 264 MB,
and the fixtures must stay under 5 MB together. So nothing that can be recomputed is stored:

* Initial state: every state_dict tensor (parameters and buffers) is filled from a counter-based hash
  that tests/models/test_golden_models.cpp implements too (`fill` below), keyed by "<case>/<name>".
  The fixture records the state_dict's names, dtypes and shapes in order (metadata "state_keys") —
  the C++ test checks its own state_dict against that list and loads the fill with a strict
  load_state_dict — and the sum of each filled tensor ("init_sums", F64, in state_keys order) so a
  difference between the two fill implementations is reported as such.
* Large tensors (over FULL_MAX elements) are summarised instead of stored: "<kind>.sample/<name>"
  holds the SAMPLE elements at flat indices i * numel // SAMPLE (i = 0 .. SAMPLE-1), and
  "<kind>.stat/<name>" (F64) holds [sum, sum of squares, dot with the ±1 vector sign(fill("sign/<name>"))].
  Smaller tensors are stored whole as "<kind>/<name>".

References are computed in float64 (the model and input converted with .double() after the float32
fill, so both are exact), which lets the C++ test check its own float64 run to rounding and its
float32 run against the exact answer. Inputs are stored as float32, targets as int64, the rest as F64.

Per model case file golden_model_<name>.safetensors:
  input, targets, logits, loss (0-D)
  grad/<param>     (or grad.sample / grad.stat) the gradient of the mean cross-entropy
  after/<buffer>   running_mean / running_var / num_batches_tracked after the forward (whole)
Trajectory file golden_model_resnet8x4_sgd.safetensors (SGD lr 0.05, momentum 0.9, weight decay 5e-4,
train mode, the same batch of 8 at every step):
  input, targets, losses [10] (the loss of each step, before its update)
  delta/<param>    (or delta.sample / delta.stat) final minus initial parameter
  final/<buffer>   the buffers after the 10 steps (whole)

The fill: z = splitmix64(fnv1a64(key) + i) for element i (mod 2^64); u = (2 * (z >> 40) + 1) / 2^24 - 1,
uniform in (-1, 1) and exact in float32. Then, by the tensor's name and shape:
  num_batches_tracked: 3 (int64)          running_mean: 0.1 u          running_var: 1 + 0.5 u
  weights with >= 2 dims: u * sqrt(6 / fan_in), fan_in = numel / shape[0] (He-uniform scale)
  other weights (BatchNorm gamma): 1 + 0.2 u                         biases: 0.1 u
computed in float64 and rounded once to float32."""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from golden import save_safetensors
from models_torch import MODELS

FULL_MAX = 2048
SAMPLE = 512
MASK = (1 << 64) - 1

# (case name, model, num_classes, in_channels, input side, batch)
CASES = [
    ("resnet8x4", "resnet8x4", 10, 3, 32, 4),
    ("resnet20", "resnet20", 10, 1, 28, 4),  # the Fashion-MNIST shape: odd maps, adaptive pooling at 7x7
    ("wrn_16_2", "wrn_16_2", 100, 3, 32, 4),
    ("vgg8", "vgg8", 100, 3, 32, 4),
    ("mobile_half", "mobile_half", 100, 3, 32, 4),
    ("ShuffleV2", "ShuffleV2", 100, 3, 32, 4),
    ("ShuffleV1", "ShuffleV1", 100, 3, 32, 4),  # grouped 1x1 convolutions, shuffles, concatenating shortcuts
    ("ResNet50", "ResNet50", 100, 3, 32, 2),  # Bottleneck blocks, projection shortcuts; 23.7 M parameters
]
TRAJECTORY = dict(model="resnet8x4", num_classes=10, in_channels=3, side=32, batch=8, steps=10,
                  lr=0.05, momentum=0.9, weight_decay=5e-4)


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def uniform(key, n):
    z = np.uint64(fnv1a64(key)) + np.arange(n, dtype=np.uint64)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float64) * 2.0 + 1.0) / float(1 << 24) - 1.0


def fill(key, name, shape):
    n = math.prod(shape)
    if name.endswith("num_batches_tracked"):
        return torch.full(shape, 3, dtype=torch.int64)
    u = uniform(key, n)
    if name.endswith("running_mean"):
        v = 0.1 * u
    elif name.endswith("running_var"):
        v = 1.0 + 0.5 * u
    elif len(shape) >= 2:
        v = u * math.sqrt(6.0 / (n // shape[0]))
    elif name.endswith("weight"):
        v = 1.0 + 0.2 * u
    else:
        v = 0.1 * u
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def fill_model(model, case):
    """Overwrites every state_dict tensor with the fill; returns (state_keys, init_sums)."""
    keys, sums, new = [], [], {}
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    for name, t in model.state_dict().items():
        v = fill(f"{case}/{name}", name, tuple(t.shape))
        new[name] = v
        keys.append(f"{name}:{dtypes[t.dtype]}[{','.join(map(str, t.shape))}]")
        sums.append(float(v.double().sum()))
    model.load_state_dict(new, strict=True)
    return " ".join(keys), torch.tensor(sums, dtype=torch.float64)


def summarise(out, kind, name, t):
    """Stores t whole when small, else a sample and [sum, sumsq, signed sum] (see the module doc)."""
    t = t.detach().contiguous()
    if t.numel() <= FULL_MAX:
        out[f"{kind}/{name}"] = t
        return
    flat = t.reshape(-1)
    n = flat.numel()
    out[f"{kind}.sample/{name}"] = flat[torch.arange(SAMPLE) * n // SAMPLE].clone()
    d = flat.double()
    sign = torch.from_numpy(np.where(uniform(f"sign/{name}", n) > 0, 1.0, -1.0))
    out[f"{kind}.stat/{name}"] = torch.stack([d.sum(), (d * d).sum(), (d * sign).sum()])


def batch(case, n, c, side, num_classes):
    x = torch.from_numpy(uniform(f"{case}/input", n * c * side * side).astype(np.float32)).reshape(n, c, side, side)
    targets = torch.from_numpy((uniform(f"{case}/targets", n) * 0.5 + 0.5) * num_classes).long()
    return x * math.sqrt(3.0), targets.clamp(0, num_classes - 1)  # unit-variance inputs


def model_case(case, model_name, num_classes, in_channels, side, n):
    model = MODELS[model_name](num_classes=num_classes, in_channels=in_channels)
    keys, sums = fill_model(model, case)
    model.double().train()
    x, targets = batch(case, n, in_channels, side, num_classes)
    logits = model(x.double())
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    out = {"input": x, "targets": targets, "logits": logits, "loss": loss, "init_sums": sums}
    for name, p in model.named_parameters():
        summarise(out, "grad", name, p.grad)
    for name, b in model.named_buffers():
        out[f"after/{name}"] = b
    meta = {"generator": "tools/gen_golden_models.py", "model": model_name, "num_classes": num_classes,
            "in_channels": in_channels, "input_size": side, "state_keys": keys,
            "full_max": FULL_MAX, "sample": SAMPLE}
    return out, meta


def trajectory_case(case):
    cfg = TRAJECTORY
    model = MODELS[cfg["model"]](num_classes=cfg["num_classes"], in_channels=cfg["in_channels"])
    keys, sums = fill_model(model, case)
    model.double().train()
    initial = {k: p.detach().clone() for k, p in model.named_parameters()}
    x, targets = batch(case, cfg["batch"], cfg["in_channels"], cfg["side"], cfg["num_classes"])
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    losses = []
    for _ in range(cfg["steps"]):
        opt.zero_grad()
        loss = F.cross_entropy(model(x.double()), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out = {"input": x, "targets": targets, "losses": torch.tensor(losses, dtype=torch.float64), "init_sums": sums}
    for name, p in model.named_parameters():
        summarise(out, "delta", name, p.detach() - initial[name])
    for name, b in model.named_buffers():
        out[f"final/{name}"] = b
    meta = {"generator": "tools/gen_golden_models.py", "state_keys": keys, "full_max": FULL_MAX, "sample": SAMPLE,
            "input_size": cfg["side"]}
    meta.update({k: v for k, v in cfg.items() if k != "side"})
    return out, meta


def main(out_dir, only=()):
    # A fixed reduction order, so a regeneration with the same torch build reproduces the files (another
    # build's float64 results differ in the last bits: regenerate only the cases you add, by name).
    torch.set_num_threads(1)
    jobs = [(c[0], lambda c=c: model_case(*c)) for c in CASES]
    jobs.append(("resnet8x4_sgd", lambda: trajectory_case("resnet8x4_sgd")))
    if only:
        unknown = set(only) - {name for name, _ in jobs}
        if unknown:
            sys.exit(f"gen_golden_models.py: no case {sorted(unknown)} (have {[name for name, _ in jobs]})")
        jobs = [(name, make) for name, make in jobs if name in only]
    total = 0
    for case, make in jobs:
        tensors, meta = make()
        path = os.path.join(out_dir, f"golden_model_{case}.safetensors")
        save_safetensors(path, tensors, meta)
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {len(tensors)} tensors, {size / 1024:.0f} KiB")
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"),
         sys.argv[2:])
