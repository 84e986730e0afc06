"""Imports a PyTorch checkpoint of the model zoo (RepDistiller / mdistiller style .pth) into a Retort
model file (safetensors) that retort-eval reads and retort-distill can use as a teacher.

  /usr/bin/python3 tools/import_pth.py resnet32x4_vanilla/ckpt_epoch_240.pth out.safetensors \
      --arch resnet32x4 --num-classes 100 --in-channels 3 --input-size 32 [--dataset cifar100]

The state dict is found under "model", "state_dict" or "net", or is the file itself; "module."
prefixes (DataParallel) are stripped. When the architecture has a PyTorch twin in tools/models_torch.py
the names and shapes are checked against it here; in every case Retort checks them again, strictly,
when it loads the file (retort-inspect FILE --check-arch ARCH lists any mismatch)."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from golden import save_safetensors  # noqa: E402


def find_state_dict(obj):
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return obj
    raise SystemExit("no state dict found (looked for 'model', 'state_dict', 'net' or a dict of tensors)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pth")
    ap.add_argument("out")
    ap.add_argument("--arch", required=True)
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--dataset", default="cifar100")
    args = ap.parse_args()

    sd = find_state_dict(torch.load(args.pth, map_location="cpu"))
    tensors = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        tensors[k] = v.float() if v.is_floating_point() else v.long()

    try:
        import models_torch
        twin = getattr(models_torch, args.arch, None)
    except ImportError:
        twin = None
    if twin is not None:
        ref = twin(num_classes=args.num_classes, in_channels=args.in_channels).state_dict()
        missing = [k for k in ref if k not in tensors]
        unexpected = [k for k in tensors if k not in ref]
        shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(ref[k].shape)}" for k in ref
                  if k in tensors and tensors[k].shape != ref[k].shape]
        if missing or unexpected or shapes:
            raise SystemExit(f"{args.pth} does not match {args.arch}:\n  missing {missing}\n  unexpected {unexpected}\n"
                             f"  shape mismatches {shapes}")
        tensors = {k: tensors[k] for k in ref}  # the model's own order

    save_safetensors(args.out, tensors, {
        "format": "retort-model-1", "arch": args.arch, "num_classes": args.num_classes,
        "in_channels": args.in_channels, "input_size": args.input_size, "dataset": args.dataset,
        "source": os.path.basename(args.pth)})
    print(f"wrote {len(tensors)} tensors to {args.out}")


if __name__ == "__main__":
    main()
