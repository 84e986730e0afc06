#!/usr/bin/env bash
# FT on Fashion-MNIST (docs/methods/ft.md, results in docs/reproducing.md), resnet8x4 -> resnet8, as
# RepDistiller runs it: a first run trains the paraphraser alone to reconstruct the teacher's layer3
# feature (configs/fmnist/ft_paraphraser.json: 8 epochs of the 10 000 images at a constant lr 0.01,
# RepDistiller's lr for its init phase; the student in that run gets no gradient), then the student is
# trained with CE + 200 · FT through a translator against the frozen paraphraser's factor
# (configs/fmnist/ft_student.json: the table's recipe, 5 epochs). The paraphraser belongs to the teacher,
# so one (seed 0) serves the 3 student seeds, as MTKD-SSR's pre-trained teacher heads do. Prints the
# mean ± sample std of the students' last-epoch test top-1. Resumable.
#   bash scripts/ft_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_ft

fmnist_teacher
[ -f $out/paraphraser/summary.json ] ||
  "$build/apps/retort-distill" configs/fmnist/ft_paraphraser.json --run-dir $out/paraphraser --resume auto
for s in $seeds; do
  [ -f $out/student_s$s/summary.json ] ||
    "$build/apps/retort-distill" configs/fmnist/ft_student.json --seed "$s" --run-dir $out/student_s$s --resume auto \
      --set distill.terms.1.params.paraphraser_from=$out/paraphraser
done

echo
vals=""; for s in $seeds; do vals="$vals $(top1 $out/student_s$s)"; done
mean_std 6 ft $vals
