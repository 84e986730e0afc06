#!/usr/bin/env bash
# examples/kd_loop.cpp, the hand-written distillation run, on its synthetic data: both phases train, the
# teacher and the student learn the 4 classes (chance: 25 %), and the student's agreement with the
# teacher is reported. Usage: examples.sh EXAMPLES_BIN_DIR
set -euo pipefail
bin=$1
out=$("$bin/kd_loop" --synthetic --epochs 4 --threads 2)
echo "$out"
for want in "teacher epoch 4: mean CE" "student epoch 4: mean CE" "agrees with the teacher on"; do
  grep -qF "$want" <<<"$out" || { echo "FAIL: no '$want' in the output"; exit 1; }
done
top1() { sed -n "s/^$1 .* top-1 \([0-9.]*\)%.*/\1/p" <<<"$out"; }
t=$(top1 teacher); s=$(top1 student)
awk -v t="$t" -v s="$s" 'BEGIN { exit !(t >= 80 && s >= 80) }' ||
  { echo "FAIL: teacher $t%, student $s%: expected both >= 80% on 4 learnable classes"; exit 1; }
# A usage error is refused with CLI11's message and a non-zero exit code.
if "$bin/kd_loop" --epochs 0 > /dev/null 2>&1; then echo "FAIL: --epochs 0 was accepted"; exit 1; fi
echo "examples: ok"
