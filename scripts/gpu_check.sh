#!/usr/bin/env bash
# Everything the [cuda] issue asks of a GPU, in one call on the GPU machine (see scripts/gpu_bundle.sh):
#   1. the whole test suite (CPU tests and the CUDA parity tests, which run instead of skipping),
#   2. retort-gradcheck --all --device cuda (float64 finite differences through the CUDA kernels), and
#      tests/apps/device_runs.sh (retort-train/eval/distill with every strategy on cuda vs the CPU),
#   3. a Fashion-MNIST training run on the GPU (configs/fmnist/resnet8x4.json, STEPS limits it),
#   4. retort-bench against PyTorch eager on the same GPU (bench/compare.sh with DEVICE=cuda),
#   5. retort-bench --profile on the GPU: time per kernel type and per convolution, for the perf work
#      after the first figures (docs/STATUS.md lists what to look at).
# Logs go to $OUT (the device tool brings them back) or to gpu-logs/.
#   PARTS="suite gradcheck train bench profile"  EPOCHS=15  bash scripts/gpu_check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
parts=${PARTS:-suite gradcheck train bench profile}
g=$root/.gpu
[[ -f $g/bundle.tar.xz ]] || { echo "gpu_check.sh: no .gpu/bundle.tar.xz: run scripts/gpu_bundle.sh here and carry .gpu" >&2; exit 1; }
tar -C "$g" -xJf "$g/bundle.tar.xz"
# The binaries hold this checkout's absolute paths (/work/main/tests/fixtures, configs) and the
# dataset's Debian location: make both exist here.
[[ -e /work/main ]] || { mkdir -p /work && ln -s "$root" /work/main; }
mkdir -p /usr/share/datasets && { [[ -e /usr/share/datasets/fashion-mnist ]] || ln -s "$g/data" /usr/share/datasets/fashion-mnist; }
cudnn=$(dirname "$(find / -name 'libcudnn.so.9' -not -path '*/proc/*' 2>/dev/null | head -1)")
cublas=$(dirname "$(find / -name 'libcublas.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)")
# cuSOLVER (eigh) and what it loads: cuSPARSE and nvJitLink.
libdirs=""
for so in libcusolver.so.12 libcusparse.so.12 libnvJitLink.so.13; do
  f=$(find / -name "$so" -not -path '*/proc/*' 2>/dev/null | head -1)
  [[ -n $f ]] || echo "gpu_check.sh: $so not found on this machine: the binaries will not load" >&2
  [[ -n $f ]] && libdirs=$libdirs:$(dirname "$f")
done
export LD_LIBRARY_PATH=$g/lib:$cudnn:$cublas$libdirs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=$g/bin:$PATH
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "commit $(cat "$g/commit")"; echo "cudnn $cudnn cublas $cublas others $libdirs"
  retort-bench --help >/dev/null && echo "binaries load"
} 2>&1 | tee "$logs/env.txt"

rc=0
if [[ $parts == *suite* ]]; then
  for t in "$g"/bin/test_*; do
    echo "== $(basename "$t")"
    "$t" --gtest_brief=1 2>&1 || rc=1
  done >"$logs/suite.txt" 2>&1
  grep -E "^== |PASSED|FAILED|SKIPPED" "$logs/suite.txt" | tail -60
fi
if [[ $parts == *gradcheck* ]]; then
  retort-gradcheck --all --device cuda >"$logs/gradcheck_cuda.txt" 2>&1 || rc=1
  tail -3 "$logs/gradcheck_cuda.txt"; grep FAIL "$logs/gradcheck_cuda.txt" | head -20
  bash tests/apps/device_runs.sh "$g/bin" >"$logs/device_runs.txt" 2>&1 || rc=1
  tail -15 "$logs/device_runs.txt"
fi
if [[ $parts == *train* ]]; then
  /usr/bin/time -v retort-train configs/fmnist/resnet8x4.json --device cuda --run-dir /tmp/gpu_fmnist \
    ${EPOCHS:+--set solver.epochs=$EPOCHS --set solver.schedule.total_epochs=$EPOCHS} >"$logs/train_cuda.txt" 2>&1 || rc=1
  grep -E "epoch .* test|Elapsed|error" "$logs/train_cuda.txt" | tail -20
  cp /tmp/gpu_fmnist/metrics.jsonl "$logs/train_cuda_metrics.jsonl" 2>/dev/null
fi
if [[ $parts == *bench* ]]; then
  # PyTorch must not load our bundled libraries: its interpreter runs without LD_LIBRARY_PATH.
  printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexec python3 "$@"\n' >"$g/torch-python" && chmod +x "$g/torch-python"
  BENCH=$g/bin/retort-bench DEVICE=cuda PYTHONS=$g/torch-python PYTHON=$g/torch-python THREADS=1 BATCHES=64,128 MODES=train,kd \
    MODELS=${MODELS:-resnet8x4,resnet32x4} PAIRS=${PAIRS:-resnet32x4:resnet8x4} \
    MACHINE=${MACHINE:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' A-Z' '-a-z')} \
    OUT=$logs/bench_cuda.jsonl bash bench/compare.sh 2>"$logs/bench_stderr.txt" | tee "$logs/bench_table.md" || rc=1
fi
if [[ $parts == *profile* ]]; then
  retort-bench --device cuda --models resnet8x4,resnet32x4 --pairs resnet32x4:resnet8x4 --batch 128 --threads 1 \
    --mode train,kd --profile >"$logs/profile_cuda.txt" 2>&1 || rc=1
  grep -E "^profile:|img/s" "$logs/profile_cuda.txt" | head -20
fi
exit $rc
