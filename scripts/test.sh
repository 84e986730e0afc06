#!/usr/bin/env bash
# The test command: installs missing dependencies, configures, builds, and runs the whole suite
# with output on failure. CUDA tests skip on machines without a GPU; then, unless RETORT_SKIP_CUDAEMU=1,
# the CUDA backend is built a second time on the CPU emulator (tools/cudaemu, -DRETORT_CUDA=EMU) and the
# CUDA-labelled tests run there, so our kernels are checked against the CPU backend on every run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh" "$@"
cd "$build"
ctest --output-on-failure -j "$(nproc)"

if [ "${RETORT_SKIP_CUDAEMU:-0}" != 1 ]; then
  emu=${RETORT_EMU_BUILD_DIR:-$root/build-emu}
  cmake -S "$root" -B "$emu" -DCMAKE_BUILD_TYPE=Release -DRETORT_CUDA=EMU >/dev/null
  cmake --build "$emu" -j "$(nproc)" --target test_cuda test_cuda_parity test_cudaemu \
    retort-gradcheck retort-train retort-distill retort-eval retort-inspect
  cd "$emu"
  ctest --output-on-failure -j "$(nproc)" -L cuda
fi
