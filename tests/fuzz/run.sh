#!/usr/bin/env bash
# run.sh - build the GGUF reader's libFuzzer target with clang (standalone,
# no CMake needed) and fuzz it for N seconds, seeded with the corrupt-file
# corpus that test_gguf_corrupt writes (built and run here too).
#   tests/fuzz/run.sh [SECONDS=60] [WORKDIR=build-fuzz]
# Prints libFuzzer's final stats (number of executed units, coverage); a crash
# leaves crash-* files in WORKDIR and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
WORK=${2:-build-fuzz}
CC=${CLANG:-clang}
command -v "$CC" >/dev/null || { echo "run.sh: clang not found (set CLANG=...)" >&2; exit 2; }
mkdir -p "$WORK/corpus" "$WORK/seeds"
SRC="core/gguf.c core/dtype.c core/status.c"
"$CC" -std=gnu11 -g -O1 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  tests/fuzz/fuzz_gguf.c $SRC -o "$WORK/fuzz_gguf"
# seeds: the corrupt corpus plus the valid files it starts from
"$CC" -std=gnu11 -g -O1 -I. -Itests -fsanitize=address,undefined tests/test_gguf_corrupt.c $SRC \
  -o "$WORK/test_gguf_corrupt"
CARAVAN_MODELS=${CARAVAN_MODELS:-../shared/models} "$WORK/test_gguf_corrupt" "$WORK/seeds" >/dev/null 2>&1 ||
  { echo "run.sh: test_gguf_corrupt failed; run it alone to see why" >&2; exit 1; }
cd "$WORK"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ./fuzz_gguf -max_total_time="$SECS" \
  -print_final_stats=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048 corpus seeds
