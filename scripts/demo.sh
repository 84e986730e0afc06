#!/usr/bin/env bash
# The main job: install what is missing, build, then on Fashion-MNIST (Debian's dataset package) train
# a small teacher (resnet8x4) and a baseline student (resnet8) with cross-entropy on a 6000-image
# subset for 2 epochs each, and print their test accuracies side by side. A few minutes on 2 cores.
# (The [distill] issue adds the distilled student as a third column.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
runs=${RETORT_RUNS_DIR:-$root/runs/demo}
bash "$root/scripts/build.sh"

train() {  # config, run dir
  rm -rf "$2"
  "$build/apps/retort-train" "$1" --run-dir "$2"
}
train "$root/configs/fmnist/demo_teacher.json" "$runs/teacher"
train "$root/configs/fmnist/demo_student.json" "$runs/student"

top1() { sed -n 's/.*"last_top1": \([0-9.]*\).*/\1/p' "$1/summary.json"; }
printf '\nFashion-MNIST test top-1 (6000 training images, 2 epochs)\n'
printf '  %-28s %s%%\n' "teacher resnet8x4" "$(top1 "$runs/teacher")"
printf '  %-28s %s%%\n' "student resnet8 (CE only)" "$(top1 "$runs/student")"
