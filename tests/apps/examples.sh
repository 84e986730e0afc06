#!/usr/bin/env bash
# examples/kd_loop.cpp, the hand-written distillation run, on its synthetic data: both phases train, the
# teacher and the student learn the 4 classes (chance: 25 %), and the student's agreement with the
# teacher is reported. Usage: examples.sh EXAMPLES_BIN_DIR
# 8 epochs, not 4: at 4 the student's test top-1 depended on the run's rounding like a coin (over 8
# data-loader seeds it ranged from 65.6 % to 100 %, and the same seed moved from 97.7 % to 79.7 % when
# batch norm summed in another order, session 27); at 8 the same seeds gave 97.7-99.6 % (teacher) and 98.8-100 %
# (student), so 90 % is a check that can fail without being a coin toss.
set -euo pipefail
bin=$1
out=$("$bin/kd_loop" --synthetic --epochs 8 --threads 2)
echo "$out"
for want in "teacher epoch 8: mean CE" "student epoch 8: mean CE" "agrees with the teacher on"; do
  grep -qF "$want" <<<"$out" || { echo "FAIL: no '$want' in the output"; exit 1; }
done
top1() { sed -n "s/^$1 .* top-1 \([0-9.]*\)%.*/\1/p" <<<"$out"; }
t=$(top1 teacher); s=$(top1 student)
awk -v t="$t" -v s="$s" 'BEGIN { exit !(t >= 90 && s >= 90) }' ||
  { echo "FAIL: teacher $t%, student $s%: expected both >= 90% on 4 learnable classes"; exit 1; }
# A usage error is refused with CLI11's message and a non-zero exit code.
if "$bin/kd_loop" --epochs 0 > /dev/null 2>&1; then echo "FAIL: --epochs 0 was accepted"; exit 1; fi
echo "examples: ok"
