#!/usr/bin/env bash
# bench_group.sh - throughput of a worker group vs one process (README
# figures, acceptance 4): `caravan run` generation tok/s for one process
# with 1 and 2 threads, PP2 and TP2 with 1 thread per rank, each with 1 and
# 8 concurrent sequences, on mkmodel Llama-3.2-1B-shaped models (Q4_0,
# Q8_0), and the bytes each rank sends per token fed (CARAVAN_GROUP_PROFILE).
#
# Method (the machine is shared and its speed drifts by tens of percent over
# minutes): the binary is copied once, so both sides of every ratio run the
# same build; for each (model, sequence count) one `flock /tmp/cv-bench.lock`
# holds a warm-up of every configuration (discarded) and then REPS rounds of
# the four configurations back to back, the order rotating each round. Same
# prompts, same length, --ignore-eos. Reported: median tok/s per
# configuration and the median over rounds of each round's ratio (both sides
# measured within seconds of each other). Not a ctest (minutes).
#
# Priority: with the kernel's autogroups (sched_autogroup_enabled=1, as on
# this machine), `nice -n 19` only ranks processes within their own session,
# so another session's nice-19 build still takes half of a core from a
# benchmark, and it takes more from a 2-rank job whose load alternates
# between the cores than from one process (the session's weight is split
# over the cores it runs on). The script therefore runs in a session of its
# own whose autogroup it sets to BENCH_NICE (default -20; "" leaves it at
# 0): builds then barely touch either side of a ratio.
#
# Bytes: with CARAVAN_GROUP_SAMPLE=auto or =leader in the environment, the
# last stage of PP2 also sends the leader the logits rows of the outputs it
# leaves to the leader to sample (0-0.5 MB per such output at a 128K
# vocabulary), so rank 1's bytes per token vary with that split; the
# default (=last) keeps all sampling on the last stage, and its bytes are
# the activations' and results' alone.
#
# usage: tests/mpi/bench_group.sh BUILD_DIR [N_GEN] [REPS]
#   env TYPES="Q4_0 Q8_0", SEQS="1 8", N_GEN8 (tokens per sequence with 8
#   sequences, default N_GEN / 2), CPUSET=0,1 (pin to those cores),
#   MODEL_Q4_0=path etc. (use that model instead of making one),
#   RAW=file (append every run's tok/s there), BENCH_NICE (see above),
#   MPI_BIND (default "--bind-to core --map-by core", mpirun's own default
#   for 2 ranks).
set -u
if [ -z "${BENCH_SESSION:-}" ] && [ -n "${BENCH_NICE--20}" ] && command -v setsid >/dev/null; then
  BENCH_SESSION=1 exec setsid -w "$0" "$@" # an autogroup of its own
fi
if [ -n "${BENCH_SESSION:-}" ] && [ -w /proc/self/autogroup ]; then
  echo "${BENCH_NICE--20}" >/proc/self/autogroup 2>/dev/null || true
fi
BUILD=$(cd "${1:?build dir}" && pwd); NGEN=${2:-32}; REPS=${3:-5}
NGEN8=${N_GEN8:-$((NGEN / 2))}
TYPES=${TYPES:-Q4_0 Q8_0}; SEQS=${SEQS:-1 8}
VOCAB=${CARAVAN_MODELS:-$(dirname "$0")/../../../shared/models}/vocab/llama3.2-bpe-vocab.gguf
VOCAB=${BENCH_VOCAB:-$VOCAB}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/bench_group.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp "$BUILD/cli/caravan" "$tmp/caravan" # one build for every run of the table
BIN=$tmp/caravan
if [ -n "${CPUSET:-}" ]; then
  PIN="taskset -c $CPUSET"; MPIRUN="mpirun --oversubscribe --cpu-set $CPUSET --bind-to core"
else
  PIN=""; MPIRUN="mpirun --oversubscribe ${MPI_BIND:---bind-to core --map-by core}"
fi
MPIRUN="$MPIRUN --mca btl self,vader,tcp -np 2"
dir=$BUILD/tests/mpi-models; mkdir -p "$dir"

