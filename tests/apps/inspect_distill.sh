#!/usr/bin/env bash
# retort-inspect --distill end to end on synthetic data: a 1-epoch teacher from retort-train, then one
# SoKD step of a config that distils from it (also with --set) — the terms, the strategy's view (sub-policy, mask grid),
# the dump file, the pictures and the loss graph; SoKD around KD (the refined teacher logits); a KD run's
# agreement with the teacher, and retort-eval --against. Usage: inspect_distill.sh BIN_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data='"data": {"dataset": "synthetic", "image_size": 16, "channels": 1, "num_classes": 4, "synthetic_size": 64,
               "batch_size": 32, "num_workers": 0}'
solver='"solver": {"optimizer": "sgd", "lr": 0.05, "epochs": 1}'
cat > "$tmp/teacher.json" <<JSON
{"schema_version": 1, "experiment": {"name": "t", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet8"}, $solver}
JSON
"$bin/retort-train" "$tmp/teacher.json" --run-dir "$tmp/teacher" > "$tmp/train.log"
cat > "$tmp/sokd.json" <<JSON
{"schema_version": 1, "experiment": {"name": "s", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "$tmp/teacher/model.safetensors"},
 "distill": {"terms": [{"type": "ce"}, {"type": "sokd", "params": {"heatmap_classes": 4, "area_num": 3}}]}, $solver}
JSON
out=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --batch 4 --step 3 --dump "$tmp/view.safetensors" \
     --images "$tmp/pictures")
echo "$out"
for want in "sokd.feat" "sokd.dam" "sub-policy" "mask, sample 0" "augmented_teacher    f32[4, 32, 8, 8]" \
            "teacher.layer2               f32[4, 32, 8, 8]" "wrote 12 tensors" "wrote 32 pictures"; do
  grep -qF "$want" <<<"$out" || { echo "FAIL: no '$want' in the output"; exit 1; }
done
# (Outputs go to variables first: with pipefail, `prog | grep -q` fails when grep exits early.)
listing=$("$bin/retort-inspect" "$tmp/view.safetensors")
grep -qF "term.sokd.mask" <<<"$listing" || { echo "FAIL: dump lacks the mask"; exit 1; }
# The count of all-zero masks the output reports is the dumped mask's (read with the standard library).
empty=$(python3 - "$tmp/view.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
meta = json.loads(raw[8:8 + n])["term.sokd.mask"]
assert meta["dtype"] == "F32", meta
b, h, w = meta["shape"]
lo, hi = meta["data_offsets"]
vals = struct.unpack("<%df" % (b * h * w), raw[8 + n + lo:8 + n + hi])
print(sum(all(v == 0 for v in vals[i * h * w:(i + 1) * h * w]) for i in range(b)))
PY
)
grep -qF "samples whose mask is all zero: $empty of 4" <<<"$out" ||
  { echo "FAIL: the output's count of all-zero masks is not the dump's ($empty of 4)"; exit 1; }
grep -qF "student.layer2" <<<"$listing" || { echo "FAIL: dump lacks the tapped student feature"; exit 1; }
# --images: per sample the input, 2 taps and 5 maps of the SoKD term (mask, student, teacher, augmented
# teacher, the mask on the input) = 8 PNG files for each of the 4 samples, enlarged 6x (16 -> 96 pixels), and
# a page that shows them.
[ "$(ls "$tmp/pictures"/*.png | wc -l)" = 32 ] || { echo "FAIL: not 32 PNG files"; ls "$tmp/pictures"; exit 1; }
png=$(od -An -tx1 -N24 "$tmp/pictures/sample3_term.sokd.augmented_teacher.png" | tr -d ' \n')
[ "${png:0:16}" = 89504e470d0a1a0a ] || { echo "FAIL: not a PNG file: $png"; exit 1; }
[ "${png:32:16}" = 0000006000000060 ] || { echo "FAIL: not 96x96 pixels: $png"; exit 1; }
page=$(cat "$tmp/pictures/index.html")
for want in 'src="sample3_term.sokd.mask_on_input.png"' "term.sokd.augmented_teacher" "teacher.layer2" \
            "term.sokd.boxes i64[4, 3, 4]" "term sokd (sokd): sub-policy"; do
  grep -qF "$want" <<<"$page" || { echo "FAIL: no '$want' in index.html"; exit 1; }
done
graph=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --batch 2 --graph)
grep -qF "SigmoidBackward" <<<"$graph" || { echo "FAIL: the graph shows no DAM head (SigmoidBackward)"; exit 1; }
grep -qF "MseLossBackward" <<<"$graph" || { echo "FAIL: the graph shows no feature loss"; exit 1; }
# A batch larger than the test split takes the split, and says so.
out=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --batch 100000 2>&1)
grep -qE "note: --batch 100000: the test split has [0-9]+ images; the step takes them all" <<<"$out" ||
  { echo "FAIL: no note for a batch beyond the test split: $(head -3 <<<"$out")"; exit 1; }
