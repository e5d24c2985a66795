#!/usr/bin/env bash
# shard_rss.sh - acceptance 3 of issue 4: the resident memory of every rank
# is within 10% of the bytes the planner gave it, for TP 1/2/4 and PP 2/4 on
# a >= 1 GB model (mkmodel, Llama-3.2-1B-shaped layers, 32000-token vocab,
# Q8_0, 1.1 GiB; written to /tmp and deleted after). test_shard_rss does the
# measuring and checking (see its head comment); this script makes the model
# and runs the layouts. Needs CARAVAN_BIN, CARAVAN_BUILD, CARAVAN_MODELS.
set -u
BIN=${CARAVAN_BIN:?} BUILD=${CARAVAN_BUILD:?} MODELS=${CARAVAN_MODELS:?}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe --mca btl self,vader,tcp"
TEST=$BUILD/tests/test_shard_rss
VOCAB=$MODELS/vocab/ggml-vocab-llama-spm.gguf
if [ ! -s "$VOCAB" ]; then
  echo "missing $VOCAB"; [ "${CI:-}" = true ] && exit 1; exit 77
fi
m=$(mktemp /tmp/caravan-shard-rss-XXXXXX.gguf)
trap 'rm -f "$m"' EXIT
"$BIN" mkmodel -o "$m" --vocab-from "$VOCAB" --n-layer 16 --n-embd 2048 --n-head 32 \
  --n-head-kv 8 --n-ff 8192 --type Q8_0 --seed 3 -t 1 >/dev/null || { echo "FAIL mkmodel"; exit 1; }
echo "model: $(stat -c %s "$m") bytes"
fail=0
for l in 1x1 2x1 4x1 1x2 1x4; do
  tp=${l%x*} pp=${l#*x}
  out=$(timeout 120 $MPIRUN -np $((tp * pp)) "$TEST" "$m" $tp $pp --seqs 4 --gen 6 2>&1); rc=$?
  echo "$out" | grep -E "^rss |^test_shard_rss|FAIL"
  if [ $rc -ne 0 ]; then echo "FAIL tp $tp pp $pp (exit $rc)"; echo "$out" | tail -5; fail=1; fi
done
[ $fail -eq 0 ] && echo "shard_rss: all checks passed"
exit $fail
