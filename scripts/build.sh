#!/usr/bin/env bash
# Installs missing dependencies, configures and builds Retort into build/ (or $RETORT_BUILD_DIR).
# Extra arguments go to CMake's configure step, e.g. scripts/build.sh -DRETORT_CUDA=OFF.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
bash "$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
