"""The PyTorch side of the [perf] comparison: the rows retort-bench measures (apps/retort_bench.cpp),
measured the same way in PyTorch on the CPU, in both NCHW and channels_last memory formats — the
faster of the two is the yardstick. Run it with Debian's interpreter (python3-torch 1.13):

    /usr/bin/python3 bench/torch_reference.py --models resnet20 --mode train --batch 64 --threads 2 --json

Flags, defaults, the row matrix and the JSON fields are retort-bench's, plus "memory_format" and
"best" (true on the faster format of a row when both ran). The models are the twins in
tools/models_torch.py (identical definitions and parameter names). The steps mirror Retort's code path:

  train  forward, cross_entropy, loss.item() (the Trainer's finiteness check), zero_grad(set_to_none),
         backward, SGD(lr 0.05, momentum 0.9, weight_decay 5e-4)
  kd     teacher in eval mode under no_grad, student forward, 0.1 * CE + 0.9 * KD(T=4) with
         KD = T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over the batch, then as train
  infer  eval mode, no_grad, forward

--math picks the arithmetic, as retort-bench's --math: ieee (FP32; TF32 off on GPUs), bf16 (CPU:
oneDNN's convolutions with bfloat16 operands on FP32 tensors, torch.backends.mkldnn.conv.fp32_precision
= "bf16" — the same arithmetic as Retort's bf16; torch 2.9 and later), autocast (CPU: torch.autocast
with bfloat16, PyTorch's usual mixed precision: activations and most ops in bf16 too — faster and
less precise than bf16) or tf32 (GPU: TF32 tensor cores in cuBLAS and cuDNN).

As in retort-bench, peak_rss_mb is VmHWM (the whole process's high-water mark), so with more than one
row each row runs in a fresh child interpreter. base_rss_mb is VmHWM before the model is built —
for PyTorch it is mostly the cost of `import torch`, which a fair memory comparison subtracts."""
import argparse
import datetime
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time

DEFAULT_MODELS = ["resnet20", "resnet56", "resnet8x4", "resnet32x4", "wrn_40_2", "mobile_half", "ShuffleV2"]
DEFAULT_PAIRS = ["resnet56:resnet20", "resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2"]
FORMATS = ("nchw", "channels_last")


def csv(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=csv(str), default=None, help="models for train/infer rows")
    p.add_argument("--pairs", type=csv(str), default=None, help="teacher:student pairs for kd rows")
    p.add_argument("--batch", type=csv(int), default=[64, 128])
    p.add_argument("--threads", type=csv(int), default=[1, 2])
    p.add_argument("--steps", type=int, default=10, help="timed steps per row (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--mode", type=csv(str), default=["train", "kd", "infer"])
    p.add_argument("--input", default="3x32x32", help="input sample shape CxHxW")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (GPU steps end with a synchronize)")
    p.add_argument("--memory-format", type=csv(str), default=list(FORMATS), help="nchw, channels_last")
    p.add_argument("--math", default="ieee", choices=["ieee", "bf16", "autocast", "tf32"],
                   help="ieee; bf16 or autocast (CPU); tf32 (GPU) — see the module's docstring")
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    a = p.parse_args(argv)
    if a.models is None and a.pairs is None:
        a.models, a.pairs = DEFAULT_MODELS, DEFAULT_PAIRS
    a.models, a.pairs = a.models or [], a.pairs or []
    for m in a.mode:
        if m not in ("train", "kd", "infer"):
            p.error(f"--mode: '{m}' (expected train, kd or infer)")
    for f in a.memory_format:
        if f not in FORMATS:
            p.error(f"--memory-format: '{f}' (expected nchw or channels_last)")
    for pair in a.pairs:
        if pair.count(":") != 1 or pair.startswith(":") or pair.endswith(":"):
            p.error(f"--pairs: '{pair}' is not teacher:student")
    try:
        c, h, w = (int(v) for v in a.input.split("x"))
        assert c > 0 and h > 0 and h == w
    except (ValueError, AssertionError):
        p.error(f"--input: '{a.input}' (expected CxHxW with H == W, e.g. 3x32x32)")
    if a.steps < 1 or a.warmup < 0 or min(a.batch) < 1 or min(a.threads) < 1 or a.classes < 2:
        p.error("--steps >= 1, --warmup >= 0, batch sizes, thread counts >= 1 and --classes >= 2 are required")
    a.shape = (c, h, w)
    return a


