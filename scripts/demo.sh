#!/usr/bin/env bash
# The main job, for now: build Retort and run every registered finite-difference gradient check
# (float64, central differences) of the engine's differentiable functions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh"
"$build/apps/retort-gradcheck" --all
