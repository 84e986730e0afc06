#!/usr/bin/env bash
# The test command: installs missing dependencies, configures, builds, and runs the whole suite
# with output on failure. CUDA tests skip on machines without a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh" "$@"
cd "$build"
ctest --output-on-failure -j "$(nproc)"
