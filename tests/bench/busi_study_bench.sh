#!/usr/bin/env bash
# The real programs on real images, side by side with quality_bench (issue
# 15): busi-sites as four hospitals run through the deploy path of the
# README: a study kit (`echofed pki study`), `echofed-coordinator`, one
# `echofed-agent` per hospital over mutual TLS on loopback (sites a, b, c
# train, d validates externally), `echofed run start` with a plan of the
# same recipe, `echofed report` as the statistician; then quality_bench with
# the same settings and seed in one process. Prints one table of both.
#
#   tests/bench/busi_study_bench.sh                 # plan defaults, 128 px, 40 rounds
#   ROUNDS=5 SIZE=64 tests/bench/busi_study_bench.sh  # a quick look
#   STRATEGY=FEDBN SEED=1 tests/bench/busi_study_bench.sh
#
# The agents train one after another's CPU time: with 3 training sites on 2
# cores, expect about 1.5x quality_bench's time for the federated part.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tests/bench/busi_study_bench.sh [-h|--help]

busi-sites as four hospitals through the real programs (echofed pki,
echofed-coordinator, one echofed-agent per site over mutual TLS, echofed run
start, echofed report), then quality_bench with the same recipe and seed;
prints one table of both. Prints SKIPPED and exits 0 without the data.

Environment (default):
  BIN       the built programs (build/bin)
  DATA      the busi-sites folder (../shared/data/busi-sites)
  ROUNDS    federated rounds (40)
  SIZE      image side in pixels (128)
  SEED      initialisation seed (0)
  STRATEGY  plan strategy: FEDAVG, FEDPROX, FEDBN, ... (FEDAVG)
  MODEL     registry model (resnet18_narrow)

Example: ROUNDS=5 SIZE=64 tests/bench/busi_study_bench.sh
EOF
}
case "${1:-}" in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; echo "busi_study_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
root=$(pwd)
bin=${BIN:-$root/build/bin}
data=${DATA:-$root/../shared/data/busi-sites}
rounds=${ROUNDS:-40}
size=${SIZE:-128}
seed=${SEED:-0}
strategy=${STRATEGY:-FEDAVG}
model=${MODEL:-resnet18_narrow}
if [ ! -f "$data/site-a/manifest.csv" ]; then
  echo "SKIPPED: busi-sites not found ($data); set DATA"
  exit 0
fi
for program in echofed echofed-coordinator echofed-agent quality_bench; do
  [ -x "$bin/$program" ] || { echo "$bin/$program missing: build first" >&2; exit 1; }
