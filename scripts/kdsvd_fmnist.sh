#!/usr/bin/env bash
# KDSVD on Fashion-MNIST with both views (docs/methods/kdsvd.md, results in docs/reproducing.md). The
# paper's and RepDistiller's channels view needs the teacher's channels at every tap, so the teacher is
# resnet32 (16/32/64 channels like resnet8; configs/fmnist/resnet32.json, 10 epochs, trained here unless
# present): configs/fmnist/kdsvd_resnet32.json (CE + KDSVD, k 1, weight 1). mdistiller's width view with
# the same teacher (--set …view=width) separates the view from the teacher; the width view with the
# table's resnet8x4 teacher is the table row (scripts/fmnist_table.sh kdsvd). Over 3 seeds; prints the
# mean ± sample std of the last-epoch test top-1. Resumable.
#   bash scripts/kdsvd_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_kdsvd

[ -f runs/fmnist_resnet32/summary.json ] ||
  "$build/apps/retort-train" configs/fmnist/resnet32.json --run-dir runs/fmnist_resnet32 --resume auto
for view in channels width; do
  for s in $seeds; do
    [ -f $out/${view}_s$s/summary.json ] ||
      "$build/apps/retort-distill" configs/fmnist/kdsvd_resnet32.json --seed "$s" --run-dir $out/${view}_s$s \
        --resume auto --set distill.terms.1.params.view=$view
  done
done

echo
printf '%-16s %s\n' "teacher" "resnet32 $(top1 runs/fmnist_resnet32)%"
for view in channels width; do
  vals=""; for s in $seeds; do vals="$vals $(top1 $out/${view}_s$s)"; done
  mean_std 16 "kdsvd $view" $vals
done
