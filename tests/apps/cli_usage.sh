#!/usr/bin/env bash
# Usage errors of every app end to end, on synthetic data: a parse error (an unknown flag, a value that is
# not a number) exits 1, not CLI11's own codes, naming the flag even where a required argument is missing
# too; --help exits 0; --threads outside [1, max] and a negative or too large --seed are refused by
# every app that takes them (train, distill, bench, and eval, inspect and gradcheck, which have --threads
# too); a directory given as the config is named as one; a device that is not there is a usage error in
# retort-gradcheck as elsewhere; retort-inspect --check-arch checks a file against the input its metadata
# names, --arch marks the stages, and flag combinations that would do nothing are refused naming the flags; retort-eval
# --against-arch needs --against, and --config's data.test_limit applies; retort-gradcheck refuses names
# with --all and runs a check named twice once; config errors are found before any work and name the
# key. Usage: cli_usage.sh BIN_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect() {  # expect RC TEXT command...: the command exits with RC and prints TEXT (stdout or stderr)
  local want=$1 text=$2 rc out
  shift 2
  set +e
  out=$("$@" 2>&1); rc=$?
  set -e
  [ "$rc" = "$want" ] && grep -qF -- "$text" <<<"$out" || { echo "FAIL: $*: rc $rc (expected $want), '$out'"; exit 1; }
}
cat > "$tmp/a.json" <<JSON
{"schema_version": 1, "experiment": {"name": "a", "seed": 0, "output_dir": "$tmp"},
 "data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "num_classes": 4, "synthetic_size": 64,
          "batch_size": 32, "num_workers": 0, "test_limit": 40},
 "model": {"arch": "resnet8"}, "solver": {"optimizer": "sgd", "lr": 0.05, "epochs": 1}}
JSON
cat > "$tmp/kd.json" <<JSON
{"schema_version": 1, "experiment": {"name": "kd", "seed": 0, "output_dir": "$tmp"},
 "data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "num_classes": 4, "synthetic_size": 64,
          "batch_size": 32, "num_workers": 0},
 "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "$tmp/a/model.safetensors"},
 "distill": {"terms": [{"type": "ce"}, {"type": "kd"}]}, "solver": {"optimizer": "sgd", "lr": 0.05, "epochs": 1}}
JSON
model=$tmp/a/model.safetensors

# An option followed by another flag instead of its value is named as missing its value (CLI11 took the
# flag as the value and then refused the flag's own value as unexpected).
expect 1 "retort-train: --resume: expected a value, got the flag --threads (give --resume its value before the next flag)" \
  "$bin/retort-train" "$tmp/a.json" --resume --threads 1
expect 1 "retort-eval: --config: expected a value, got the flag --split" "$bin/retort-eval" "$model" --config --split=train
# An empty value (an unset shell variable) is refused, not taken as the option left out.
expect 1 "retort-train: --resume: empty value (leave the option out for its default)" "$bin/retort-train" "$tmp/a.json" --resume ""
expect 1 "retort-distill: --device: empty value" "$bin/retort-distill" "$tmp/kd.json" --device ""

# Parse errors: exit 1 with the app's name; --help: 0.
for app in retort-train retort-distill retort-eval retort-inspect retort-gradcheck retort-bench; do
  expect 1 "$app: The following argument was not expected: --bogus" "$bin/$app" --bogus
  expect 0 "--help" "$bin/$app" --help
done
expect 1 "retort-train: config is required" "$bin/retort-train"
expect 1 "--threads" "$bin/retort-train" "$tmp/a.json" --threads two
expect 1 "--batch-size" "$bin/retort-eval" "$model" --batch-size x

