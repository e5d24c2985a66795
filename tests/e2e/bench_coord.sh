#!/bin/bash
# bench_coord.sh - coordinator throughput (issue 5 acceptance 6), not a test.
#   CARAVAN_BIN=build/cli/caravan tests/e2e/bench_coord.sh [MODEL] [THREADS]
# 1. single stream: generation tok/s of one gRPC stream through `caravan serve`
#    (one single-rank group, --threads T) vs `caravan run` (same model, same
#    threads), 9 alternating repetitions, medians; first token excluded on
#    both sides (caravan run's gen_tok_s, caravan generate --bench's
#    stream_tok_s);
# 2. 1, 8, 32 concurrent streams (caravan generate --bench --clients C, one
#    HTTP/2 connection, 64 requests of 128 tokens, seeded sampling) over 1 and
#    2 groups: requests/s and tokens/s.
# One grep-able line per measurement. Ports are ephemeral; everything started
# here is stopped here.
set -u
B=${CARAVAN_BIN:-build/cli/caravan}
M=${1:-${CARAVAN_MODELS:-../shared/models}/stories260K.gguf}
T=${2:-1}
N1=${N1:-512}
SLOTS=${SLOTS:-32}   # KV slots of the group; caravan run gets the same, so the engines match
name=$(basename "$M")
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
start() { # groups
  "$B" serve -m "$M" --grpc-port 0 --http-port -1 --cluster-port 0 --groups "$1" -t "$T" --slots $SLOTS \
    > /tmp/bench_coord.$$.out 2>/tmp/bench_coord.$$.err &
  SP=$!
  for i in $(seq 100); do grep -qs grpc= /tmp/bench_coord.$$.out && break; sleep 0.1; done
  GP=$(sed -n 's/.*grpc=\([0-9]*\).*/\1/p' /tmp/bench_coord.$$.out)
  for i in $(seq 150); do "$B" generate --server 127.0.0.1:$GP -n 2 -p x >/dev/null 2>&1 && break; sleep 0.2; done
}
stop() { kill $SP; wait $SP 2>/dev/null; rm -f /tmp/bench_coord.$$.*; }
trap 'kill $SP 2>/dev/null' EXIT
start 1
: > /tmp/bench_coord.$$.r; : > /tmp/bench_coord.$$.c
for rep in 1 2 3 4 5 6 7 8 9; do
  "$B" run -m "$M" -n $N1 --temp 0 --ignore-eos -t $T --slots $SLOTS 2>&1 >/dev/null | grep -o "gen_tok_s=[0-9.]*" | cut -d= -f2 >> /tmp/bench_coord.$$.r
  "$B" generate --server 127.0.0.1:$GP --bench -n $N1 --ignore-eos --requests 1 | grep -o "stream_tok_s=[0-9.]*" | cut -d= -f2 >> /tmp/bench_coord.$$.c
done
r=$(med < /tmp/bench_coord.$$.r); c=$(med < /tmp/bench_coord.$$.c)
echo "bench_coord single_stream model=$name threads=$T slots=$SLOTS tokens=$N1 run_tok_s=$r coord_tok_s=$c ratio=$(awk -v a=$c -v b=$r 'BEGIN{printf "%.3f", a/b}')"
[ "${SINGLE_ONLY:-0}" = 1 ] && { stop; exit 0; }
for G in 1 2; do
  [ $G = 2 ] && { stop; start 2; }
  for cl in 1 8 32; do
    echo "bench_coord concurrent model=$name threads=$T groups=$G $("$B" generate --server 127.0.0.1:$GP --bench --clients $cl --requests 64 -n 128 --ignore-eos --temp 0.8 | sed 's/^caravan generate --bench: //')"
  done
done
stop
