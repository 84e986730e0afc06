#!/usr/bin/env bash
# Distillation across families on Fashion-MNIST (docs/reproducing.md, "Across families on Fashion-MNIST"): a vgg8 teacher
# (configs/fmnist/resnet8x4.json with arch vgg8, full training set, 3 epochs; trained here unless present)
# and a MobileNetV2 student — the literature's vgg13 → MobileNetV2 in small — with the students' recipe of
# the Fashion-MNIST table (configs/fmnist/student_{ce,kd,at,fitnet}.json: first 10 000 images, 5 epochs).
# No tap is named: AT compares every stage of each network (vgg8 block1..block4 with MobileNetV2
# blocks.1/.2/.4/.6) and FitNet each network's stage 2 (docs/methods/README.md, "Taps and stages"); the
# student configs' own "layer2" FitNet taps are replaced by the alias. Over 3 seeds, two runs at a time
# with one thread each; prints the mean ± sample std of the last-epoch test top-1. Resumable.
#   bash scripts/cross_family_fmnist.sh        (SEEDS="0 1 2" by default)
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_cross
teacher=$out/teacher_vgg8
export OMP_WAIT_POLICY=passive  # two runs side by side on 2 cores (docs/cli.md)

[ -f $teacher/summary.json ] ||
  "$build/apps/retort-train" configs/fmnist/resnet8x4.json --run-dir $teacher --resume auto \
    --set model.arch=vgg8 --set solver.epochs=3 --set solver.schedule.total_epochs=3

methods="ce kd at fitnet"
run() {  # run METHOD SEED
  local m=$1 s=$2 dir=$out/$1_s$2 extra=()
  [ -f "$dir/summary.json" ] && return
  [ "$m" = ce ] || extra=(--set teacher.arch=vgg8 --set "teacher.checkpoint=$teacher/model.safetensors")
  [ "$m" = fitnet ] && extra+=(--set distill.terms.1.params.student_tap=stage2 --set distill.terms.1.params.teacher_tap=stage2)
  "$build/apps/retort-distill" "configs/fmnist/student_$m.json" --seed "$s" --run-dir "$dir" --resume auto \
    --threads 1 --set model.arch=MobileNetV2 "${extra[@]}" > "$dir.log" 2>&1
}
mkdir -p $out
jobs=()
for m in $methods; do for s in $seeds; do jobs+=("$m $s"); done; done
for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  pids=()
  run ${jobs[i]} & pids+=($!)
  if [ $((i + 1)) -lt ${#jobs[@]} ]; then run ${jobs[i + 1]} & pids+=($!); fi
  for p in "${pids[@]}"; do wait "$p" || { echo "a run failed: see $out/*.log"; exit 1; }; done
done

echo
printf '%-16s %s\n' "teacher" "vgg8 $(top1 $teacher)%"
for m in $methods; do
  vals=""; for s in $seeds; do vals="$vals $(top1 $out/${m}_s$s)"; done
  mean_std 16 "MobileNetV2 $m" $vals
done