done
work=$(mktemp -d /tmp/echofed-busi-study.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$work/logs"
echo "work folder: $work"

# 1. The study kit, as the coordinating centre makes it.
cat >"$work/study.textproto" <<STUDY
name: "busi-sites quality study"
coordinator_hosts: "localhost"
coordinator_hosts: "127.0.0.1"
coordinator_port: 7443
participants { identity: "site-a" role: "site" }
participants { identity: "site-b" role: "site" }
participants { identity: "site-c" role: "site" }
participants { identity: "site-d" role: "site" }
participants { identity: "operator" role: "operator" }
participants { identity: "statistician" role: "statistician" }
STUDY
"$bin/echofed" pki study --file "$work/study.textproto" --dir "$work/pki" \
  >"$work/logs/pki.log"

# 2. The coordinator on a free loopback port.
cat >"$work/coordinator.textproto" <<CONFIG
listen_address: "127.0.0.1:0"
tls { ca_cert: "$work/pki/coordinator/ca.pem" cert: "$work/pki/coordinator/cert.pem" key: "$work/pki/coordinator/key.pem" }
state_dir: "$work/coordinator-state"
enrolment_file: "$work/pki/enrolment.textproto"
CONFIG
"$bin/echofed-coordinator" --config "$work/coordinator.textproto" \
  --port-file "$work/port" >"$work/logs/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
address="127.0.0.1:$(cat "$work/port")"
echo "coordinator: $address"

# 3. One agent per hospital, one LibTorch thread each.
for site in site-a site-b site-c site-d; do
  cat >"$work/$site.agent.textproto" <<CONFIG
coordinator_address: "$address"
coordinator_name: "localhost"
tls { ca_cert: "$work/pki/$site/ca.pem" cert: "$work/pki/$site/cert.pem" key: "$work/pki/$site/key.pem" }
data_dir: "$data/$site"
state_dir: "$work/$site-state"
device: "cpu"
CONFIG
  "$bin/echofed-agent" run --config "$work/$site.agent.textproto" \
    --exit-after-run --threads 1 >"$work/logs/$site.log" 2>&1 &
  pids+=($!)
done

# 4. The plan: quality_bench's default recipe (the rest are plan defaults:
#    per-image z-score, STRONG augmentation, optimiser state kept).
cat >"$work/plan.textproto" <<PLAN
name: "busi-sites, $strategy, $rounds rounds, seed $seed"
class_names: "benign"
class_names: "malignant"
class_names: "normal"
model: "$model"
image_size: $size
rounds: $rounds
local_epochs: 1
batch_size: 16
learning_rate: 0.002
trainer: ADAMW
schedule: COSINE
strategy: $strategy
train_fraction: 0.7
split_seed: 2026
seed: $seed
min_sites: 3
round_deadline_seconds: 3600
min_cell_count: 1
sites { site: "site-a" role: TRAIN }
sites { site: "site-b" role: TRAIN }
sites { site: "site-c" role: TRAIN }
sites { site: "site-d" role: EXTERNAL_VALIDATION }
PLAN
start=$(date +%s)
"$bin/echofed" run start --plan "$work/plan.textproto" \
  --kit "$work/pki/operator" --coordinator "$address" --server-name localhost \
  | tee "$work/logs/run-start.log"
# The agents leave when the run ends.
for pid in "${pids[@]:1}"; do wait "$pid" || true; done
seconds=$(($(date +%s) - start))
"$bin/echofed" run status --kit "$work/pki/operator" --coordinator "$address" \
  --server-name localhost >"$work/logs/run-status.log" 2>&1 || true
"$bin/echofed" report --kit "$work/pki/statistician" --coordinator "$address" \
  --server-name localhost --out "$work/report" >"$work/logs/report.log" 2>&1
echo "report: $work/report/report.html"

# 5. The same recipe in quality_bench, one process.
"$bin/quality_bench" --data "$data" --model "$model" --size "$size" \
  --rounds "$rounds" --epochs 1 --seed "$seed" --seeds 1 \
  --configs "$(echo "$strategy" | tr '[:upper:]' '[:lower:]')" \
  --label "quality_bench" >"$work/quality_bench.txt" 2>"$work/logs/quality_bench.log"

python3 - "$work/report/report.json" "$seconds" "$strategy" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
def auc(set_key, patient_level):
    for s in report.get("sets", []):
        if s.get("set") != set_key:
            continue
        block = s.get("subtype") or {}
        if patient_level:
            block = (s.get("subtype_patient_level") or {}).get("summary") or {}
        value = (block.get("macro_auc") or {}).get("estimate")
        return "-" if value is None else f"{value:.3f}"
    return "-"
row = [auc("pooled_internal", False), auc("pooled_internal", True),
       auc("pooled_external", False), auc("pooled_external", True)]
print()
print("| training | internal AUC | internal patient AUC | site-d AUC | site-d patient AUC | s |")
print("|---|---|---|---|---|---|")
print(f"| real agents over mTLS, {sys.argv[3].lower()} | " + " | ".join(row) + f" | {sys.argv[2]} |")
PY
grep "^| quality_bench" "$work/quality_bench.txt" |
  awk -F'|' '{printf "|%s|%s|%s|%s|%s|%s|\n", $2, $4, $5, $6, $7, $10}'
