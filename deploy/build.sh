#!/usr/bin/env bash
# Configures and builds echofed into ./build (two parallel jobs: the machines
# we target have two cores, and LibTorch translation units need memory).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build build -j"${JOBS:-2}"
