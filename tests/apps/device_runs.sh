#!/usr/bin/env bash
# The binaries on --device cuda against --device cpu, end to end on synthetic data: retort-gradcheck --all
# on the device (float64 finite differences through the CUDA kernels), retort-train, then
# retort-distill with every built-in strategy (SoKD in its three search modes and as a plug-in around
# KD; FT's two runs), each for one epoch of 4 steps. The run on the GPU must end with the CPU run's train and test
# losses within 1% (a broken kernel, a tensor left on the wrong device or a strategy module that did
# not move shows up as an error or a different loss), retort-eval must agree on the result, and a run
# resumed on the GPU from its checkpoint must end exactly where the uninterrupted one does.
# Registered where the CUDA backend is built (tests/CMakeLists.txt): it runs on the emulator build and on
# a GPU machine, and is skipped (exit 77) where no CUDA device is visible.
# Usage: device_runs.sh BIN_DIR [PART], PART one of: all (the default), train (the gradchecks, retort-train,
# retort-eval and the resume), distill_a and distill_b (each half of the strategies) — ctest runs the
# three parts as separate tests, side by side.
set -euo pipefail
bin=$1
part=${2:-all}
case "$part" in all|train|distill_a|distill_b) ;; *) echo "device_runs.sh: unknown part '$part'" >&2; exit 2;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! "$bin/retort-gradcheck" --list --device cuda > /dev/null 2>"$tmp/err"; then
  if grep -q "CUDA device(s) visible" "$tmp/err"; then echo "no CUDA device: skipped"; exit 77; fi
  cat "$tmp/err"; exit 1
fi
if [ "$part" = all ] || [ "$part" = train ]; then
  if ! out=$("$bin/retort-gradcheck" --all --device cuda 2>&1); then
    echo "FAIL: retort-gradcheck --all --device cuda:"; grep -v "^ok" <<<"$out" | tail -20; exit 1
  fi
  tail -1 <<<"$out"
fi

data='"data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "num_classes": 4, "synthetic_size": 64,
               "batch_size": 16, "num_workers": 0}'
solver='"solver": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "epochs": 1}'

# The last epoch's train and test losses of a run.
losses() { grep '"event":"epoch"' "$1/metrics.jsonl" | tail -1 | sed -E 's/.*"train_loss":([^,]+).*"test_loss":([^,}]+).*/\1 \2/'; }
close() {  # close A B: |A - B| <= 1% of max(|A|, 1e-3)
  awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; s = a < 0 ? -a : a; if (s < 1e-3) s = 1e-3;
                                   exit !(d <= 0.01 * s && a == a && b == b) }'
}
compare() {  # compare NAME: the cpu and cuda runs of NAME
  read -r tc ec <<<"$(losses "$tmp/$1_cpu")"
  read -r tg eg <<<"$(losses "$tmp/$1_cuda")"
  if ! close "$tc" "$tg" || ! close "$ec" "$eg"; then
    echo "FAIL: $1: cpu train/test loss $tc/$ec, cuda $tg/$eg"
    exit 1
  fi
  echo "$1: cpu $tc/$ec cuda $tg/$eg"
}

