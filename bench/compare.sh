#!/usr/bin/env bash
# Retort against PyTorch, row by row: for each (model or pair, mode, batch, threads) runs retort-bench,
# then bench/torch_reference.py (NCHW and channels_last), back to back, so that whatever else the
# machine is doing hits both sides alike. Every row is a fresh process (peak memory is a per-process
# high-water mark). Appends the JSON lines to bench/results/<date>_<machine>.jsonl and prints a
# markdown table with the ratio ours / PyTorch's faster format. See bench/README.md.
#
#   bench/compare.sh                              the full [perf] matrix (long: hours on 2 cores)
#   MODELS=resnet20 MODES=train BATCHES=64 THREADS=2 bench/compare.sh        one row
#   bench/compare.sh --table bench/results/FILE.jsonl                        re-print a table
#
# Environment (comma-separated lists; unset = the issue's matrix):
#   MODELS  PAIRS (teacher:student)  MODES (train,kd,infer)  BATCHES  THREADS  FORMATS  STEPS  WARMUP
#   DEVICE  cpu (default) or cuda[:N]: both sides run on the GPU (FP32 without TF32, steps timed between
#           device synchronisations); memory is then each side's peak device memory
#   MATH    Retort's convolution arithmetic (retort-bench --math), comma-separated: ieee (default), bf16
#           or winograd (CPU), tf32 (GPU); each row is measured in each, back to back. Winograd rows are
#           compared with PyTorch's F32
#   TORCH_MATH  PyTorch's, comma-separated (torch_reference.py --math; default: MATH's, winograd as
#           ieee): ieee, bf16 (the
#           same arithmetic as Retort's bf16; torch >= 2.9), autocast (torch.autocast bf16), tf32. With
#           several, the fastest PyTorch row of a compatible mode is the yardstick (autocast counts
#           against Retort's bf16), and the table names the mode it came from.
#   RETORT_BUILD_DIR (default build/)  BENCH (the retort-bench binary)
#   PYTHONS  interpreters with torch, comma-separated; each row is measured in every one and the fastest
#            (interpreter x memory format) is the yardstick. Default: Debian's /usr/bin/python3
#            (torch 1.13) and, when present, /opt/torch-latest/bin/python (the newest torch from PyPI:
#            python3 -m venv /opt/torch-latest && /opt/torch-latest/bin/pip install torch numpy).
#   PYTHON   the interpreter that prints the table (default /usr/bin/python3; needs no torch)
#   MACHINE (name in the results file; default a slug of the CPU model and core count)  OUT (results file)
# As in retort-bench: with MODELS set and PAIRS unset there are no kd rows, and the other way round.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}

# The table: one line per Retort row, against the faster PyTorch format of the same row. Memory is
# each side's peak minus its base (VmHWM before the model is built), since `import torch` alone costs
# ~230 MiB that a Retort binary does not pay.
print_table() {
  "$python" - "$1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: (r["model"], r["mode"], r["batch"], r["threads"])
# Memory: peak device memory on a GPU, else the process's peak RSS above its base.
mem = lambda r: r["peak_device_mb"] if "peak_device_mb" in r else r["peak_rss_mb"] - r["base_rss_mb"]
torch = {}
for r in rows:
    if r["framework"].startswith("torch"):
        torch.setdefault(key(r), []).append(r)
# The PyTorch arithmetic a Retort row is compared with: the same, for bf16 also autocast, and for
# Winograd PyTorch's F32 (PyTorch has no Winograd switch on the CPU; both are F32 throughout).
compatible = {"ieee": {"ieee"}, "bf16": {"bf16", "autocast"}, "winograd": {"ieee"}, "tf32": {"tf32"}}
print("| model | mode | batch | threads | ours img/s | best torch img/s (version, format) | ours / torch | ours MiB | torch MiB |")
print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
for r in rows:
    if r["framework"] != "retort":
        continue
    math = r.get("math", "ieee")
    ts = [t for t in torch.get(key(r), []) if t.get("math", "ieee") in compatible[math]]
    best = max(ts, key=lambda t: t["images_per_s"]) if ts else None
    model = r["model"].replace(":", " → ") + (f" ({math})" if math != "ieee" else "")
    ours = f"{r['images_per_s']:.1f}"
    ours_mb = f"{mem(r):.0f}"
    if best:
        fmt = "NCHW" if best["memory_format"] == "nchw" else "channels_last"
        ver = best["framework"].replace("torch ", "")
        if best.get("math", "ieee") != "ieee":
            fmt += ", " + best["math"]
        print(f"| {model} | {r['mode']} | {r['batch']} | {r['threads']} | {ours} | {best['images_per_s']:.1f} ({ver}, {fmt}) "
              f"| {r['images_per_s'] / best['images_per_s']:.2f} | {ours_mb} | "
              f"{mem(best):.0f} |")
    else:
        print(f"| {model} | {r['mode']} | {r['batch']} | {r['threads']} | {ours} | – | – | {ours_mb} | – |")
EOF
}

