#!/usr/bin/env bash
# Configures and builds echofed into ./build (two parallel jobs: the machines
# we target have two cores, and LibTorch translation units need memory).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/build.sh [-h|--help]

Configures echofed into ./build (CMake, Ninja) and builds everything: the
three programs, the tests and the benchmarks, into build/bin.

Environment (default):
  BUILD_TYPE  CMake build type (RelWithDebInfo)
  JOBS        parallel build jobs (2)
EOF
}
case "${1:-}" in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; echo "build.sh: unknown argument '$1'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build build -j"${JOBS:-2}"
