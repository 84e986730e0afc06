#!/usr/bin/env bash
# model.init end to end on synthetic data: a 1-epoch run A, then runs that start from A's weights. With
# lr 1e-30 the weights stay A's exactly (only BN statistics move), which --stats shows; a fresh run differs;
# a missing file and a file of another architecture are clear errors (exit code 2). Usage: model_init.sh BIN_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/a.json" <<JSON
{"schema_version": 1, "experiment": {"name": "a", "seed": 0, "output_dir": "$tmp"},
 "data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "num_classes": 4, "synthetic_size": 64,
          "batch_size": 32, "num_workers": 0},
 "model": {"arch": "resnet8"}, "solver": {"optimizer": "sgd", "lr": 0.05, "epochs": 1}}
JSON
"$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" > /dev/null
frozen=(--set solver.lr=1e-30 --set solver.momentum=0 --set solver.weight_decay=0 --set experiment.seed=5)
out=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/b" "${frozen[@]}" --set "model.init=$tmp/a/model.safetensors")
grep -qF "init    weights from $tmp/a/model.safetensors" <<<"$out" || { echo "FAIL: no init line in '$out'"; exit 1; }
"$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/fresh" "${frozen[@]}" > /dev/null
weights() { "$bin/retort-inspect" --stats "$1" | grep -E '^(conv1|layer2\.0\.conv1|fc)\.weight '; }
a=$(weights "$tmp/a/model.safetensors"); b=$(weights "$tmp/b/model.safetensors"); f=$(weights "$tmp/fresh/model.safetensors")
[ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAIL: initialised weights differ from A's:"; echo "$a"; echo "$b"; exit 1; }
[ "$a" != "$f" ] || { echo "FAIL: a fresh run has A's weights too (the check shows nothing)"; exit 1; }
grep -qF '"init"' "$tmp/b/config.json" || { echo "FAIL: the run's config.json does not record model.init"; exit 1; }
# Errors: a missing file, another architecture.
set +e
err=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/c" --set "model.init=$tmp/nope.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && grep -qF "nope.safetensors" <<<"$err" || { echo "FAIL: missing file: rc $rc, '$err'"; exit 1; }
set +e
err=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/d" --set model.arch=resnet8x4 \
      --set "model.init=$tmp/a/model.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && grep -qF "a/model.safetensors" <<<"$err" || { echo "FAIL: wrong architecture: rc $rc, '$err'"; exit 1; }
echo "$err" | head -3
echo "model_init: ok"
