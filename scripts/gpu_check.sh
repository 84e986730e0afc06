#!/usr/bin/env bash
# What the [cuda] issue asks of a GPU, on the GPU machine, one part per device `run` (see
# scripts/gpu_bundle.sh; every call carries [".gpu"]). The device tool allows 10 minutes a command, 30
# minutes of device time a session and 8 files back from $OUT, so a call runs one part (or two short
# ones), each part under `timeout` so that its logs come back even when it runs long, and the logs come
# back as one archive plus a summary:
#   PARTS=suite      bash scripts/gpu_check.sh   every test binary (CPU tests, and the CUDA parity tests,
#                                                which run instead of skipping), 8 at a time
#   PARTS=cuda_apps  ...                         tests/apps/device_runs.sh: retort-gradcheck --all --device
#                                                cuda, retort-train/eval/distill with every strategy on cuda
#                                                against the CPU, the resume on cuda (its three parts)
#   PARTS=train      EPOCHS=15 ...               the Fashion-MNIST run on the GPU (configs/fmnist/resnet8x4.json)
#   PARTS=bench      ...                         retort-bench against PyTorch eager on the same GPU (bench/compare.sh)
#   PARTS=profile    ...                         retort-bench --profile: time per kernel type and per convolution
# Output: $OUT/summary.txt (also printed) and $OUT/logs-<parts>.tar.gz (every log), or gpu-logs/ without $OUT.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
parts=${PARTS:-suite}
limit=${PART_LIMIT:-540}  # seconds a part may run (the call's limit is 600)
for p in $parts; do
  case $p in suite|cuda_apps|train|bench|profile) ;;
    *) echo "gpu_check.sh: unknown part '$p' (suite, cuda_apps, train, bench, profile)" >&2; exit 2;; esac
done
logs=/tmp/gpu-logs
rm -rf "$logs" && mkdir -p "$logs"
summary=$logs/summary.txt
say() { echo "$@" | tee -a "$summary"; }
g=$root/.gpu
[[ -f $g/bundle.tar.xz ]] || { echo "gpu_check.sh: no .gpu/bundle.tar.xz: run scripts/gpu_bundle.sh here and carry .gpu" >&2; exit 1; }
tar -C "$g" -xJf "$g/bundle.tar.xz"
# The binaries hold this checkout's absolute paths (/work/main/tests/fixtures, configs) and the
# dataset's Debian location: make both exist here.
[[ -e /work/main ]] || { mkdir -p /work && ln -s "$root" /work/main; }
mkdir -p /usr/share/datasets && { [[ -e /usr/share/datasets/fashion-mnist ]] || ln -s "$g/data" /usr/share/datasets/fashion-mnist; }

# cuDNN, cuBLAS, cuSOLVER and what it loads (cuSPARSE, nvJitLink): torch's nvidia-* wheels hold them.
# Asked of python first (no walk over the disk), then looked for on the root file system outside /proc and /sys.
find_lib() {
  local so=$1 d
  d=$(python3 - "$so" <<'PY' 2>/dev/null
import glob, os, sys
import nvidia
for base in nvidia.__path__:
    for f in glob.glob(os.path.join(base, "*", "lib", sys.argv[1])):
        print(os.path.dirname(f)); sys.exit()
PY
)
  [[ -z $d ]] && d=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$so" -print 2>/dev/null | head -1 | xargs -r dirname)
  echo "$d"
}
libdirs=""
for so in libcudnn.so.9 libcublas.so.13 libcusolver.so.12 libcusparse.so.12 libnvJitLink.so.13; do
  d=$(find_lib "$so")
  [[ -n $d ]] || { echo "gpu_check.sh: $so not found on this machine: the binaries will not load" >&2; exit 1; }
  libdirs=$libdirs:$d
