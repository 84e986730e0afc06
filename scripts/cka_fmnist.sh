#!/usr/bin/env bash
# How much each distilled Fashion-MNIST student came to resemble its teacher, stage by stage: linear CKA
# (retort-eval --against TEACHER --cka, distill/similarity.h) between the student's layer1..layer3,
# :pooled and logits and the same features of its teacher, on the 10000 test images, for every student
# run of the Fashion-MNIST table present under runs/fmnist (<method>_s<seed>, scripts/fmnist_table.sh),
# plus the top-1 agreement with the teacher. The CE students are compared with the table's resnet8x4
# teacher, which they never saw. Results per run in runs/fmnist_cka/<run>.json (kept: rerunning only
# measures what is missing); prints mean ± sample std over the seeds.
#   bash scripts/cka_fmnist.sh            every method found
#   bash scripts/cka_fmnist.sh ce kd      a subset
set -euo pipefail
. "$(dirname "$0")/lib/experiment.sh"
out=runs/fmnist_cka
mkdir -p $out
default_teacher=runs/fmnist_resnet8x4/model.safetensors

methods=("$@")
if [ ${#methods[@]} -eq 0 ]; then
  mapfile -t methods < <(ls -d runs/fmnist/*_s[0-9]* 2>/dev/null | sed 's|runs/fmnist/||; s|_s[0-9]*$||' | sort -u)
fi
[ ${#methods[@]} -gt 0 ] || { echo "no student runs under runs/fmnist (scripts/fmnist_table.sh makes them)" >&2; exit 1; }

for m in "${methods[@]}"; do
  for s in $seeds; do
    run=runs/fmnist/${m}_s$s
    [ -f $run/model.safetensors ] || continue
    [ -f $out/${m}_s$s.json ] && continue
    teacher=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("teacher", {}).get("checkpoint") or "")' \
      $run/config.json)
    "$build/apps/retort-eval" $run/model.safetensors --against "${teacher:-$default_teacher}" --cka --json \
      > $out/${m}_s$s.json.tmp
    mv $out/${m}_s$s.json.tmp $out/${m}_s$s.json
  done
done

python3 - "$out" "$seeds" "${methods[@]}" <<'EOF'
import json, statistics, sys
out, seeds, methods = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
def ms(v, digits=3):
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"
rows, taps = [], None
for m in methods:
    rs = []
    for s in seeds:
        try:
            rs.append(json.load(open(f"{out}/{m}_s{s}.json")))
        except FileNotFoundError:
            pass
    if not rs:
        continue
    c = rs[0]["cka"]
    taps = taps or c["taps"]
    diag = [[r["cka"]["matrix"][i][r["cka"]["against_taps"].index(t)] for r in rs] for i, t in enumerate(c["taps"])]
    rows.append([f"{m} ({len(rs)})", ms([r["top1"] for r in rs], 2), ms([r["against"]["agreement"] for r in rs], 2)]
                + [ms(d) for d in diag])
head = ["student (seeds)", "top-1 %", "agreement %"] + [f"CKA {t}" for t in taps]
w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
for r in [head] + rows:
    print("  ".join(str(x).ljust(k) for x, k in zip(r, w)))
EOF
