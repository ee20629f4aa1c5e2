#!/usr/bin/env bash
# Every benchmark, tool and script a user runs by hand answers --help with
# its usage and exits 0 at once, and refuses an option it does not know.
# A first user's `federation_bench --help` used to run the whole benchmark
# (minutes); a program that ignores --help runs past the time limit here
# and fails.
#
# Usage: tests/bench/help_test.sh PROGRAM...
# Each PROGRAM is a built binary or a script (*.py runs with
# /usr/bin/python3, as ctest runs the Python tests; the rest by their own
# #! line). HELP_TIMEOUT (default 20) is the limit in seconds per call.
set -uo pipefail

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
if [ $# -eq 0 ] || [[ $1 == -* ]]; then
  echo "usage: $0 PROGRAM..." >&2
  exit 2
fi
limit=${HELP_TIMEOUT:-20}
programs=()
for program in "$@"; do
  case "$program" in
    /*) programs+=("$program") ;;
    *) programs+=("$PWD/$program") ;;
  esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Run from an empty folder: a script that ignored --help and wrote files
# where it stands would write them here, not into the source tree.
cd "$work" || exit 1

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

for program in "${programs[@]}"; do
  name=$(basename "$program")
  if [ ! -e "$program" ]; then
    fail "$name: $program not found (not built?)"
    continue
  fi
  command=("$program")
  case "$program" in *.py) command=(/usr/bin/python3 "$program") ;; esac

  started=$(date +%s)
  timeout -k 5 "$limit" "${command[@]}" --help >"$work/out" 2>&1 </dev/null
  rc=$?
  seconds=$(($(date +%s) - started))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    fail "$name --help: still running after ${limit} s (does it ignore --help?)"
    continue
  fi
  if [ "$rc" -ne 0 ]; then
    fail "$name --help: exit $rc, expected 0; output:"
    sed 's/^/    /' "$work/out" | head -n 20
    continue
  fi
  if ! grep -qiE 'usage|options' "$work/out"; then
    fail "$name --help: exit 0, but the output names no usage or options:"
    sed 's/^/    /' "$work/out" | head -n 20
    continue
  fi

  timeout -k 5 "$limit" "${command[@]}" --no-such-option >"$work/out" 2>&1 \
    </dev/null
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    fail "$name --no-such-option: still running after ${limit} s"
    continue
  fi
  if [ "$rc" -eq 0 ]; then
    fail "$name --no-such-option: exit 0, expected an error; output:"
    sed 's/^/    /' "$work/out" | head -n 20
    continue
  fi
  echo "ok: $name (--help in ${seconds} s; an unknown option exits $rc)"
done

if [ "$failures" -ne 0 ]; then
  echo "help: $failures of $# programs failed"
  exit 1
fi
echo "help: all $# programs answer --help"