# --dump onto the file the step reads is refused (it would replace it), and a student checkpoint of
# another architecture is named as such.
cp "$tmp/teacher/model.safetensors" "$tmp/student.safetensors"
set +e
out=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --checkpoint "$tmp/student.safetensors" \
      --dump "$tmp/student.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "is the file the step reads" <<<"$out" && cmp -s "$tmp/student.safetensors" "$tmp/teacher/model.safetensors" ||
  { echo "FAIL: --dump onto the checkpoint: rc $rc, $out"; exit 1; }
cp "$tmp/sokd.json" "$tmp/sokd_copy.json"
set +e
out=$("$bin/retort-inspect" --distill "$tmp/sokd_copy.json" --dump "$tmp/sokd_copy.json" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "is the file the step reads" <<<"$out" && cmp -s "$tmp/sokd.json" "$tmp/sokd_copy.json" ||
  { echo "FAIL: --dump onto the config: rc $rc, $out"; exit 1; }
# --dump into a directory that does not exist is refused before the step runs, naming the directory (not
# a temporary file); --images DIR is a directory the step makes, parents included.
set +e
out=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --dump "$tmp/nosuch/view.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "retort-inspect: --dump $tmp/nosuch/view.safetensors: the directory '$tmp/nosuch' does not exist" <<<"$out" &&
  ! grep -qF "total" <<<"$out" && ! grep -qF ".tmp." <<<"$out" ||
  { echo "FAIL: --dump into a missing directory: rc $rc, $out"; exit 1; }
"$bin/retort-inspect" --distill "$tmp/sokd.json" --batch 2 --images "$tmp/pics/a/b" >/dev/null
[ -f "$tmp/pics/a/b/index.html" ] || { echo "FAIL: --images did not make its directory"; exit 1; }
set +e
out=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --set model.arch=resnet14 --checkpoint "$tmp/student.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "holds a 'resnet8' model (its metadata 'arch'), but the config's student (model.arch) is 'resnet14'" <<<"$out" ||
  { echo "FAIL: a checkpoint of another architecture: rc $rc, $(head -3 <<<"$out")"; exit 1; }
# Leaves carry their checkpoint names: the student's state_dict keys, the terms' "term.<name>." ones.
for want in 'label="layer1.0.conv1.weight' 'label="term.sokd.dam.heatmap_head.0.weight'; do
  grep -qF "$want" <<<"$graph" || { echo "FAIL: the graph has no leaf $want"; exit 1; }
done
# SoKD as a plug-in around KD: the host's part, and the refined teacher logits beside the original ones.
cat > "$tmp/plugin.json" <<JSON
{"schema_version": 1, "experiment": {"name": "p", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "$tmp/teacher/model.safetensors"},
 "distill": {"terms": [{"type": "ce"}, {"type": "sokd", "params": {"feat_weight": 0, "dam_weight": 0,
             "host": {"type": "kd", "params": {"temperature": 4}}}}]}, $solver}
JSON
out=$("$bin/retort-inspect" --distill "$tmp/plugin.json" --batch 4 --step 3)
for want in "sokd.kd" "refined_teacher_logits" "host kd on the refined targets"; do
  grep -qF "$want" <<<"$out" || { echo "FAIL: no '$want' in the plug-in's output"; echo "$out"; exit 1; }
done
# --set changes the config as in retort-distill: SoKD with the RELAX estimator shows its estimate; a bad
# value is refused naming the key.
out=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --set distill.terms.1.params.estimator=relax --batch 4 --step 3)
grep -qF "relax: f " <<<"$out" || { echo "FAIL: no RELAX estimate with --set estimator=relax"; echo "$out"; exit 1; }
set +e
err=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --set distill.terms.1.params.estimator=reinforce 2>&1); rc=$?
set -e
[ "$rc" != 0 ] && grep -qF "params.estimator" <<<"$err" || { echo "FAIL: rc $rc, '$err'"; exit 1; }
# A missing checkpoint is a clear error naming it, exit code 2.
set +e
err=$("$bin/retort-inspect" --distill "$tmp/sokd.json" --checkpoint "$tmp/nope.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && grep -qF "nope.safetensors" <<<"$err" || { echo "FAIL: rc $rc, '$err'"; exit 1; }
# retort-distill from the same teacher: every evaluation reports the student's agreement with the
# teacher's test predictions and the KL from them, in the log and summary.json.
cat > "$tmp/kd.json" <<JSON
{"schema_version": 1, "experiment": {"name": "k", "seed": 0, "output_dir": "$tmp"}, $data,
 "model": {"arch": "resnet8"}, "teacher": {"arch": "resnet8", "checkpoint": "$tmp/teacher/model.safetensors"},
 "distill": {"terms": [{"type": "ce", "weight": 0.1}, {"type": "kd", "weight": 0.9}]}, $solver}
JSON
out=$("$bin/retort-distill" "$tmp/kd.json" --run-dir "$tmp/kd" 2>&1)
grep -qE "test top-1 .*; agrees with the teacher on [0-9.]+%, KL from it [0-9.]+" <<<"$out" ||
  { echo "FAIL: no agreement with the teacher in: $out"; exit 1; }
grep -qE '"last_agreement": [0-9.]+' "$tmp/kd/summary.json" || { echo "FAIL: summary.json lacks last_agreement"; exit 1; }
# retort-eval --against measures the same afterwards from the two model files.
want=$(sed -n 's/.*"last_agreement": \([0-9.e-]*\).*/\1/p' "$tmp/kd/summary.json")
ev=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --against "$tmp/teacher/model.safetensors" --json)
got=$(sed -n 's/.*"agreement":\([0-9.e-]*\).*/\1/p' <<<"$ev")
[ -n "$want" ] && [ "$got" = "$want" ] || { echo "FAIL: retort-eval --against agreement '$got', the run's '$want': $ev"; exit 1; }
want=$(sed -n 's/.*"last_kl_teacher": \([0-9.e-]*\).*/\1/p' "$tmp/kd/summary.json")
got=$(sed -n 's/.*"kl":\([0-9.e-]*\).*/\1/p' <<<"$ev")
# (Same within rounding: the run evaluates in batches of 32, retort-eval of 256.)
[ -n "$want" ] && awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-6 * b) }' ||
  { echo "FAIL: retort-eval --against KL '$got', the run's '$want': $ev"; exit 1; }