# --threads: 0, negative and huge counts, in every app; --seed: negative and past 2^64 - 1.
for n in 0 -3 100000; do
  expect 1 "--threads $n: expected a thread count in [1, " "$bin/retort-train" "$tmp/a.json" --threads "$n"
  expect 1 "--threads $n: expected a thread count in [1, " "$bin/retort-distill" "$tmp/kd.json" --threads "$n"
  expect 1 "--threads $n: expected a thread count in [1, " "$bin/retort-bench" --models resnet8 --threads "$n"
  expect 1 "--threads $n: expected a thread count in [1, " "$bin/retort-eval" "$model" --threads "$n"
  expect 1 "--threads $n: expected a thread count in [1, " "$bin/retort-inspect" --arch resnet8 --threads "$n"
  expect 1 "--threads $n: expected a thread count in [1, " "$bin/retort-gradcheck" relu --threads "$n"
done
for s in -1 99999999999999999999 1e3; do
  expect 1 "--seed: expected an integer in [0, 18446744073709551615], got '$s'" "$bin/retort-train" "$tmp/a.json" --seed "$s"
  expect 1 "--seed: expected an integer in [0, 18446744073709551615], got '$s'" "$bin/retort-bench" --models resnet8 --seed "$s"
done
expect 1 "--seed: empty value" "$bin/retort-train" "$tmp/a.json" --seed ""
expect 1 "--seed: empty value" "$bin/retort-bench" --models resnet8 --seed ""

# A run with --seed and --threads (they apply), then the tools on its files.
"$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/a" --seed 7 --threads 1 > /dev/null
grep -qE '"seed": ?7[,}]' "$tmp/a/config.json" || { echo "FAIL: --seed 7 is not the run's seed"; exit 1; }
ckpt=$(ls "$tmp"/a/checkpoints/ckpt_*.safetensors | head -1)
# A directory as the config.
expect 1 "$tmp is a directory, expected a JSON config file" "$bin/retort-train" "$tmp"
expect 1 "$tmp is a directory, expected a JSON config file" "$bin/retort-eval" "$model" --config "$tmp"
expect 1 "$tmp is a directory, expected a JSON config file" "$bin/retort-inspect" --distill "$tmp"


# retort-inspect --check-arch: the file's own input (4 classes, 1 channel, 16 px), from a model's metadata
# or a checkpoint's config; a flag given still wins.
expect 0 "loads into resnet8 (4 classes, 1 channels, 16 px" "$bin/retort-inspect" "$model" --check-arch resnet8
expect 0 "loads into resnet8 (4 classes, 1 channels, 16 px" "$bin/retort-inspect" "$ckpt" --check-arch resnet8
expect 2 "does not match resnet8 (10 classes" "$bin/retort-inspect" "$model" --check-arch resnet8 --classes 10
# --arch lists the taps, each stage marked with its alias, and the stages.
expect 0 "blocks.4  (stage3)" "$bin/retort-inspect" --arch MobileNetV2
expect 0 "pre-activation): blocks.1, blocks.2, blocks.4, blocks.6" "$bin/retort-inspect" --arch MobileNetV2
expect 0 "block1  (stage1)" "$bin/retort-inspect" --arch vgg8 --classes 10 --channels 1 --size 28
# Flags that would do nothing.
expect 1 "--arch describes an architecture on its own" "$bin/retort-inspect" "$model" --check-arch resnet8 --arch resnet8
expect 1 "--arch reads no FILE, and $model was given too" "$bin/retort-inspect" "$model" --arch resnet8
expect 1 "--distill reads no FILE" "$bin/retort-inspect" "$model" --distill "$tmp/kd.json"
expect 1 "--graph draws --arch NAME's forward or a --distill step; with FILE it does nothing" \
  "$bin/retort-inspect" "$model" --graph
expect 1 "--dump is for --distill; with FILE it does nothing" "$bin/retort-inspect" "$model" --dump "$tmp/d.safetensors"
expect 1 "--epoch is for --distill; with --arch it does nothing" "$bin/retort-inspect" --arch resnet8 --epoch 2
expect 1 "--stats reads FILE's tensors; with --arch it does nothing" "$bin/retort-inspect" --arch resnet8 --stats
expect 1 "--classes is for --arch and --check-arch; with FILE it does nothing" "$bin/retort-inspect" "$model" --classes 4
expect 1 "--device is where --arch and --distill run" "$bin/retort-inspect" "$model" --device cpu
expect 1 "--graph prints the step's loss graph and nothing else; with --dump" \
  "$bin/retort-inspect" --distill "$tmp/kd.json" --graph --dump "$tmp/d.safetensors"