median() { sort -g | awk '{a[NR]=$1} END {if (!NR) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# one run: config model seqs ngen -> "tok_s bytes_per_token_rank0 bytes_per_token_rank1"
run1() {
  local cfg=$1 m=$2 seqs=$3 ngen=$4 args=() out
  for i in $(seq "$seqs"); do args+=(-p "Once upon a time $i"); done
  args+=(-n "$ngen" --ignore-eos --ctx 256)
  case $cfg in
    s1) out=$($PIN "$BIN" run -m "$m" -t 1 "${args[@]}" 2>&1 >/dev/null) ;;
    s2) out=$($PIN "$BIN" run -m "$m" -t 2 "${args[@]}" 2>&1 >/dev/null) ;;
    pp) out=$(CARAVAN_GROUP_PROFILE=1 $MPIRUN "$BIN" run -m "$m" -t 1 --pp 2 "${args[@]}" 2>&1 >/dev/null) ;;
    tp) out=$(CARAVAN_GROUP_PROFILE=1 $MPIRUN "$BIN" run -m "$m" -t 1 --tp 2 "${args[@]}" 2>&1 >/dev/null) ;;
  esac
  # tokens fed = prompt tokens + generated - the last token of each sequence
  echo "$out" | awk -v seqs="$seqs" '
    /gen_tok_s=/ { for (i = 1; i <= NF; i++) { split($i, kv, "=");
                   if (kv[1] == "gen_tok_s") t = kv[2]; if (kv[1] == "prompt_tokens") p = kv[2];
                   if (kv[1] == "gen_tokens") g = kv[2] } }
    /^group rank/ { r = $3; for (i = 1; i <= NF; i++) if ($i == "sent") b[r] = $(i + 1) }
    END { fed = p + g - seqs; if (fed <= 0) fed = 1;
          printf "%s %.0f %.0f\n", t ? t : 0, (0 in b) ? b[0] / fed : 0, (1 in b) ? b[1] / fed : 0 }'
}

# one comparison block under the bench lock: model seqs ngen -> table row
block() {
  local ty=$1 m=$2 seqs=$3 ngen=$4 cfgs=(s1 s2 pp tp) r k c
  for c in "${cfgs[@]}"; do run1 "$c" "$m" "$seqs" 4 >/dev/null; done # warm-up: page cache, MPI
  for r in $(seq "$REPS"); do
    for k in 0 1 2 3; do
      c=${cfgs[$(((k + r) % 4))]}
      run1 "$c" "$m" "$seqs" "$ngen" >"$tmp/run.$c.$r"
      [ -n "${RAW:-}" ] && echo "$ty seqs=$seqs round=$r $c $(cat "$tmp/run.$c.$r")" >>"$RAW"
    done
  done
  for c in "${cfgs[@]}"; do
    cat "$tmp/run.$c".* | awk '{print $1}' | median >"$tmp/$c.med"
  done
  for q in "pp s1" "pp s2" "tp s2"; do
    set -- $q
    for r in $(seq "$REPS"); do
      paste "$tmp/run.$1.$r" "$tmp/run.$2.$r" | awk '{print ($4 > 0 ? $1 / $4 : 0)}'
    done | median >"$tmp/$1_$2.ratio"
  done
  local ppb tpb
  ppb=$(cat "$tmp"/run.pp.* | awk '{print $2}' | median)/$(cat "$tmp"/run.pp.* | awk '{print $3}' | median)
  tpb=$(cat "$tmp"/run.tp.* | awk '{print $2}' | median)/$(cat "$tmp"/run.tp.* | awk '{print $3}' | median)
  printf '| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s |\n' "$ty" "$seqs" \
    "$(cat "$tmp/s1.med")" "$(cat "$tmp/s2.med")" "$(cat "$tmp/pp.med")" "$(cat "$tmp/tp.med")" \
    "$(cat "$tmp/pp_s1.ratio")" "$(cat "$tmp/pp_s2.ratio")" "$(cat "$tmp/tp_s2.ratio")" "$ppb" "$tpb"
  rm -f "$tmp"/run.* "$tmp"/*.med "$tmp"/*.ratio
}
export -f run1 block median
export BIN PIN MPIRUN REPS tmp RAW 2>/dev/null

echo "median tok/s of $REPS rounds ($NGEN tokens per sequence with 1 sequence, $NGEN8 with 8);"
echo "ratios: median over rounds of the ratio within a round (targets: PP2/1thr >= 0.95 with"
echo "1 sequence, PP2/2thr >= 0.9 with 8, TP2/2thr >= 0.85 with 1); bytes: sent per token fed,"
echo "rank 0 / rank 1. Session $(cat /proc/self/autogroup 2>/dev/null || echo '(no autogroup)'),"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, mpirun: $MPIRUN"
echo
echo "| model | seqs | 1 proc 1 thr | 1 proc 2 thr | PP2 1 thr/rank | TP2 1 thr/rank | PP2/1thr | PP2/2thr | TP2/2thr | PP2 bytes/tok | TP2 bytes/tok |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for ty in $TYPES; do
  mv=MODEL_$ty; m=${!mv:-$dir/l1b-$ty.gguf}
  [ -s "$m" ] || "$BIN" mkmodel -o "$m" --vocab-from "$VOCAB" --n-layer 16 --n-embd 2048 \
      --n-head 32 --n-head-kv 8 --n-ff 8192 --type "$ty" --seed 1 -t 2 >/dev/null 2>&1
  for seqs in $SEQS; do
    n=$NGEN; [ "$seqs" -gt 1 ] && n=$NGEN8
    flock /tmp/cv-bench.lock bash -c "block $ty $m $seqs $n"
  done
done
