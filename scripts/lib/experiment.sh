# Sourced by the experiment scripts after `set -euo pipefail`: goes to the repository root, builds
# (scripts/build.sh), sets `root`, `build` (RETORT_BUILD_DIR or build/) and `seeds` (SEEDS, default
# "0 1 2"), and defines the helpers that read and summarise results:
# top1 RUN_DIR            the last-epoch test top-1 from RUN_DIR/summary.json
# mean_std WIDTH LABEL V… prints "LABEL  mean ± sample std  (V…)", LABEL padded to WIDTH
# fmnist_teacher          trains the Fashion-MNIST tables' resnet8x4 teacher (configs/fmnist/resnet8x4.json,
#                         10 epochs) into runs/fmnist_resnet8x4 unless it is there (about an hour)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
cd "$root"
bash scripts/build.sh >/dev/null
seeds=${SEEDS:-"0 1 2"}

top1() { sed -n 's/.*"last_top1": \([0-9.]*\).*/\1/p' "$1/summary.json"; }
mean_std() {
  local width=$1 label=$2; shift 2
  echo "$*" | awk -v w="$width" -v label="$label" '{ m = 0; for (i = 1; i <= NF; i++) m += $i; m /= NF;
    v = 0; for (i = 1; i <= NF; i++) v += ($i - m) ^ 2; sd = (NF > 1) ? sqrt(v / (NF - 1)) : 0;
    printf "%-*s %.2f ± %.2f  (%s)\n", w, label, m, sd, $0 }'
}
fmnist_teacher() {
  [ -f runs/fmnist_resnet8x4/summary.json ] ||
    "$build/apps/retort-train" configs/fmnist/resnet8x4.json --run-dir runs/fmnist_resnet8x4 --resume auto \
      --set solver.epochs=10 --set solver.schedule.total_epochs=10
}
