#!/usr/bin/env bash
# The main job: install what is missing, build, then on Fashion-MNIST (Debian's dataset package) train
# a teacher (resnet8x4), a baseline student (resnet8, cross-entropy only) and a distilled student
# (resnet8, 0.1 CE + 0.9 KD at T=4 from that teacher) on a 6000-image subset for 2 epochs each, and
# print the three test accuracies side by side. A few minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
runs=${RETORT_RUNS_DIR:-$root/runs/demo}
bash "$root/scripts/build.sh"

rm -rf "$runs/teacher" "$runs/student" "$runs/kd"
"$build/apps/retort-train" "$root/configs/fmnist/demo_teacher.json" --run-dir "$runs/teacher"
"$build/apps/retort-train" "$root/configs/fmnist/demo_student.json" --run-dir "$runs/student"
"$build/apps/retort-distill" "$root/configs/fmnist/demo_kd.json" --run-dir "$runs/kd" \
  --set teacher.checkpoint="\"$runs/teacher/model.safetensors\""

top1() { sed -n 's/.*"last_top1": \([0-9.]*\).*/\1/p' "$1/summary.json"; }
printf '\nFashion-MNIST test top-1 (teacher: first 12000 training images, 3 epochs; students: first 6000, 2 epochs)\n'
printf '  %-28s %s%%\n' "teacher resnet8x4" "$(top1 "$runs/teacher")"
printf '  %-28s %s%%\n' "student resnet8 (CE only)" "$(top1 "$runs/student")"
printf '  %-28s %s%%\n' "student resnet8 (CE + KD)" "$(top1 "$runs/kd")"
