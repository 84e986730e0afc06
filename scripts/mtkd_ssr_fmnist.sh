#!/usr/bin/env bash
# MTKD-SSR's teacher-head variants on Fashion-MNIST (docs/methods/mtkd_ssr.md, results in
# docs/reproducing.md), resnet8x4 -> resnet8 on the table's budget (first 10 000 images, 5 epochs,
# batch 64, SGD 0.05 cosine), each over 3 seeds:
#   joint       the table's row: teacher heads trained in the student's run (configs/fmnist/student_mtkd_ssr.json,
#               runs/fmnist/mtkd_ssr_s*, shared with scripts/fmnist_table.sh)
#   pretrained  phase 1 trains the teacher heads alone on the frozen teacher (configs/fmnist/mtkd_ssr_teacher_heads.json:
#               only teacher_heads_ce; the student in that run gets no gradient), phase 2 reads and freezes them
#               (configs/fmnist/mtkd_ssr_student_pretrained.json)
#   stages      HSAKD-style heads, fresh copies of the later stages, trained jointly
#               (configs/fmnist/mtkd_ssr_student_stages.json)
# Prints each variant's mean ± sample std of the last-epoch test top-1. About 6 minutes per run on one
# core (stages: about 10). Resumable: finished runs are skipped.
#   bash scripts/mtkd_ssr_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_mtkd

fmnist_teacher
[ -f $out/teacher_heads/summary.json ] ||
  "$build/apps/retort-distill" configs/fmnist/mtkd_ssr_teacher_heads.json --run-dir $out/teacher_heads --resume auto
dir_of() { if [ "$1" = joint ]; then echo runs/fmnist/mtkd_ssr_s$2; else echo $out/$1_s$2; fi; }
config_of() { if [ "$1" = joint ]; then echo configs/fmnist/student_mtkd_ssr.json; else echo configs/fmnist/mtkd_ssr_student_$1.json; fi; }
for v in joint pretrained stages; do
  for s in $seeds; do
    dir=$(dir_of $v $s)
    [ -f "$dir/summary.json" ] && continue
    "$build/apps/retort-distill" "$(config_of $v)" --seed "$s" --run-dir "$dir" --resume auto
  done
done

echo
for v in joint pretrained stages; do
  vals=""; for s in $seeds; do vals="$vals $(top1 "$(dir_of $v $s)")"; done
  mean_std 22 "mtkd_ssr_$v" $vals
done
