#!/usr/bin/env bash
# experiment.math / --math end to end on synthetic data: a retort-train run with math "bf16" says so in
# its start-up block and config.json, and its convolutions really run in bf16 (retort-bench's kernel
# listing); retort-eval --math bf16 gives a test loss within 1 % of --math ieee's, but not equal; math
# "winograd" likewise runs Winograd kernels (oneDNN's on AVX-512, winograd.cpp's below) where they apply and
# evaluates to 1e-4; modes the device cannot run (tf32 on the CPU, an unknown mode) are refused as usage errors
# (exit code 1) with the reason. Where oneDNN has no bf16 convolutions (below AVX-512) the refusal is checked,
# the bf16 checks are left out and run "a" (the model the later checks evaluate) trains in F32.
# Usage: math_modes.sh BIN_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/a.json" <<JSON
{"schema_version": 1, "experiment": {"name": "a", "seed": 0, "output_dir": "$tmp", "math": "bf16"},
 "data": {"dataset": "synthetic", "image_size": 16, "channels": 3, "num_classes": 4, "synthetic_size": 256,
          "batch_size": 32, "num_workers": 0},
 "model": {"arch": "resnet8"}, "solver": {"optimizer": "sgd", "lr": 0.05, "epochs": 2}}
JSON
expect_refusal() {  # expect_refusal WHAT TEXT command...
  local what=$1 text=$2 rc err
  shift 2
  set +e
  err=$("$@" 2>&1); rc=$?
  set -e
  [ "$rc" = 1 ] && grep -qF -- "$text" <<<"$err" || { echo "FAIL: $what: rc $rc, '$err'"; exit 1; }
}
set +e
out=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" 2>&1); rc=$?
set -e
loss() { "$bin/retort-eval" "$tmp/a/model.safetensors" --math "$1" --json | sed -E 's/.*"loss":([0-9.e+-]+).*/\1/'; }
if [ "$rc" != 0 ]; then
  [ "$rc" = 1 ] && grep -qF 'experiment.math "bf16"' <<<"$out" && grep -qF "AVX-512" <<<"$out" ||
    { echo "FAIL: bf16 run: rc $rc, '$out'"; exit 1; }
  echo "math_modes: no bf16 convolutions on this CPU, refused as expected"
  rm -rf "$tmp/a"
  "$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" --set experiment.math=ieee > /dev/null
  a=$(loss ieee); b="refused"
else
grep -qF "kernels math bf16, deterministic" <<<"$out" || { echo "FAIL: no kernels line in '$out'"; exit 1; }
grep -qF "convolutions bf16" <<<"$out" || { echo "FAIL: the cpu line does not say bf16: '$out'"; exit 1; }
grep -qE '"math": ?"bf16"' "$tmp/a/config.json" || { echo "FAIL: config.json does not record the math mode"; exit 1; }
listing=$("$bin/retort-bench" --models resnet8 --mode train --batch 8 --threads 1 --steps 1 --warmup 0 \
          --input 3x16x16 --classes 4 --math bf16 --profile)
for dir in fwd bwd-data bwd-weight; do
  grep -qE "^  $dir x\[8, 16, 16, 16\] w\[16, 16, 3, 3\] g1: .* bf16 \(" <<<"$listing" ||
    { echo "FAIL: retort-bench --math bf16 ran no bf16 $dir kernel:"; echo "$listing"; exit 1; }
done
a=$(loss ieee); b=$(loss bf16)
awk -v a="$a" -v b="$b" 'BEGIN { d = (a - b) / a; exit !(a != b && d <= 0.01 && d >= -0.01) }' ||
  { echo "FAIL: eval loss ieee $a vs bf16 $b (expected within 1 %, not equal)"; exit 1; }
