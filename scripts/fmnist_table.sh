#!/usr/bin/env bash
# The Fashion-MNIST distillation table of docs/reproducing.md: the resnet8x4 teacher
# (configs/fmnist/resnet8x4.json for 10 epochs, as docs/reproducing.md, trained once if runs/fmnist_resnet8x4
# has no model yet), then the
# resnet8 student with each strategy (configs/fmnist/student_*.json) over 3 seeds, printing the mean
# and standard deviation of the last-epoch test top-1. Long: about an hour for the teacher and two to
# three minutes per student run on 2 cores. Resumable: finished runs are skipped.
#   bash scripts/fmnist_table.sh [strategy ...]      (default: every student_*.json)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"

fmnist_teacher

if [ $# -gt 0 ]; then names=("$@"); else
  names=(); for f in configs/fmnist/student_*.json; do n=${f##*/student_}; names+=("${n%.json}"); done
fi
for n in "${names[@]}"; do
  for s in $seeds; do
    dir=runs/fmnist/${n}_s$s
    [ -f "$dir/summary.json" ] && continue
    "$build/apps/retort-distill" "configs/fmnist/student_$n.json" --seed "$s" --run-dir "$dir" --resume auto
  done
done

printf '\n%-12s %s\n' "teacher" "resnet8x4 $(top1 runs/fmnist_resnet8x4)%"
for n in "${names[@]}"; do
  vals=""; for s in $seeds; do vals="$vals $(top1 runs/fmnist/${n}_s$s)"; done
  mean_std 12 "$n" $vals
done
