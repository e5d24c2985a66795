#!/usr/bin/env bash
# build.sh [BUILD_DIR] [cmake args...] - configure and build caravan (Release).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
BUILD=${1:-build}; shift || true
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD" -j"$JOBS"
