#!/usr/bin/env bash
# tests/bench/simd_table.sh - the acceptance table of the CPU kernel issue:
# Llama-3.2-1B-shaped random models (caravan mkmodel) in Q4_0, Q8_0, Q4_K,
# caravan bench pp512 / tg128 with 1 and 2 threads. Prints the key=value
# lines (with the load average before each run: the numbers only mean
# something on an otherwise idle machine) and a summary table.
#   usage: tests/bench/simd_table.sh [BUILD_DIR] [REPS]
set -u
# Run in a session (autogroup) of its own at nice -20, as tests/mpi/bench_group.sh
# does: with autogroups, other sessions' `nice -n 19` builds still take a
# share of the two cores from a benchmark. BENCH_NICE="" leaves it alone.
if [ -z "${BENCH_SESSION:-}" ] && [ -n "${BENCH_NICE--20}" ] && command -v setsid >/dev/null; then
  BENCH_SESSION=1 exec setsid -w "$0" "$@"
fi
if [ -n "${BENCH_SESSION:-}" ] && [ -w /proc/self/autogroup ]; then
  echo "${BENCH_NICE--20}" >/proc/self/autogroup 2>/dev/null || true
fi
cd "$(dirname "$0")/../.."
B=${1:-build}
REPS=${2:-3}
BIN=$B/cli/caravan
VOCAB=${CARAVAN_MODELS:-../shared/models}/vocab/llama3.2-bpe-vocab.gguf
DIR=${SIMD_MODELS:-/tmp}
LOG=${SIMD_LOG:-/tmp/simd_table.log}
: >"$LOG"
for T in Q4_0 Q8_0 Q4_K; do
  M=$DIR/simd-l1b-$T.gguf
  [ -f "$M" ] || "$BIN" mkmodel -o "$M" --n-layer 16 --n-embd 2048 --n-head 32 --n-head-kv 8 \
    --n-ff 8192 --type $T --vocab-from "$VOCAB" || exit 1
  for TH in 1 2; do
    echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg) type=$T threads=$TH" | tee -a "$LOG"
    flock /tmp/cv-bench.lock "$BIN" bench -m "$M" -t $TH -p 512 -n 128 -r "$REPS" 2>&1 | tee -a "$LOG"
  done
done
echo
printf '%-5s %-7s %-6s %9s %8s %8s %8s %9s\n' type threads test tok_s gb_s read_bw bw_pct gflop_s
grep '^test=' "$LOG" | while read -r line; do
  get() { echo "$line" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2; }
  printf '%-5s %-7s %-6s %9s %8s %8s %8s %9s\n' "$(get type)" "$(get threads)" "$(get test)" \
    "$(get tok_s)" "$(get gb_s)" "$(get read_bw_gb_s)" "$(get bw_pct)" "$(get gflop_s)"
done
