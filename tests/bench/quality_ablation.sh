#!/usr/bin/env bash
# Issue 15's ablation: each suspect switched alone against echofed 0.1's
# training recipe ("today"), then combinations (the new defaults, the
# reference's hyper-parameters), FedAvg on busi-sites, mean ± sd over seeds. Runs two benchmarks at a time
# with one thread each (the machines here have two cores) and prints one
# table.
#
#   tests/bench/quality_ablation.sh                  # 3 seeds, 128 px, 40 rounds
#   SEEDS=1 ROUNDS=10 tests/bench/quality_ablation.sh  # a quick look
#   ONLY="today new-defaults" tests/bench/quality_ablation.sh   # some rows
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tests/bench/quality_ablation.sh [-h|--help]

Issue 15's ablation: each suspect of echofed 0.1's training recipe switched
alone, then combinations, FedAvg on busi-sites with quality_bench, mean ± sd
over seeds; prints one table.

Environment (default):
  BENCH     the quality_bench program (./build/bin/quality_bench)
  SEEDS     seeds per row (3)
  ROUNDS    federated rounds (40)
  SIZE      image side in pixels (128)
  PARALLEL  benchmarks at a time, one thread each (2)
  OUT       folder for each row's table and log (a new /tmp/echofed-ablation.*)
  ONLY      rows to run, space-separated (all): today keep-optimizer
            cosine-over-run fixed-range pooled-zscore mild-augment no-augment
            weight-decay-1e-4 resnet18-narrow batch32-lr1e-3 reference-recipe
            reference-recipe-per-image new-defaults new-defaults-mild-run

Example: SEEDS=1 ROUNDS=10 tests/bench/quality_ablation.sh
EOF
}
case "${1:-}" in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; echo "quality_ablation.sh: unknown argument '$1'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
bench=${BENCH:-./build/bin/quality_bench}
seeds=${SEEDS:-3}
rounds=${ROUNDS:-40}
size=${SIZE:-128}
parallel=${PARALLEL:-2}
out=${OUT:-$(mktemp -d /tmp/echofed-ablation.XXXXXX)}
mkdir -p "$out"

# echofed 0.1's recipe; each variant changes the knobs it names.
declare -A today=([model]=resnet_small [batch]=16 [lr]=2e-3 [weight-decay]=1e-2
  [schedule]=round [normalization]=per_image [augmentation]=strong
  [keep-optimizer]=0)
declare -A variant=(
  [today]=""
  [keep-optimizer]="keep-optimizer=1"
  [cosine-over-run]="schedule=run"
  [fixed-range]="normalization=fixed_range"
  [pooled-zscore]="normalization=dataset"
  [mild-augment]="augmentation=mild"
  [no-augment]="augmentation=none"
  [weight-decay-1e-4]="weight-decay=1e-4"
  [resnet18-narrow]="model=resnet18_narrow"
  [batch32-lr1e-3]="batch=32 lr=1e-3"
  # The reference's hyper-parameters on echofed's model and optimiser
  # state (busi-pytorch's README), with its normalisation or per image.
  [reference-recipe]="model=resnet18_narrow batch=32 lr=1e-3 weight-decay=1e-4
    schedule=run normalization=fixed_range augmentation=mild keep-optimizer=1"
  [reference-recipe-per-image]="model=resnet18_narrow batch=32 lr=1e-3
    weight-decay=1e-4 schedule=run normalization=per_image augmentation=mild
    keep-optimizer=1"
  # The winners together: the new defaults (quality_bench's and the plan's).
  [new-defaults]="model=resnet18_narrow keep-optimizer=1"
  [new-defaults-mild-run]="model=resnet18_narrow keep-optimizer=1
    augmentation=mild schedule=run weight-decay=1e-4"
)
order=(today keep-optimizer cosine-over-run fixed-range pooled-zscore
  mild-augment no-augment weight-decay-1e-4 resnet18-narrow batch32-lr1e-3
  reference-recipe reference-recipe-per-image new-defaults
  new-defaults-mild-run)
selected=(${ONLY:-${order[@]}})

flags_of() {
  declare -A knobs
  local key
  for key in "${!today[@]}"; do knobs[$key]=${today[$key]}; done
  local change
  for change in ${variant[$1]}; do knobs[${change%%=*}]=${change#*=}; done
  for key in "${!knobs[@]}"; do printf -- '--%s %s ' "$key" "${knobs[$key]}"; done
}

echo "ablation: $seeds seeds, $size px, $rounds rounds x 1 epoch; logs in $out"
running=0
for name in "${selected[@]}"; do
  # shellcheck disable=SC2046
  "$bench" $(flags_of "$name") --size "$size" --rounds "$rounds" --epochs 1 \
    --seeds "$seeds" --configs fedavg --threads 1 --label "$name" \
    >"$out/$name.txt" 2>"$out/$name.log" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
echo
echo "| training | seeds | internal AUC | internal patient AUC | site-d AUC | site-d patient AUC | site-d acc % | site-d F1 | s |"
echo "|---|---|---|---|---|---|---|---|---|"
for name in "${selected[@]}"; do
  grep -h "^| $name fedavg" "$out/$name.txt" || echo "| $name | failed: see $out/$name.log |"
done
grep -h "^| reference" "$out/${selected[0]}.txt" || true
