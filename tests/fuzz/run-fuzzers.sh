#!/usr/bin/env bash
# Builds the libFuzzer targets of the readers with clang into BUILD_DIR,
# writes their seeds and runs each fuzzer for SECONDS. Prints one line per
# fuzzer and "fuzz: N passed, M failed"; exits non-zero when a fuzzer
# crashed, hit a sanitizer error, leaked, ran out of memory or timed out.
# Inputs that fail are kept in BUILD_DIR/fuzz/artifacts; rerun one with
#   BUILD_DIR/fuzz/<fuzzer> BUILD_DIR/fuzz/artifacts/<file>
#
# Usage: tests/fuzz/run-fuzzers.sh BUILD_DIR SECONDS
# Environment: FUZZ_JOBS (fuzzers run at once, default 2), JOBS (build jobs,
# default 2).
set -euo pipefail

usage() {
  # The comment at the top of this file.
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  usage
  exit 0
fi
if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  usage >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$1"
build=$(cd "$1" && pwd)
seconds=$2
fuzzers=(dicom_fuzz image_fuzz j2k_fuzz segmented_lut_fuzz clinical_csv_fuzz
  manifest_fuzz)
out="$build/fuzz"
started=$(date +%s)

log="$build/fuzz-build.log"
if ! { cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DECHOFED_FUZZ=ON -DECHOFED_BUILD_TESTS=OFF &&
  cmake --build "$build" -j"${JOBS:-2}" --target "${fuzzers[@]}" \
    fuzz_seed_writer; } >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "fuzz: build failed (log: $log)" >&2
  echo "fuzz: 0 passed, ${#fuzzers[@]} failed"
  exit 1
fi
built=$(date +%s)
echo "fuzz: built in $((built - started)) s"

# Binary seeds are generated, never committed (no real image can slip in);
# text seeds live in tests/fuzz/seeds. The corpus folders keep what earlier
# runs found, so each run starts where the last one stopped.
rm -rf "$out/seeds"
mkdir -p "$out/seeds" "$out/artifacts" "$out/logs"
if ! "$out/fuzz_seed_writer" "$out/seeds"; then
  echo "fuzz: could not write the seeds"
  echo "fuzz: 0 passed, ${#fuzzers[@]} failed"
  exit 1
fi

# dicom_fuzz, image_fuzz, j2k_fuzz and segmented_lut_fuzz read the generated
# seeds, the CSV fuzzers the committed ones; each but segmented_lut_fuzz
# (whose input is numbers) has a dictionary of the tokens its parser looks
# for.
seeds_of() {
  case $1 in
    dicom_fuzz) echo "$out/seeds/dicom" ;;
    image_fuzz) echo "$out/seeds/image" ;;
    j2k_fuzz) echo "$out/seeds/j2k" ;;
    segmented_lut_fuzz) echo "$out/seeds/segmented_lut" ;;
    clinical_csv_fuzz) echo "$repo/tests/fuzz/seeds/clinical_csv" ;;
    manifest_fuzz) echo "$repo/tests/fuzz/seeds/manifest" ;;
  esac
}
dict_of() {
  case $1 in
    dicom_fuzz | image_fuzz) echo "$repo/tests/fuzz/dicom.dict" ;;
    j2k_fuzz) echo "$repo/tests/fuzz/j2k.dict" ;;
    segmented_lut_fuzz) echo "" ;;
    clinical_csv_fuzz) echo "$repo/tests/fuzz/clinical_csv.dict" ;;
    manifest_fuzz) echo "$repo/tests/fuzz/manifest.dict" ;;
  esac
}

# UBSan is built to abort; its stack trace says where. Leak checking is
# libFuzzer's default under ASan and stays on, unless LeakSanitizer cannot
# work here at all (it needs ptrace, which some containers forbid): a short
# probe run finds out, so that such a machine fuzzes without it instead of
# failing every fuzzer.
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
if "$out/clinical_csv_fuzz" -runs=100 2>&1 |
  grep -q "LeakSanitizer has encountered a fatal error"; then
  echo "fuzz: LeakSanitizer does not work on this machine; leaks are not checked"
  export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"
fi

run_one() {
  local name=$1
  local corpus="$out/corpus/$name"
  mkdir -p "$corpus"
  rm -f "$out/artifacts/$name-"*
  # The readers accept images up to 16384 x 16384 (kMaxImageSide), which a
  # few KB of JPEG can declare: dicom_fuzz decodes such an object three
  # times in about 25 s under ASan, and a progressive one makes libjpeg-turbo
  # hold about 1.4 GB. Those are within the documented limits, so the limits
  # here sit above them: -timeout (a hang) and -rss_limit_mb (a bomb).
  local status=0
  local dict=()
  [ -n "$(dict_of "$name")" ] && dict=(-dict="$(dict_of "$name")")
  "$out/$name" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=3072 \
    -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$out/artifacts/$name-" \
    "$corpus" "$(seeds_of "$name")" >"$out/logs/$name.log" 2>&1 || status=$?
  echo "$status" >"$out/logs/$name.status"
}

# Two at a time by default: the CI machines have two cores and each fuzzer
# uses one.
jobs=${FUZZ_JOBS:-2}
for name in "${fuzzers[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$name" &
done
wait

passed=0
failed=0
for name in "${fuzzers[@]}"; do
  log="$out/logs/$name.log"
  status=$(cat "$out/logs/$name.status" 2>/dev/null || echo 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  done_line=$(grep -a 'DONE' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  features=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corpus=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
  if [ "$status" = 0 ] && [ -n "$done_line" ]; then
    passed=$((passed + 1))
    echo "fuzz: $name ok: ${runs:-?} runs in $seconds s, coverage ${cov:-?} edges, ${features:-?} features, corpus ${corpus:-?}"
  else
    failed=$((failed + 1))
    why=$(grep -a -m 1 -E '^==[0-9]+== ?ERROR|^[a-z_]+_fuzz: |runtime error|deadly signal|out-of-memory|timeout after' "$log" || true)
    artifact=
    for file in "$out/artifacts/$name-"*; do
      [ -e "$file" ] && artifact=$file && break
    done
    echo "fuzz: $name FAILED (exit $status) after ${runs:-?} runs: ${why:-see $log}"
    [ -n "$artifact" ] && echo "fuzz:   input kept in $artifact"
    # The sanitizer report, for CI logs.
    tail -n 80 "$log" >&2
  fi
done
echo "fuzz: build $((built - started)) s, total $(($(date +%s) - started)) s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
