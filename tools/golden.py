"""Shared helpers for Retort's golden-fixture generators: a safetensors writer (the format is a JSON
header plus raw little-endian data, simple enough to write here without another dependency) and
seeding. Fixtures are made with Debian's python3-torch (1.13) so anyone can regenerate them."""
import json
import struct

import torch

_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> torch.Tensor (kept in insertion order)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        data = t.numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    meta = {"torch_version": torch.__version__}
    meta.update(metadata or {})
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def record_case(tensors, name, fn, inputs, wants_grad):
    """Runs fn on leaf copies of `inputs` (input i requires grad when wants_grad(i, x)), backpropagates
    a random upstream gradient, and stores NAME/in<i>, NAME/out, NAME/upstream and NAME/grad_in<i>
    (for every input that got a gradient) into `tensors` — the layout the C++ golden tests read."""
    ins = [x.clone().requires_grad_(bool(wants_grad(i, x))) for i, x in enumerate(inputs)]
    out = fn(*ins)
    up = torch.randn_like(out)
    (out * up).sum().backward()
    for i, x in enumerate(ins):
        tensors[f"{name}/in{i}"] = x.detach()
    tensors[f"{name}/out"] = out.detach()
    tensors[f"{name}/upstream"] = up
    for i, x in enumerate(ins):
        if x.grad is not None:
            tensors[f"{name}/grad_in{i}"] = x.grad
