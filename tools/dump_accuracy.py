"""Top-1 accuracy of every logits tensor in `retort-inspect --distill ... --dump FILE` files: the
student's, the teacher's and, for SoKD around a logit method, the refined teacher logits
(term.<name>.refined_teacher_logits) — against the dump's targets. Needs only Python 3 and NumPy.

  python3 tools/dump_accuracy.py view_step100.safetensors [more.safetensors ...]
"""
import json
import struct
import sys

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, m in header.items():
        if name == "__metadata__":
            continue
        a, b = m["data_offsets"]
        out[name] = np.frombuffer(data[a:b], _DTYPES[m["dtype"]]).reshape(m["shape"])
    return out


def main(paths):
    for path in paths:
        t = load(path)
        if "targets" not in t:
            sys.exit(f"{path}: no 'targets' tensor (not a retort-inspect --distill dump?)")
        y = t["targets"]
        cols = [f"{name} {100.0 * (v.argmax(1) == y).mean():.1f}%" for name, v in t.items()
                if name.endswith("logits") and v.ndim == 2 and v.shape[0] == y.shape[0]]
        print(f"{path} ({y.shape[0]} images): " + ", ".join(cols))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