done
export LD_LIBRARY_PATH=$g/lib$libdirs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=$g/bin:$PATH
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "commit $(cat "$g/commit"); parts: $parts"
  echo "libraries from: ${libdirs#:}"
  retort-bench --help >/dev/null && echo "binaries load"
} 2>&1 | tee "$logs/env.txt" | tee -a "$summary"

rc=0
run_part() {  # run_part NAME COMMAND...: under the time limit; its rc folds into the script's
  local name=$1 t0=$SECONDS r
  shift
  timeout "$limit" "$@"
  r=$?
  [[ $r == 124 ]] && say "$name: stopped at its ${limit} s limit"
  say "$name: rc $r, $((SECONDS - t0)) s"
  [[ $r == 0 ]] || rc=1
}
part_suite() {
  ls "$g"/bin/test_* | xargs -P 8 -I{} sh -c '"$1" --gtest_brief=1 >"$2/suite_$(basename "$1").txt" 2>&1; echo "$(basename "$1") rc $?"' _ {} "$logs" |
    sort | tee "$logs/suite_rc.txt" | tee -a "$summary"
  grep -hE "^\[  (PASSED|FAILED|SKIPPED) " "$logs"/suite_*.txt | sort | uniq -c | tee -a "$summary"
  ! grep -q " rc [1-9]" "$logs/suite_rc.txt"
}
part_cuda_apps() {
  local p r=0
  for p in train distill_a distill_b; do
    bash tests/apps/device_runs.sh "$g/bin" "$p" >"$logs/device_runs_$p.txt" 2>&1 || r=1
    tail -12 "$logs/device_runs_$p.txt" | tee -a "$summary"
  done
  return $r
}
part_train() {
  local time_v=""
  [[ -x /usr/bin/time ]] && time_v="/usr/bin/time -v"
  $time_v retort-train configs/fmnist/resnet8x4.json --device cuda --run-dir /tmp/gpu_fmnist \
    ${EPOCHS:+--set solver.epochs=$EPOCHS --set solver.schedule.total_epochs=$EPOCHS} >"$logs/train_cuda.txt" 2>&1
  local r=$?
  grep -E "epoch .* test|Elapsed|Maximum resident|error|done" "$logs/train_cuda.txt" | tail -20 | tee -a "$summary"
  cp /tmp/gpu_fmnist/metrics.jsonl "$logs/train_cuda_metrics.jsonl" 2>/dev/null
  return $r
}
part_bench() {
  # PyTorch must not load our bundled libraries: its interpreter runs without LD_LIBRARY_PATH.
  printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexec python3 "$@"\n' >"$g/torch-python" && chmod +x "$g/torch-python"
  BENCH=$g/bin/retort-bench DEVICE=cuda PYTHONS=$g/torch-python PYTHON=$g/torch-python THREADS=1 BATCHES=64,128 MODES=train,kd \
    MODELS=${MODELS:-resnet8x4,resnet32x4} PAIRS=${PAIRS:-resnet32x4:resnet8x4} \
    MACHINE=${MACHINE:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' A-Z' '-a-z')} \
    OUT=$logs/bench_cuda.jsonl bash bench/compare.sh 2>"$logs/bench_stderr.txt" | tee "$logs/bench_table.md" | tee -a "$summary"
}
part_profile() {
  retort-bench --device cuda --models resnet8x4,resnet32x4 --pairs resnet32x4:resnet8x4 --batch 128 --threads 1 \
    --mode train,kd --profile >"$logs/profile_cuda.txt" 2>&1
  local r=$?
  grep -E "^profile:|img/s" "$logs/profile_cuda.txt" | head -20 | tee -a "$summary"
  return $r
}
export -f part_suite part_cuda_apps part_train part_bench part_profile say
export g logs summary
for p in $parts; do run_part "$p" bash -c "part_$p"; done

dest=${OUT:-$root/gpu-logs}
mkdir -p "$dest"
tar -C "$logs" -czf "$dest/logs-${parts// /_}.tar.gz" .
cp "$summary" "$dest/summary.txt"
exit $rc