expect 1 "--scale sizes the --images pictures" "$bin/retort-inspect" --distill "$tmp/kd.json" --scale 2
# Negative --epoch / --step, and --scale checked before the step runs (no pictures written).
expect 1 "--epoch -1: expected an epoch >= 0" "$bin/retort-inspect" --distill "$tmp/kd.json" --epoch -1
expect 1 "--step -5: expected a step >= 0" "$bin/retort-inspect" --distill "$tmp/kd.json" --step -5
for sc in 0 65; do
  expect 1 "--scale $sc: expected 1 to 64" "$bin/retort-inspect" --distill "$tmp/kd.json" --images "$tmp/pics" --scale $sc
  [ ! -e "$tmp/pics" ] || { echo "FAIL: --scale $sc: the step ran and wrote pictures before the refusal"; exit 1; }
done
expect 0 "1*ce + 1*kd on the first 8 test images, epoch 1 (--epoch 0), step index 3" "$bin/retort-inspect" --distill "$tmp/kd.json" --checkpoint "$model" --threads 1 --epoch 0 --step 3
# A run's checkpoint gives the step its position (after 1 epoch of 2 steps: the next epoch's first step),
# unless --epoch / --step say otherwise; a config that differs from the run's in what the step computes
# is named in a note (the step uses it).
"$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/kdrun" > /dev/null
expect 0 "on the first 8 test images, epoch 2 (--epoch 1), step index 2" "$bin/retort-inspect" --distill "$tmp/kd.json" --checkpoint "$tmp/kdrun"
expect 0 "on the first 8 test images, epoch 2 (--epoch 1), step index 0" "$bin/retort-inspect" --distill "$tmp/kd.json" --checkpoint "$tmp/kdrun" --step 0
out=$("$bin/retort-inspect" --distill "$tmp/kd.json" --checkpoint "$tmp/kdrun" --set distill.terms.1.weight=0.5 2>&1)
grep -qF "with --set in: distill.terms.1.weight (absent) -> 0.5. The step uses the latter" <<<"$out" || { echo "FAIL: no config-difference note: $out"; exit 1; }
out=$("$bin/retort-inspect" --distill "$tmp/kdrun/config.json" --checkpoint "$tmp/kdrun" 2>&1)
! grep -qF "note:" <<<"$out" || { echo "FAIL: a note for the run's own config: $out"; exit 1; }

# retort-eval: --against-arch needs --against; --config's data.test_limit (40) applies, the model's own
# training config's does not (the whole test split, 64).
expect 1 "--against-arch is the architecture of the --against model" "$bin/retort-eval" "$model" --against-arch resnet8
expect 0 "on synthetic test, 64 samples" "$bin/retort-eval" "$model" --threads 1
# --arch / --against-arch naming another architecture than the file's metadata: said in one line.
expect 1 "model.safetensors: holds a 'resnet8' model (its metadata 'arch'), but --arch is 'resnet14'" \
  "$bin/retort-eval" "$model" --arch resnet14
expect 1 "model.safetensors: holds a 'resnet8' model (its metadata 'arch'), but --against-arch is 'resnet14'" \
  "$bin/retort-eval" "$model" --against "$model" --against-arch resnet14
