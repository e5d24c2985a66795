#!/usr/bin/env bash
# sample_split.sh - the sampling split between the last pipeline stage and
# the leader (worker/group.c): with the leader sampling every output, the
# last stage sampling every output, and the adaptive split, `mpirun caravan
# run --pp 2` (and TP2 x PP2) prints the same tokens as one process.
# stories260K, 5 concurrent prompts (micro-batches of 2-3 outputs), seeded
# sampling with repeat and presence penalties (the leader's own token
# history feeds them). Needs CARAVAN_BIN and CARAVAN_MODELS.
set -u
BIN=${CARAVAN_BIN:?} MODEL=${CARAVAN_MODELS:?}/stories260K.gguf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe --mca btl self,vader,tcp"
args=(-m "$MODEL" -p "" -p "Once upon a time" -p "The cat" -p "Lily" -p "One day, a big" -n 40 --json
      -t 1 --temp 0.9 --top-k 20 --seed 5 --repeat-penalty 1.2 --presence-penalty 0.3)
ids() { grep -o '"seq": [0-9]*, "id": [0-9]*' | sort -s -k2,2n; }
ref=$("$BIN" run "${args[@]}" 2>/dev/null | ids)
[ -n "$ref" ] || { echo "FAIL: no tokens from one process"; exit 1; }
fail=0
for mode in leader last auto; do
  for l in "1 2" "2 2"; do
    set -- $l
    out=$(CARAVAN_GROUP_SAMPLE=$mode timeout 120 $MPIRUN -np $(($1 * $2)) "$BIN" run "${args[@]}" \
          --tp $1 --pp $2 2>/dev/null | ids)
    if [ "$out" == "$ref" ]; then
      echo "sampling on $mode, tp $1 pp $2: $(echo "$ref" | wc -l) tokens identical to one process"
    else
      echo "FAIL sampling on $mode, tp $1 pp $2: tokens differ from one process"
      diff <(echo "$ref") <(echo "$out") | head -5
      fail=1
    fi
  done
done
exit $fail
