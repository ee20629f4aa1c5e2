#!/usr/bin/env bash
# Configures and builds echofed into ./build (two parallel jobs: the machines
# we target have two cores, and LibTorch translation units need memory).
#
#   deploy/build.sh        everything: programs, tests, benchmarks
#   deploy/build.sh demo   only the three programs, enough for `echofed demo`
#                          (and deploy/install.sh); a later deploy/build.sh
#                          builds the rest in the same tree
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: deploy/build.sh [demo] [-h|--help]

Configures echofed into ./build (CMake, Ninja) and builds into build/bin:
  (no argument)  everything: the three programs, the tests and the
                 benchmarks (what `ctest --test-dir build` needs)
  demo           only echofed, echofed-coordinator and echofed-agent: enough
                 for `./build/bin/echofed demo` and deploy/install.sh,
                 without the tests and benchmarks (more than half of the
                 LibTorch compiling); a later deploy/build.sh adds the rest

Environment (default):
  BUILD_TYPE  CMake build type (RelWithDebInfo)
  JOBS        parallel build jobs (2)
USAGE
}
targets=()
case "${1:-}" in
  "") ;;
  demo) targets=(--target echofed echofed-coordinator echofed-agent) ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; echo "build.sh: unknown argument '$1'" >&2; exit 2 ;;
esac
if [ $# -gt 1 ]; then
  usage >&2
  echo "build.sh: one argument at most" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build build -j"${JOBS:-2}" "${targets[@]}"