expect 0 "on synthetic test, 40 samples" "$bin/retort-eval" "$model" --config "$tmp/a.json"
expect 0 "on synthetic train, 64 samples" "$bin/retort-eval" "$model" --config "$tmp/a.json" --split train
# A model without metadata (as an imported one): the data it expects is unknown, so it is refused without
# --config or --dataset; with --dataset it is evaluated, with a note that no normalisation is applied. A
# model whose metadata names other data (another class count, channels or size) is refused naming both
# sides, before the state dict's shapes would be (also as --against).
python3 - "$model" "$tmp/bare.safetensors" "$tmp/wide.safetensors" "$tmp/noconfig.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = header.pop("__metadata__")
def write(path, h):
    text = json.dumps(h).encode()
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
write(sys.argv[2], header)
write(sys.argv[3], dict(header, __metadata__=dict(meta, num_classes="100")))
write(sys.argv[4], dict(header, __metadata__=dict(meta, config="")))
PY
expect 1 "bare.safetensors: no training config and no dataset in the metadata" "$bin/retort-eval" "$tmp/bare.safetensors" --arch resnet8
expect 1 "note: $tmp/noconfig.safetensors has no training config in its metadata; evaluating on synthetic without normalisation" \
  "$bin/retort-eval" "$tmp/noconfig.safetensors"
expect 1 "noconfig.safetensors: was trained on synthetic (4 classes, images 1x16x16); the evaluation data (test split) is synthetic (10 classes, images 3x32x32)" \
  "$bin/retort-eval" "$tmp/noconfig.safetensors"
expect 1 "(resnet8 was built for the evaluation data, synthetic (10 classes, images 3x32x32); give the architecture" \
  "$bin/retort-eval" "$tmp/bare.safetensors" --arch resnet8 --dataset synthetic
out=$("$bin/retort-eval" "$tmp/bare.safetensors" --arch resnet8 --config "$tmp/a.json" 2>&1)
grep -qF "on synthetic test, 40 samples" <<<"$out" || { echo "FAIL: bare model with --config: $out"; exit 1; }
expect 1 "wide.safetensors: was trained on synthetic (100 classes, images 1x16x16); the evaluation data (test split) is synthetic (4 classes, images 1x16x16)" \
  "$bin/retort-eval" "$tmp/wide.safetensors" --config "$tmp/a.json"
expect 1 "wide.safetensors: was trained on synthetic (100 classes" "$bin/retort-eval" "$model" --against "$tmp/wide.safetensors"
# A run directory means its model.safetensors, or (noted) its newest checkpoint while it has none; a
# directory that is neither is refused, exit 2 as a missing file is; so is --checkpoint naming one.
expect 0 "$tmp/a/model.safetensors (resnet8) on synthetic test" "$bin/retort-eval" "$tmp/a"
expect 0 "meta  format       retort-model-1" "$bin/retort-inspect" "$tmp/a"
mv "$model" "$tmp/a.model"
expect 0 "has no model.safetensors yet (a run in progress?): reading its newest checkpoint, $tmp/a/checkpoints/ckpt_" \
  "$bin/retort-eval" "$tmp/a" --against "$tmp/a.model"
mv "$tmp/a.model" "$model"
mkdir -p "$tmp/emptydir"
expect 2 "emptydir: a directory without model.safetensors or checkpoints/" "$bin/retort-eval" "$tmp/emptydir"
expect 2 "emptydir: no checkpoint" "$bin/retort-inspect" --distill "$tmp/kd.json" --checkpoint "$tmp/emptydir"
expect 1 "retort-inspect: --classes 0: expected a positive count" "$bin/retort-inspect" --arch resnet8 --classes 0
expect 1 "retort-inspect: VGG: images of 4x4 are too small: its three 2x2 max pools need at least 8x8" \
  "$bin/retort-inspect" --arch vgg8 --size 4

