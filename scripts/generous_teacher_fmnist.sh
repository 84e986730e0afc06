#!/usr/bin/env bash
# The Generous Teacher pipeline on Fashion-MNIST (docs/methods/generous_teacher.md, results in
# docs/reproducing.md), three phases (batch 64, SGD 0.05 cosine):
#   1. the standard teacher (ST): resnet8x4, CE only, all 60 000 training images, 2 epochs
#                                                             configs/fmnist/gt_standard_teacher.json
#   2. the generous teacher (GT): resnet8x4 from scratch, CE + 8 * NCKD(ST -> GT) at k = 2, same budget
#                                                             configs/fmnist/gt_generous_teacher.json
#   3. a resnet8 KD student (T 4, 0.1 CE + 0.9 KD) from each teacher, over 3 seeds, on the table's
#      budget (first 10 000 images, 5 epochs)                 configs/fmnist/gt_student_kd_from_{standard,generous}.json
# Prints both teachers' test top-1 and each student's mean ± sample std of the last-epoch top-1.
# About an hour on 2 cores (the teachers take most of it). Resumable: finished runs are skipped.
#   bash scripts/generous_teacher_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_gt

[ -f $out/standard_teacher/summary.json ] ||
  "$build/apps/retort-train" configs/fmnist/gt_standard_teacher.json --run-dir $out/standard_teacher --resume auto
[ -f $out/generous_teacher/summary.json ] ||
  "$build/apps/retort-distill" configs/fmnist/gt_generous_teacher.json --run-dir $out/generous_teacher --resume auto
for who in standard generous; do
  for s in $seeds; do
    dir=$out/student_from_${who}_s$s
    [ -f "$dir/summary.json" ] && continue
    "$build/apps/retort-distill" "configs/fmnist/gt_student_kd_from_$who.json" --seed "$s" --run-dir "$dir" --resume auto
  done
done

printf '\n%-28s %s\n' "standard teacher resnet8x4" "$(top1 $out/standard_teacher)%"
printf '%-28s %s\n' "generous teacher resnet8x4" "$(top1 $out/generous_teacher)%"
for who in standard generous; do
  vals=""; for s in $seeds; do vals="$vals $(top1 $out/student_from_${who}_s$s)"; done
  mean_std 28 "kd_student_from_$who" $vals
done