# retort-train.
if [ "$part" = all ] || [ "$part" = train ]; then
cat > "$tmp/train.json" <<JSON
{"schema_version": 1, "experiment": {"name": "train", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet8"}, $solver}
JSON
for dev in cpu cuda; do "$bin/retort-train" "$tmp/train.json" --run-dir "$tmp/train_$dev" --device "$dev" > "$tmp/train_$dev.out"; done
# The start-up lines name the GPU the run is on.
grep -qE "^  device  cuda:0 .*, sm_[0-9]+, " "$tmp/train_cuda.out" ||
  { echo "FAIL: retort-train --device cuda does not name its device:"; cat "$tmp/train_cuda.out"; exit 1; }
compare train
# retort-eval of the GPU-trained model on both devices.
ecpu=$("$bin/retort-eval" "$tmp/train_cuda/model.safetensors" --config "$tmp/train.json" --device cpu 2>&1 | grep "top-1" | head -1)
ecuda=$("$bin/retort-eval" "$tmp/train_cuda/model.safetensors" --config "$tmp/train.json" --device cuda 2>&1 | grep "top-1" | head -1)
[ -n "$ecpu" ] && [ "$ecpu" = "$ecuda" ] || { echo "FAIL: retort-eval: cpu '$ecpu' vs cuda '$ecuda'"; exit 1; }
# retort-inspect on the device says so: the tap list's header and the graph's leaf labels.
# (Output captured first: grep -q closing the pipe early would fail the pipeline under pipefail.)
taps=$("$bin/retort-inspect" --arch resnet8 --device cuda)
grep -qF "feature taps (shape for a batch of 1, on cuda:0)" <<<"$taps" ||
  { echo "FAIL: retort-inspect --arch --device cuda does not name its device"; exit 1; }
dot=$("$bin/retort-inspect" --arch resnet8 --device cuda --graph)
grep -qF 'label="fc.weight\nf32[100, 64] cuda:0"' <<<"$dot" ||
  { echo "FAIL: retort-inspect --graph --device cuda: leaves without their device"; exit 1; }

# Resuming on the device: two epochs straight, and one epoch then --resume auto into the second, end
# with bitwise the same losses (deterministic cuDNN algorithms; our kernels are deterministic here).
export RETORT_CUDA_DETERMINISTIC=1
"$bin/retort-train" "$tmp/train.json" --run-dir "$tmp/straight" --device cuda --set solver.epochs=2 > /dev/null
"$bin/retort-train" "$tmp/train.json" --run-dir "$tmp/resumed" --device cuda > /dev/null
"$bin/retort-train" "$tmp/train.json" --run-dir "$tmp/resumed" --device cuda --set solver.epochs=2 --resume auto > /dev/null
straight=$(losses "$tmp/straight"); resumed=$(losses "$tmp/resumed")
[ "$straight" = "$resumed" ] || { echo "FAIL: resume on cuda: straight '$straight', resumed '$resumed'"; exit 1; }
echo "resume on cuda: $resumed (both runs)"
unset RETORT_CUDA_DETERMINISTIC
fi
[ "$part" = train ] && { echo "device_runs $part: ok"; exit 0; }

cat > "$tmp/teacher.json" <<JSON
{"schema_version": 1, "experiment": {"name": "teacher", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet14"}, $solver}
JSON
"$bin/retort-train" "$tmp/teacher.json" --run-dir "$tmp/teacher" > /dev/null

# retort-distill, one config per strategy.
declare -A terms=(
  [kd]='[{"type": "ce", "weight": 0.1}, {"type": "kd", "weight": 0.9, "params": {"temperature": 4}}]'
  [dkd_ls]='[{"type": "ce"}, {"type": "dkd", "params": {"alpha": 1, "beta": 8, "temperature": 2, "logit_standardization": true}}]'
  [fitnet]='[{"type": "ce"}, {"type": "fitnet"}]'
  [at]='[{"type": "ce"}, {"type": "at"}]'
  [cwd]='[{"type": "ce"}, {"type": "cwd", "weight": 50}]'
  [reviewkd]='[{"type": "ce"}, {"type": "reviewkd"}]'
  [sp]='[{"type": "ce"}, {"type": "sp", "weight": 3000}]'
  [pkt]='[{"type": "ce"}, {"type": "pkt", "weight": 30000}]'
  [rkd]='[{"type": "ce"}, {"type": "rkd"}]'
  [crd]='[{"type": "ce"}, {"type": "crd", "weight": 0.8, "params": {"nce_k": 16}}]'
  [vid]='[{"type": "ce"}, {"type": "vid"}]'
  [nst]='[{"type": "ce"}, {"type": "nst", "weight": 50}]'
  [cc]='[{"type": "ce"}, {"type": "cc", "weight": 0.02}]'
  [ofd]='[{"type": "ce"}, {"type": "ofd", "weight": 0.001}]'
  [ab]='[{"type": "ce"}, {"type": "ab"}]'
  [fsp]='[{"type": "ce"}, {"type": "fsp"}]'
  [ft_paraphraser]='[{"type": "ft", "params": {"phase": "paraphraser"}}]'
  # FT's second run reads the paraphraser the CPU's first run trained (both devices the same one).
  [ft]='[{"type": "ce"}, {"type": "ft", "weight": 200, "params": {"paraphraser_from": "'"$tmp"'/ft_paraphraser_cpu"}}]'
  [kdsvd]='[{"type": "ce"}, {"type": "kdsvd", "params": {"k": 2}}]'
  [kdsvd_width]='[{"type": "ce"}, {"type": "kdsvd", "params": {"view": "width"}}]'
  [generous_teacher]='[{"type": "ce"}, {"type": "generous_teacher", "weight": 8, "params": {"temperature": 2}}]'
  [mtkd_ssr]='[{"type": "ce"}, {"type": "mtkd_ssr"}]'
  [sokd_first]='[{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4, "area_num": 4, "search": "first_order", "search_epochs": 1}}]'
  [sokd_second]='[{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4, "area_num": 4, "search": "second_order", "search_epochs": 1}}]'
  [sokd_relax]='[{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4, "area_num": 4, "search": "first_order", "search_epochs": 1, "estimator": "relax"}}]'
  [sokd_host_kd]='[{"type": "ce", "weight": 0.1}, {"type": "sokd", "weight": 0.9, "params": {"host": {"type": "kd"}, "refine_logits": true, "feat_weight": 0, "dam_weight": 0, "search_epochs": 1}}]'
)
names_a="kd dkd_ls fitnet at cwd reviewkd sp pkt rkd crd vid nst cc ofd ab fsp"
names_b="ft_paraphraser ft kdsvd kdsvd_width generous_teacher mtkd_ssr sokd_first sokd_second sokd_relax sokd_host_kd"
case "$part" in distill_a) names=$names_a;; distill_b) names=$names_b;; *) names="$names_a $names_b";; esac
for name in $names; do
  cat > "$tmp/$name.json" <<JSON
{"schema_version": 1, "experiment": {"name": "$name", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet14", "checkpoint": "$tmp/teacher/model.safetensors"},
 "distill": {"terms": ${terms[$name]}}, $solver}
JSON
  for dev in cpu cuda; do
    if ! out=$("$bin/retort-distill" "$tmp/$name.json" --run-dir "$tmp/${name}_$dev" --device "$dev" 2>&1); then
      echo "FAIL: $name on $dev:"; echo "$out" | tail -5; exit 1
    fi
  done
  compare "$name"
done
echo "device_runs $part: ok"