# retort-gradcheck: a missing device is a usage error (1) as in the other apps; names with --all are
# refused; a check named twice runs once.
expect 1 "--device: cuda:99" "$bin/retort-gradcheck" relu --device cuda:99
expect 1 "retort-eval: --device: device 'tpu'" "$bin/retort-eval" "$model" --device tpu
expect 1 "retort-bench: --device: device 'tpu'" "$bin/retort-bench" --models resnet8 --device tpu
# A list naming an entry twice, and a mode asked for by name without the list its rows come from.
expect 1 "--mode: 'train' is given twice" "$bin/retort-bench" --models resnet8 --mode train,train
expect 1 "--batch: '8' is given twice" "$bin/retort-bench" --models resnet8 --batch 8,8
expect 1 "--mode kd needs --pairs teacher:student" "$bin/retort-bench" --models resnet8 --mode train,kd
# An empty list entry (CLI11 would drop it), and a flag given twice.
expect 1 "retort-bench: --batch '8,,16': an empty entry in the list" "$bin/retort-bench" --models resnet8 --batch 8,,16
expect 1 "retort-bench: --models 'resnet8,': an empty entry in the list" "$bin/retort-bench" --models=resnet8,
expect 1 "retort-train: --threads is given 2 times; give it once" "$bin/retort-train" "$tmp/a.json" --threads 1 --threads 2
expect 1 "--mode infer needs --models" "$bin/retort-bench" --pairs resnet8:resnet8 --mode kd,infer
expect 1 "experiment.device: cuda:99" "$bin/retort-train" "$tmp/a.json" --device cuda:99
expect 1 "--all runs every check: give it alone" "$bin/retort-gradcheck" --all nonexistent_fn
expect 1 "no check or function named 'nonexistent_fn'" "$bin/retort-gradcheck" nonexistent_fn
expect 0 "1 passed, 0 failed" "$bin/retort-gradcheck" relu relu --threads 1
# --json: one object per check and a summary; --tolerance-scale 0 makes every check with a nonzero |diff|
# fail, exit code 4, naming the element.
expect 0 '{"check":"relu.basic","function":"relu","passed":true,"device":"cpu","atol":1e-05,"rtol":0.001' \
  "$bin/retort-gradcheck" relu --json
expect 0 '{"passed":1,"failed":0}' "$bin/retort-gradcheck" relu --json
expect 4 "against its tolerance 0 (atol + rtol*|numeric|)" "$bin/retort-gradcheck" conv2d.basic --tolerance-scale 0
expect 1 "--tolerance-scale -1: expected a finite number >= 0" "$bin/retort-gradcheck" relu --tolerance-scale -1

# Config errors found before any work, naming the key (and the --set it came from), exit 1: an unknown
# architecture, model.init that is not there, a tap the student lacks or a stage it does not have (before
# the teacher's evaluation, naming the term); --allow-config-change without --resume; the teacher file's own architecture.
expect 1 "model.arch: unknown model 'resnet9'; known models: " "$bin/retort-train" "$tmp/a.json" --set model.arch=resnet9
expect 1 "(the value comes from --set 'teacher.arch=resnet9')" "$bin/retort-distill" "$tmp/kd.json" --set teacher.arch=resnet9
# A flag that sets a config key is named as the source of a bad value, and refused together with a --set
# of the same key (one of them would silently win).
expect 1 "solver.label_smoothing" "$bin/retort-train" "$tmp/a.json" --label-smoothing 2
expect 1 "(the value comes from --label-smoothing 2)" "$bin/retort-train" "$tmp/a.json" --label-smoothing 2
expect 1 "--device cpu and --set 'experiment.device=\"cuda\"' both set experiment.device: give one" \
  "$bin/retort-distill" "$tmp/kd.json" --device cpu --set 'experiment.device="cuda"'
expect 1 "--seed 3 and --set 'experiment.seed=4' both set experiment.seed: give one" \
  "$bin/retort-train" "$tmp/a.json" --seed 3 --set experiment.seed=4
expect 2 "model.init: " "$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/init" --set model.init="$tmp/nope.safetensors"
out=$("$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/tap" --set distill.terms.1.type=fitnet \
        --set distill.terms.1.params.student_tap=layer9 2>&1) && rc=0 || rc=$?
[ "$rc" = 1 ] && grep -qF "distill term 'fitnet' (fitnet): student tap 'layer9'" <<<"$out" && ! grep -q "teacher resnet8 from" <<<"$out" ||
  { echo "FAIL: a missing tap: rc $rc, '$out'"; exit 1; }
