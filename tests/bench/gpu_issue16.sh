#!/usr/bin/env bash
# Issue 16's GPU measurements in one run: the EXTRA of ../shared/gpu's
# run.sh on the GPU machine (the device tool; command, carry [".gpu"],
# timeout_s 540). Usage (no options; settings in the environment):
#
#   STAGES=env,unpack,configure,build TARGETS=train_speed_bench \
#     EXTRA_MIN=200 EXTRA='bash tests/bench/gpu_issue16.sh' bash .gpu/run.sh
#
# On CPU, to check that it runs and prints (small sizes, no GPU):
#
#   BIN=build/bin DEVICE=cpu SIZE=64 BATCH=8 STEPS=4 tests/bench/gpu_issue16.sh
#
# What it prints, in order (each part under its own time limit):
#   1. train_speed_bench against the PyTorch reference (same GPU, $PYTHON's
#      torch), bfloat16 autocast, channels_last, 3 rounds alternating; the
#      `ratio:` line is issue 16's first target (>= 1.0).
#   2. TrainLocal (augmentation STRONG, the batch pipeline on) for STEPS*6
#      steps, with nvidia-smi sampling utilization.gpu every 100 ms: the
#      `GPU busy:` line is the second target (>= 90%); the mean covers the
#      whole program (start-up and the warm-up batches too), so it is a
#      lower bound.
#   3. TrainLocal with the pipeline on (1 and 4 loader threads) and off:
#      the time a step waits for its batch.
#   4. diagnose_bench on the device, when it was built.
# Nothing here synchronises the GPU but the benchmarks' own clocks.
#
# Environment: BIN (the programs; run.sh sets it), PYTHON (a Python with
# torch; default /usr/bin/python3), OUT (nvidia-smi's samples; default a
# temporary folder), DEVICE (cuda), MODEL (resnet18), SIZE (224), BATCH
# (64), STEPS (40).
set -uo pipefail

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: $0 (settings in the environment; --help)" >&2
    exit 2
    ;;
esac

BIN=${BIN:?set BIN to the folder of the built programs}
PYTHON=${PYTHON:-/usr/bin/python3}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-resnet18}
SIZE=${SIZE:-224}
BATCH=${BATCH:-64}
STEPS=${STEPS:-40}
samples_dir=${OUT:-$(mktemp -d)}
common=(--model "$MODEL" --size "$SIZE" --batch "$BATCH" --threads "$(nproc)")
amp=()
[[ $DEVICE == cuda* ]] && amp=(--amp)
rc=0

echo "### 1. train_speed_bench --device $DEVICE ${amp[*]} ${common[*]} vs PyTorch"
timeout 200 "$BIN/train_speed_bench" --device "$DEVICE" "${amp[@]}" \
  "${common[@]}" --steps "$STEPS" --warmup 10 --rounds 3 \
  --python "$PYTHON" || rc=1

echo
echo "### 2. TrainLocal, pipeline on, $((STEPS * 6)) steps: GPU busy"
smi=""
if command -v nvidia-smi >/dev/null && [[ $DEVICE == cuda* ]]; then
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits \
    -lms 100 >"$samples_dir/gpu-busy.csv" 2>/dev/null &
  smi=$!
fi
timeout 120 "$BIN/train_speed_bench" --device "$DEVICE" "${amp[@]}" \
  "${common[@]}" --trainer --pipeline on --steps $((STEPS * 6)) || rc=1
if [ -n "$smi" ]; then
  kill "$smi" 2>/dev/null
  wait "$smi" 2>/dev/null
  awk '$1 ~ /^[0-9]+$/ { sum += $1; n++ }
       END { if (n) printf "GPU busy: %.0f%% (mean of %d nvidia-smi samples, 100 ms apart, over the whole run)\n", sum / n, n;
             else print "GPU busy: no nvidia-smi samples" }' \
    "$samples_dir/gpu-busy.csv"
else
  echo "GPU busy: not measured (no nvidia-smi, or not a CUDA device)"
fi

echo
echo "### 3. TrainLocal, pipeline on (1 and 4 loader threads) and off"
timeout 120 "$BIN/train_speed_bench" --device "$DEVICE" "${amp[@]}" \
  "${common[@]}" --trainer --pipeline both --steps "$STEPS" || rc=1
timeout 60 "$BIN/train_speed_bench" --device "$DEVICE" "${amp[@]}" \
  "${common[@]}" --trainer --pipeline on --loader-workers 4 \
  --steps "$STEPS" || rc=1

echo
if [ -x "$BIN/diagnose_bench" ]; then
  echo "### 4. diagnose_bench --device $DEVICE"
  timeout 90 "$BIN/diagnose_bench" --device "$DEVICE" --size "$SIZE" \
    --iterations 10 --warmup 3 --formats 2 || rc=1
else
  echo "### 4. diagnose_bench: not built (add it to TARGETS)"
fi
exit $rc
