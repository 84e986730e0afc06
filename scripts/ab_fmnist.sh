#!/usr/bin/env bash
# AB on Fashion-MNIST (docs/methods/ab.md, results in docs/reproducing.md), resnet8x4 -> resnet8, as
# RepDistiller runs it: an initialisation phase in which the student's feature layers and the connectors
# are trained with the AB loss alone (configs/fmnist/ab_init.json: 1 epoch at a constant lr 0.05 — the
# reference's 30 of 240 epochs, scaled), then plain CE training from that student
# (configs/fmnist/ce_from_init.json: the CE row's recipe, 5 epochs, model.init = phase 1's model). The
# control runs the same two phases with CE in phase 1 (configs/fmnist/ab_control_init.json). Over 3
# seeds; prints the mean ± sample std of the last-epoch test top-1 of phase 2 for both. Resumable.
#   bash scripts/ab_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_ab

fmnist_teacher
for s in $seeds; do
  [ -f $out/init_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/ab_init.json --seed "$s" --run-dir $out/init_s$s --resume auto
  [ -f $out/student_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/ce_from_init.json --seed "$s" --run-dir $out/student_s$s --resume auto \
      --set model.init=$out/init_s$s/model.safetensors
  [ -f $out/ce_init_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/ab_control_init.json --seed "$s" --run-dir $out/ce_init_s$s --resume auto
  [ -f $out/ce_control_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/ce_from_init.json --seed "$s" --run-dir $out/ce_control_s$s --resume auto \
      --set model.init=$out/ce_init_s$s/model.safetensors
done

echo
for v in student ce_control; do
  vals=""; for s in $seeds; do vals="$vals $(top1 $out/${v}_s$s)"; done
  mean_std 12 "$([ $v = student ] && echo ab || echo control)" $vals
done
