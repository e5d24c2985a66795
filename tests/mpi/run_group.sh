#!/usr/bin/env bash
# run_group.sh - `mpirun -np N caravan run --tp T --pp P` (the scheduler
# driving a worker group from rank 0) prints the same tokens as one process:
# stories260K, three concurrent prompts, greedy and seeded sampling, for
# PP 2, TP 2 and TP2 x PP2. Needs CARAVAN_BIN and CARAVAN_MODELS.
set -u
BIN=${CARAVAN_BIN:?} MODEL=${CARAVAN_MODELS:?}/stories260K.gguf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe --mca btl self,vader,tcp"
fail=0
for samp in "--temp 0" "--temp 0.8 --top-p 0.9 --seed 42"; do
  args=(-m "$MODEL" -p "" -p "Once upon a time" -p "The cat" -n 48 --json -t 1 $samp)
  # per sequence, in generation order (sequences interleave differently when
  # micro-batches are in flight)
  ref=$("$BIN" run "${args[@]}" 2>/dev/null | grep -o '"seq": [0-9]*, "id": [0-9]*' | sort -s -k2,2n)
  [ -n "$ref" ] || { echo "FAIL: no tokens from one process"; exit 1; }
  for l in "1 2" "2 1" "2 2"; do
    set -- $l
    out=$(timeout 120 $MPIRUN -np $(($1 * $2)) "$BIN" run "${args[@]}" --tp $1 --pp $2 2>/dev/null |
          grep -o '"seq": [0-9]*, "id": [0-9]*' | sort -s -k2,2n)
    n=$(echo "$ref" | wc -l)
    if [ "$out" == "$ref" ]; then
      echo "tp $1 pp $2 ($samp): $n tokens identical to one process"
    else
      echo "FAIL tp $1 pp $2 ($samp): tokens differ from one process"
      diff <(echo "$ref") <(echo "$out") | head -5
      fail=1
    fi
  done
done
[ $fail -eq 0 ] && echo "run_group: all checks passed"
exit $fail