def rows_of(a):
    """(mode, model, batch, threads, memory_format), model outermost as in retort-bench."""
    rows = []
    for units, kd in ((a.models, False), (a.pairs, True)):
        for unit in units:
            for mode in a.mode:
                if (mode == "kd") != kd:
                    continue
                for b in a.batch:
                    for t in a.threads:
                        for f in a.memory_format:
                            rows.append((mode, unit, b, t, f))
    return rows


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def cpu_model_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def backend_info(torch):
    """Which kernels PyTorch can use here: oneDNN for convolutions, and the BLAS that Debian's
    libblas.so.3 alternative points at (OpenBLAS, as Retort's, on the machines this was written on)."""
    blas = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
    blas = os.path.realpath(blas) if os.path.exists(blas) else "unknown"
    dnnl = "on" if torch.backends.mkldnn.is_available() else "off"
    return f"oneDNN {dnnl}, BLAS {blas}, {torch.get_num_threads()} threads"


def run_row(a, mode, model_name, batch, threads, fmt):
    # Imported here, not at the top, so that the driver process of a many-row run stays light.
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
    import models_torch

    base_mb = status_mb("VmHWM")  # after import torch: what a row adds on top of the framework
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format

    def build(name):
        if name not in models_torch.MODELS:
            raise SystemExit(f"torch_reference.py: no PyTorch twin of '{name}' in tools/models_torch.py "
                             f"(have: {', '.join(models_torch.MODELS)})")
        return models_torch.MODELS[name](num_classes=a.classes, in_channels=a.shape[0]).to(dev, memory_format=mf)

    dev = torch.device(a.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"torch_reference.py: --device {a.device}, but this torch ({torch.__version__}) sees no GPU")
        # The same numerics as Retort's default: IEEE FP32, no TF32 tensor cores.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True  # algorithm chosen once per shape, as Retort's cuDNN path does

    if a.math in ("bf16", "autocast") and dev.type != "cpu":
        raise SystemExit(f"torch_reference.py: --math {a.math} is a CPU mode (on a GPU: --math tf32)")
    if a.math == "tf32":
        if dev.type != "cuda":
            raise SystemExit("torch_reference.py: --math tf32 is a GPU mode (on the CPU: --math bf16)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if a.math == "bf16":
        conv = getattr(torch.backends.mkldnn, "conv", None)
        if conv is None or not hasattr(conv, "fp32_precision"):
            raise SystemExit(f"torch_reference.py: --math bf16 needs torch.backends.mkldnn.conv.fp32_precision "
                             f"(torch 2.9 or later); this is torch {torch.__version__}")
        conv.fp32_precision = "bf16"
    import contextlib

    def amp():
        if a.math == "autocast":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    x = torch.randn(batch, *a.shape).contiguous(memory_format=mf).to(dev)
    y = torch.randint(0, a.classes, (batch,)).to(dev)
    extra = {}

    def sgd(params):
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False)

    if mode == "train":
        model = build(model_name).train()
        opt = sgd(model.parameters())

        def step():
            with amp():
                loss = F.cross_entropy(model(x), y)
            if not math.isfinite(loss.item()):
                raise SystemExit("torch_reference.py: non-finite loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif mode == "kd":
        tname, sname = model_name.split(":")
        teacher, model = build(tname).eval(), build(sname).train()
        for p in teacher.parameters():
            p.requires_grad_(False)
        opt = sgd(model.parameters())
        T = 4.0
        extra = {"teacher": tname, "student": sname}

        def step():
            with amp():
                with torch.no_grad():
                    t_logits = teacher(x)
                s_logits = model(x)
            s_logits, t_logits = s_logits.float(), t_logits.float()  # the losses in FP32, as autocast would
            kd = F.kl_div(F.log_softmax(s_logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean") * T * T
            loss = 0.1 * F.cross_entropy(s_logits, y) + 0.9 * kd
            if not math.isfinite(loss.item()):
                raise SystemExit("torch_reference.py: non-finite loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model = build(model_name).eval()

        def step():
            with torch.no_grad(), amp():
                model(x)

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    ms = []
    for _ in range(a.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        ms.append((time.perf_counter() - t0) * 1000.0)
    median = statistics.median(ms)

    def r3(v):
        return round(v, 3)

    row = {"framework": f"torch {torch.__version__}", "model": model_name, "mode": mode, "batch": batch,
           "threads": threads, "memory_format": fmt, "math": a.math, **extra,
           "ms_median": r3(median), "ms_min": r3(min(ms)), "ms_max": r3(max(ms)),
           "images_per_s": r3(batch * 1000.0 / median), "peak_rss_mb": r3(status_mb("VmHWM")),
           "base_rss_mb": r3(base_mb), "steps": a.steps, "warmup": a.warmup, "input": a.input,
           "classes": a.classes, "device": str(dev), "cpu": cpu_model_name(),
           "backend": backend_info(torch),
           "host": socket.gethostname(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if dev.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(dev)
        row["peak_device_mb"] = r3(torch.cuda.max_memory_allocated(dev) / 2**20)
    return row


def child_argv(a, row):
    mode, unit, b, t, f = row
    return [sys.executable, os.path.abspath(__file__), "--mode", mode, "--pairs" if mode == "kd" else "--models",
            unit, "--batch", str(b), "--threads", str(t), "--steps", str(a.steps), "--warmup", str(a.warmup),
            "--input", a.input, "--classes", str(a.classes), "--seed", str(a.seed), "--device", a.device,
            "--memory-format", f, "--math", a.math, "--json"]


def header():
    print(f"{'model':<24} {'mode':<6} {'batch':>5} {'threads':>7} {'format':<13} {'ms/step':>9} {'img/s':>9} "
          f"{'peak MiB':>9}")


def line(r):
    mark = " *" if r.get("best") else ""
    print(f"{r['model']:<24} {r['mode']:<6} {r['batch']:>5} {r['threads']:>7} {r['memory_format']:<13} "
          f"{r['ms_median']:>9.1f} {r['images_per_s']:>9.1f} {r['peak_rss_mb']:>9.0f}{mark}", flush=True)


def main(argv):
    a = parse_args(argv)
    rows = rows_of(a)
    if not rows:
        raise SystemExit("torch_reference.py: no rows: kd needs --pairs, train/infer need --models")
    if len(rows) == 1:
        r = run_row(a, *rows[0])
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            header()
            line(r)
        return 0

    # One child interpreter per row (VmHWM is per process); a row's formats are printed together, so
    # the faster one can be marked "best".
    if not a.json:
        header()
    failed = 0
    for i in range(0, len(rows), len(a.memory_format)):
        group = []
        for row in rows[i:i + len(a.memory_format)]:
            p = subprocess.run(child_argv(a, row), stdout=subprocess.PIPE, text=True)
            if p.returncode != 0:
                failed += 1
                print(f"torch_reference.py: row {row} failed (exit {p.returncode})", file=sys.stderr)
                continue
            group.append(json.loads(p.stdout.strip().splitlines()[-1]))
        if len(group) > 1:
            max(group, key=lambda r: r["images_per_s"])["best"] = True
        for r in group:
            if a.json:
                print(json.dumps(r), flush=True)
            else:
                line(r)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
