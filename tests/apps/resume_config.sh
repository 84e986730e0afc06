#!/usr/bin/env bash
# --resume with a changed config, end to end on synthetic data: a 1-epoch run A with a checkpoint; resuming
# it with a changed recipe (solver.lr) is refused (exit code 1, a config error) naming the key, both values and the flag;
# with more epochs (allowed, logged) it continues from epoch 2; with --allow-config-change the changed
# recipe continues and config.json records the new value; --label-smoothing, part of the recipe, is
# refused too; SIGTERM mid-run stops with a checkpoint (exit code 130) that resumes. Usage: resume_config.sh BIN_DIR
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
set +e
err=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" --resume auto --set solver.epochs=2 --set solver.lr=0.1 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "solver.lr 0.05 -> 0.1" <<<"$err" && grep -qF -- "--allow-config-change" <<<"$err" &&
  ! tail -1 <<<"$err" | grep -qF "solver.epochs" || { echo "FAIL: changed recipe: rc $rc, '$err'"; exit 1; }
out=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" --resume auto --set solver.epochs=2 2>&1)
grep -qF "config changed since the checkpoint (same recipe): solver.epochs 1 -> 2" <<<"$out" &&
  grep -qF "at epoch 2" <<<"$out" || { echo "FAIL: more epochs: '$out'"; exit 1; }
out=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" --resume auto --set solver.epochs=3 --set solver.lr=0.1 \
      --allow-config-change 2>&1)
grep -qF "accepted (--allow-config-change" <<<"$out" && grep -qF "solver.lr 0.05 -> 0.1" <<<"$out" ||
  { echo "FAIL: --allow-config-change: '$out'"; exit 1; }
grep -qE '"lr": ?0.1[,}]' "$tmp/a/config.json" || { echo "FAIL: config.json does not record the new lr"; exit 1; }
# retort-train's --label-smoothing is part of the recipe: resuming with it is refused like any other change.
set +e
err=$("$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" --resume auto --set solver.epochs=4 --set solver.lr=0.1 \
      --label-smoothing 0.1 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "solver.label_smoothing 0.0 -> 0.1" <<<"$err" ||
  { echo "FAIL: --label-smoothing on resume: rc $rc, '$err'"; exit 1; }
# SIGTERM (or SIGINT) mid-run: the step under way finishes, a checkpoint is written, exit code 130; the
# run then resumes from it.
sed 's/"epochs": 1/"epochs": 1000/' "$tmp/a.json" > "$tmp/long.json"
"$bin/retort-train" "$tmp/long.json" --run-dir "$tmp/long" --set log.every_steps=1 > "$tmp/long.out" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do grep -q " step " "$tmp/long/train.log" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" = 130 ] && grep -qF "interrupted (SIGTERM)" "$tmp/long.out" && [ -s "$tmp/long/checkpoints/latest" ] ||
  { echo "FAIL: SIGTERM: rc $rc, $(tail -3 "$tmp/long.out")"; exit 1; }
# Said once where the user reads (the app's error line), and kept in train.log.
[ "$(grep -c "interrupted (SIGTERM)" "$tmp/long.out")" = 1 ] && grep -qF "interrupted (SIGTERM)" "$tmp/long/train.log" ||
  { echo "FAIL: SIGTERM's line should be printed once and logged: $(grep "interrupted" "$tmp/long.out")"; exit 1; }
out=$("$bin/retort-train" "$tmp/long.json" --run-dir "$tmp/long" --resume auto --set solver.epochs=1 2>&1)
grep -qF "resumed from" <<<"$out" || { echo "FAIL: resume after SIGTERM: '$out'"; exit 1; }
grep -qF '"event":"resume"' "$tmp/long/metrics.jsonl" || { echo "FAIL: no resume event in metrics.jsonl"; exit 1; }
echo "resume_config: ok"