set +e
err=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --against "$tmp/nope.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && grep -qF "nope.safetensors" <<<"$err" || { echo "FAIL: --against a missing file: rc $rc, '$err'"; exit 1; }
# --cka: a model against itself is 1 on the diagonal (default taps: the stages, :pooled, logits); against
# the teacher, a 2 x 5 matrix of the taps asked for (an alias, stage1, given as its path), every entry a CKA
# below 1.
ev=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --against "$tmp/kd/model.safetensors" --cka --json)
python3 - "$ev" <<'PY' || exit 1
import json, sys
c = json.loads(sys.argv[1])["cka"]
assert c["taps"] == ["layer1", "layer2", "layer3", ":pooled", "logits"] == c["against_taps"], c
assert c["samples"] == 64 and c["samples_skipped"] == 0, c
for i, row in enumerate(c["matrix"]):
    assert abs(row[i] - 1) < 1e-9, ("diagonal", i, row)
PY
ev=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --against "$tmp/teacher/model.safetensors" --cka \
     --taps stage1,logits --json)
python3 - "$ev" <<'PY' || exit 1
import json, sys
c = json.loads(sys.argv[1])["cka"]
assert c["taps"] == ["layer1", "logits"] and len(c["matrix"]) == 2 and all(len(r) == 5 for r in c["matrix"]), c
assert all(-1 < v < 1 - 1e-6 for r in c["matrix"] for v in r), c
PY
# Stage aliases resolve on each network: "stages" is every stage, "stage-1" the last.
ev=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --against "$tmp/teacher/model.safetensors" --cka \
     --taps stages --against-taps stage-1:preact --json)
python3 - "$ev" <<'PY' || exit 1
import json, sys
c = json.loads(sys.argv[1])["cka"]
assert c["taps"] == ["layer1", "layer2", "layer3"] and c["against_taps"] == ["layer3:preact"], c
PY
set +e
err=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --cka 2>&1); rc=$?
[ "$rc" = 1 ] && grep -qF -- "--against" <<<"$err" || { echo "FAIL: --cka without --against: rc $rc, '$err'"; exit 1; }
err=$("$bin/retort-eval" "$tmp/kd/model.safetensors" --against "$tmp/teacher/model.safetensors" --taps layer7 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && grep -qF 'model tap "layer7"' <<<"$err" || { echo "FAIL: --taps layer7: rc $rc, '$err'"; exit 1; }
echo "inspect_distill: ok"