line=$("$bin/retort-eval" "$tmp/a/model.safetensors" --math bf16)
grep -qF "(math bf16)" <<<"$line" || { echo "FAIL: eval line"; exit 1; }
fi
# Winograd: the same run's 3x3 stride-1 layers of >= 32 channels (resnet8's second stage here) run
# a Winograd kernel in every direction; the eval loss is the F32 one to 1e-4 (Winograd's
# rounding error is about 1e-6 of a convolution's scale: the F32 loss printed can come out equal).
out=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/w" --set experiment.math=winograd --set solver.epochs=1 2>&1)
grep -qF "kernels math winograd, deterministic" <<<"$out" || { echo "FAIL: no winograd kernels line in '$out'"; exit 1; }
grep -qF "convolutions f32 winograd" <<<"$out" || { echo "FAIL: the cpu line does not say winograd: '$out'"; exit 1; }
listing=$("$bin/retort-bench" --models resnet8 --mode train --batch 8 --threads 1 --steps 1 --warmup 0 \
          --input 3x16x16 --classes 4 --math winograd --profile)
for dir in fwd bwd-data bwd-weight; do
  grep -qE "^  $dir x\[8, 32, 8, 8\] w\[32, 32, 3, 3\] g1: .*wino.* winograd \(" <<<"$listing" ||
    { echo "FAIL: retort-bench --math winograd ran no Winograd $dir kernel:"; echo "$listing"; exit 1; }
  grep -qE "^  $dir x\[8, 16, 16, 16\] w\[16, 16, 3, 3\] g1: .*winograd" <<<"$listing" &&
    { echo "FAIL: a 16-channel layer ran Winograd:"; echo "$listing"; exit 1; }
done
# (Inference too: the fused conv + BN, the BN folded into the Winograd kernel's weights and bias.)
listing=$("$bin/retort-bench" --models resnet8 --mode infer --batch 8 --threads 1 --steps 1 --warmup 0 \
          --input 3x16x16 --classes 4 --math winograd --profile)
grep -qE "^  fwd\+bn x\[8, 32, 8, 8\] w\[32, 32, 3, 3\] g1: .*wino.* winograd \(" <<<"$listing" ||
  { echo "FAIL: retort-bench --mode infer --math winograd ran no fused Winograd kernel:"; echo "$listing"; exit 1; }
w=$(loss winograd)
awk -v a="$a" -v b="$w" 'BEGIN { d = (a - b) / a; exit !(d <= 1e-4 && d >= -1e-4) }' ||
  { echo "FAIL: eval loss ieee $a vs winograd $w (expected within 1e-4)"; exit 1; }
# A KD run in Winograd mode (run a, resnet8, as the frozen teacher: its eval-mode forward takes the
# fused conv + BN with the BN folded into the Winograd kernel) ends with a finite loss.
cat > "$tmp/kd.json" <<JSON
{"schema_version": 1, "experiment": {"name": "kd", "seed": 0, "output_dir": "$tmp", "math": "winograd"},
 "data": {"dataset": "synthetic", "image_size": 16, "channels": 3, "num_classes": 4, "synthetic_size": 128,
          "batch_size": 32, "num_workers": 0},
 "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "$tmp/a/model.safetensors"},
 "distill": {"terms": [{"type": "ce", "weight": 0.1}, {"type": "kd", "weight": 0.9, "params": {"temperature": 4}}]},
 "solver": {"optimizer": "sgd", "lr": 0.05, "epochs": 1}}
JSON
out=$("$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/kd" 2>&1)
grep -qF "kernels math winograd" <<<"$out" && grep -qE "done: student best top-1 [0-9.]+%" <<<"$out" ||
  { echo "FAIL: KD run in Winograd mode: '$out'"; exit 1; }
expect_refusal "tf32 on the CPU" 'experiment.math "tf32": TF32 is a GPU tensor-core format' \
  "$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/b" --set experiment.math=tf32
expect_refusal "unknown mode" '"fp16" is not a math mode' \
  "$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/c" --set experiment.math=fp16
expect_refusal "bench tf32 on the CPU" '--math "tf32"' "$bin/retort-bench" --models resnet8 --math tf32
expect_refusal "eval tf32 on the CPU" '--math "tf32"' "$bin/retort-eval" "$tmp/a/model.safetensors" --math tf32
echo "math_modes: ok (eval loss ieee $a, bf16 $b, winograd $w)"
