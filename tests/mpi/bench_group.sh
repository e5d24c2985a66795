#!/usr/bin/env bash
# bench_group.sh - throughput of a worker group vs one process (README
# figures, acceptance 4): `caravan run` generation tok/s for one process
# with 1 and 2 threads, PP2 and TP2 with 1 thread per rank, each with 1 and
# 8 concurrent sequences, on mkmodel Llama-3.2-1B-shaped models (Q4_0,
# Q8_0); then bytes sent per token per rank (test_group --rss). Medians of
# REPS runs. Not a ctest (minutes; needs a quiet machine).
# usage: tests/mpi/bench_group.sh BUILD_DIR [N_GEN] [REPS]
set -u
BUILD=$(cd "${1:?build dir}" && pwd); NGEN=${2:-32}; REPS=${3:-3}
BIN=$BUILD/cli/caravan
VOCAB=${CARAVAN_MODELS:-$(dirname "$0")/../../../shared/models}/vocab/llama3.2-bpe-vocab.gguf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# CPUSET=0,1: pin everything to those cores (compare like with like on a big machine)
if [ -n "${CPUSET:-}" ]; then
  PIN="taskset -c $CPUSET"; MPIRUN="mpirun --cpu-set $CPUSET --bind-to core --mca btl self,vader,tcp"
else
  PIN=""; MPIRUN="mpirun --bind-to core --map-by core --mca btl self,vader,tcp"
fi
VOCAB=${BENCH_VOCAB:-$VOCAB}
dir=$BUILD/tests/mpi-models; mkdir -p "$dir"
prompts() { for i in $(seq "$1"); do printf -- '-p\0Once upon a time %d\0' "$i"; done; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
run1() { # label seqs cmd...
  local label=$1 seqs=$2; shift 2
  local v=()
  for r in $(seq "$REPS"); do
    t=$(prompts "$seqs" | xargs -0 "$@" -n "$NGEN" --ignore-eos --ctx 256 2>&1 >/dev/null |
        grep -o 'gen_tok_s=[0-9.]*' | tail -1 | cut -d= -f2)
    v+=("${t:-0}")
  done
  printf '%s\n' "${v[@]}" | median
}
echo "| model | seqs | 1 proc 1 thr | 1 proc 2 thr | PP2 1 thr/rank | TP2 1 thr/rank | PP2/1thr | PP2/2thr | TP2/2thr |"
echo "|---|---|---|---|---|---|---|---|---|"
for ty in Q4_0 Q8_0; do
  m=$dir/l1b-$ty.gguf
  [ -s "$m" ] || "$BIN" mkmodel -o "$m" --vocab-from "$VOCAB" --n-layer 16 --n-embd 2048 \
      --n-head 32 --n-head-kv 8 --n-ff 8192 --type $ty --tied --seed 1 -t 2 >/dev/null 2>&1
  for seqs in 1 8; do
    s1=$(run1 s1 $seqs $PIN "$BIN" run -m "$m" -t 1)
    s2=$(run1 s2 $seqs $PIN "$BIN" run -m "$m" -t 2)
    pp=$(run1 pp $seqs $MPIRUN -np 2 "$BIN" run -m "$m" -t 1 --pp 2)
    tp=$(run1 tp $seqs $MPIRUN -np 2 "$BIN" run -m "$m" -t 1 --tp 2)
    awk -v ty=$ty -v n=$seqs -v a=$s1 -v b=$s2 -v c=$pp -v d=$tp 'BEGIN {
      printf "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", ty, n, a, b, c, d,
             a ? c / a : 0, b ? c / b : 0, b ? d / b : 0 }'
  done
done
echo
for l in "1 2" "2 1"; do
  set -- $l
  mpirun --oversubscribe -np 2 "$BUILD/tests/test_group" "$dir/l1b-Q4_0.gguf" $1 $2 --rss 1 --gen 16 \
    --seqs 1 2>&1 | grep '^bytes'
done
