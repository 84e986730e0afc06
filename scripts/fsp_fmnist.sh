#!/usr/bin/env bash
# FSP on Fashion-MNIST (docs/methods/fsp.md, results in docs/reproducing.md). FSP compares flow
# matrices entry by entry, so the teacher must have the student's widths: resnet32 (16/16/32/64
# channels, like resnet8; configs/fmnist/resnet32.json, 10 epochs, trained here unless present) -> resnet8.
# As RepDistiller runs it: the student's feature layers are trained with FSP alone
# (configs/fmnist/fsp_init.json: 1 epoch at a constant lr 0.05 — the reference's 30 of 240 epochs,
# scaled), then plain CE from that student (configs/fmnist/ce_from_init.json: 5 epochs,
# model.init = phase 1's model). The control — CE in phase 1, the same phase 2 — is AB's
# (scripts/ab_fmnist.sh, runs/fmnist_ab/ce_control_s*): it does not depend on the teacher. Over 3 seeds;
# prints the mean ± sample std of the last-epoch test top-1 of phase 2. Resumable.
#   bash scripts/fsp_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_fsp

[ -f runs/fmnist_resnet32/summary.json ] ||
  "$build/apps/retort-train" configs/fmnist/resnet32.json --run-dir runs/fmnist_resnet32 --resume auto
for s in $seeds; do
  [ -f $out/init_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/fsp_init.json --seed "$s" --run-dir $out/init_s$s --resume auto
  [ -f $out/student_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/ce_from_init.json --seed "$s" --run-dir $out/student_s$s --resume auto \
      --set model.init=$out/init_s$s/model.safetensors
done

echo
vals=""; for s in $seeds; do vals="$vals $(top1 $out/student_s$s)"; done
mean_std 6 fsp $vals