if [[ ${1:-} == --table ]]; then
  print_table "${2:?usage: bench/compare.sh --table FILE.jsonl}"
  exit 0
fi

build=${RETORT_BUILD_DIR:-$root/build}
bench=${BENCH:-$build/apps/retort-bench}
if [[ ! -x $bench ]]; then
  echo "compare.sh: no retort-bench at $bench; build it (cmake --build build --target retort-bench) or set BENCH" >&2
  exit 1
fi

split() { tr ',' ' ' <<<"$1"; }
if [[ -z ${MODELS:-} && -z ${PAIRS:-} ]]; then
  MODELS=resnet20,resnet56,resnet8x4,resnet32x4,wrn_40_2,mobile_half,ShuffleV2
  PAIRS=resnet56:resnet20,resnet32x4:resnet8x4,wrn_40_2:wrn_16_2
fi
modes=${MODES:-train,kd,infer} batches=${BATCHES:-64,128} threads=${THREADS:-1,2}
formats=${FORMATS:-nchw,channels_last} steps=${STEPS:-10} warmup=${WARMUP:-3} device=${DEVICE:-cpu}
math=${MATH:-ieee}
# PyTorch's modes by default: each of MATH's, winograd as ieee (PyTorch has no Winograd switch), once each.
torch_math=${TORCH_MATH:-$(split "$math" | tr ' ' '\n' | sed 's/^winograd$/ieee/' | awk 'NF && !seen[$0]++' | paste -sd,)}

# CPU model names are long and hostnames in containers are random: "intel-xeon-2c" names the machine.
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- || echo unknown)
slug=$(tr '[:upper:]' '[:lower:]' <<<"$cpu" | sed -E 's/\((r|tm)\)//g; s/(processor|cpu|@.*)//g; s/[^a-z0-9]+/-/g; s/^-+|-+$//g')
machine=${MACHINE:-$slug-$(nproc)c}
mkdir -p "$root/bench/results"
out=${OUT:-$root/bench/results/$(date -u +%Y-%m-%d_%H%M)_$machine.jsonl}
# The commit measured (with "+dirty" when the work tree differs from it), written into Retort's rows.
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"

rows=()
for m in $(split "${MODELS:-}"); do
  for mode in $(split "$modes"); do [[ $mode == kd ]] || rows+=("$mode --models $m"); done
done
for p in $(split "${PAIRS:-}"); do
  for mode in $(split "$modes"); do [[ $mode != kd ]] || rows+=("$mode --pairs $p"); done
done
if ((${#rows[@]} == 0)); then
  echo "compare.sh: no rows (kd needs PAIRS, train/infer need MODELS)" >&2
  exit 1
fi

if [[ -n ${PYTHONS:-} ]]; then pythons=$(split "$PYTHONS"); else
  pythons=/usr/bin/python3; [[ -x /opt/torch-latest/bin/python ]] && pythons="$pythons /opt/torch-latest/bin/python"
fi
versions=""
for py in $pythons; do
  if ! v=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    echo "compare.sh: $py cannot import torch. Install Debian's (apt-get install python3-torch) or set PYTHONS" \
      "to interpreters that have it (bench/README.md)" >&2
    exit 1
  fi
  versions="$versions torch $v ($py)"
done
echo "compare.sh: $bench ($commit) vs$versions on$cpu," \
  "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "compare.sh: results -> $out"
failed=0
for row in "${rows[@]}"; do
  read -r mode flag unit <<<"$row"
  for b in $(split "$batches"); do
    for t in $(split "$threads"); do
      common=(--mode "$mode" "$flag" "$unit" --batch "$b" --threads "$t" --steps "$steps" --warmup "$warmup"
        --device "$device" --json)
      echo "compare.sh: $unit $mode batch $b threads $t" >&2
      for rm in $(split "$math"); do
        if line=$("$bench" "${common[@]}" --math "$rm"); then
          echo "${line%\}},\"commit\":\"$commit\"}" >>"$out"
        else
          echo "compare.sh: retort-bench (--math $rm) failed on this row" >&2
          failed=1
        fi
      done
      for py in $pythons; do
        for tm in $(split "$torch_math"); do
          if ! "$py" "$root/bench/torch_reference.py" "${common[@]}" --memory-format "$formats" --math "$tm" >>"$out"; then
            echo "compare.sh: torch_reference.py ($py, --math $tm) failed on this row" >&2
            failed=1
          fi
        done
      done
    done
  done
done

print_table "$out"
exit $failed