expect 1 "distill term 'fitnet' (fitnet): fitnet student_tap on ResNet: tap 'stage4': ResNet has 3 stages" \
  "$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/tap4" --set distill.terms.1.type=fitnet \
  --set distill.terms.1.params.student_tap=stage4
# The start-up lines name the module paths each term's taps resolved to (defaults: each network's stages).
expect 0 "  taps    at: student layer1, layer2, layer3; teacher layer1, layer2, layer3" \
  "$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/taps" --set distill.terms.1.type=at --set solver.epochs=1
expect 1 "--allow-config-change applies to a resumed run" "$bin/retort-train" "$tmp/a.json" --allow-config-change
expect 2 "holds a 'resnet8' model (its metadata 'arch'), but teacher.arch is 'resnet14'" \
  "$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/arch" --set teacher.arch=resnet14
expect 1 "give a file, --arch NAME or --distill CONFIG" "$bin/retort-inspect"
# A value of the wrong type names the flag, the value and the type (not CLI11's "Could not convert").
expect 1 "--threads: 'abc' is not an integer (see --help)" "$bin/retort-train" "$tmp/a.json" --threads abc
expect 1 "--steps: '1.5' is not an integer (see --help)" "$bin/retort-bench" --models resnet8 --steps 1.5
# A RETORT_* environment variable with a value it does not take is a usage error at start, naming it
# (a switch was read as on for anything but "0").
expect 1 'environment variable RETORT_CPU_CONV="bogus": expected auto, im2col or dnnl' \
  env RETORT_CPU_CONV=bogus "$bin/retort-train" "$tmp/a.json" --run-dir "$tmp/env1"
[ ! -e "$tmp/env1" ] || { echo "FAIL: a refused environment left a run directory"; exit 1; }
expect 1 'environment variable RETORT_FUSE_EVAL="off": expected 0 (off) or 1 (on); unset, it is on' \
  env RETORT_FUSE_EVAL=off "$bin/retort-inspect" --arch resnet8
expect 1 'environment variable RETORT_CPU_DEPTHWISE="no": expected 0 (off) or 1 (on)' \
  env RETORT_CPU_DEPTHWISE=no "$bin/retort-inspect" --arch resnet8
expect 1 'environment variable RETORT_CPU_BLOCKED="off": expected 0 (off) or 1 (on); unset, it is on' \
  env RETORT_CPU_BLOCKED=off "$bin/retort-inspect" --arch resnet8
expect 1 'environment variable RETORT_HOST_MEMORY_LIMIT="lots"' \
  env RETORT_HOST_MEMORY_LIMIT=lots "$bin/retort-inspect" --arch resnet8
expect 1 'environment variable RETORT_ALLOW_TF32="yes": expected 0 (off) or 1 (on)' \
  env RETORT_ALLOW_TF32=yes "$bin/retort-inspect" --arch resnet8
expect 0 "layer1" env RETORT_CPU_DEPTHWISE=0 RETORT_FUSE_EVAL=1 "$bin/retort-inspect" --arch resnet8
# --stats counts NaN and infinite values apart, names the tensors, and gives the finite values' statistics.
python3 - "$tmp/nonfinite.safetensors" <<'PY'
import json, struct, sys
data = struct.pack("<4f", 1.0, float("nan"), float("inf"), 3.0) + struct.pack("<2f", 1.0, 2.0)
header = {"bad": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
          "good": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
raw = json.dumps(header).encode()
raw += b" " * (-len(raw) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(raw)) + raw + data)
PY
out=$("$bin/retort-inspect" "$tmp/nonfinite.safetensors" --stats)
grep -qE "^bad .*min +1 max +3 mean +2 std +1  NON-FINITE: 1 NaN, 1 \+inf" <<<"$out" &&
  grep -qF "warning: 1 tensor holds NaN or infinite values (bad)" <<<"$out" && ! grep -qE "^good .*NON-FINITE" <<<"$out" ||
  { echo "FAIL: --stats with non-finite values: $out"; exit 1; }
echo "cli_usage: ok"
