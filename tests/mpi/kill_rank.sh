#!/usr/bin/env bash
# kill_rank.sh - acceptance 5: killing one rank of a worker group in the
# middle of generation ends the whole job with a clear error naming the rank
# within 10 s (no hang). Also: a layout that cannot be planned fails on every
# rank at start-up with the planner's reason; a rank that fails mid-run
# (error injected with the CARAVAN_TEST_FAIL=RANK:STEP hook of group.c)
# ends the job with its rank and reason; a truncated model file fails at
# start-up on every rank.
# Needs CARAVAN_BIN and CARAVAN_MODELS (set by ctest).
set -u
BIN=${CARAVAN_BIN:?} MODEL=${CARAVAN_MODELS:?}/stories260K.gguf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe --mca btl self,vader,tcp"
out=$(mktemp) ; trap 'rm -f $out' EXIT
fail=0

# 1. kill rank 1 (the middle stage of 3) mid-generation
# 8 sequences x 2000 tokens: long enough to be killed mid-way (--json streams tokens)
$MPIRUN -np 3 "$BIN" run -m "$MODEL" -p "" -p "" -p "" -p "" -p "" -p "" -p "" -p "" -n 2000 \
  --ctx 2048 --ignore-eos --temp 0 --pp 3 -t 1 --json >"$out" 2>&1 &
mp=$!
victim=""
for _ in $(seq 100); do            # up to 10 s for the group to start generating
  for c in $(pgrep -P $mp); do
    if tr '\0' '\n' </proc/$c/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then victim=$c; fi
  done
  [ -n "$victim" ] && [ -s "$out" ] && break
  sleep 0.1
done
if [ -z "$victim" ]; then echo "FAIL: rank 1 not found"; kill $mp; exit 1; fi
sleep 0.5
if ! kill -0 $mp 2>/dev/null; then echo "FAIL: the job ended before the kill"; exit 1; fi
kill -9 "$victim"
t0=$(date +%s.%N)
for _ in $(seq 150); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
if kill -0 $mp 2>/dev/null; then
  echo "FAIL: the job still runs 15 s after rank 1 was killed"; kill -9 $mp; fail=1
fi
wait $mp; rc=$?
dt=$(echo "$(date +%s.%N) - $t0" | bc)
echo "job ended ${dt}s after kill -9 of rank 1 (pid $victim), exit $rc"
grep -i "rank 1" "$out" | head -3
[ "$rc" -ne 0 ] || { echo "FAIL: exit status 0"; fail=1; }
awk -v d="$dt" 'BEGIN { exit !(d < 10) }' || { echo "FAIL: took ${dt}s (limit 10 s)"; fail=1; }
grep -qi "rank 1" "$out" || { echo "FAIL: no message naming rank 1"; tail -5 "$out"; fail=1; }

# 2. a layout that cannot work: refused on every rank with the reason, no hang
timeout 30 $MPIRUN -np 2 "$BIN" run -m "$MODEL" -p "" -n 4 --pp 2 -t 1 --mem 64K >"$out" 2>&1
rc=$?
echo "refused layout: exit $rc: $(grep -m1 'does not fit' "$out")"
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { echo "FAIL: exit $rc"; fail=1; }
grep -q "does not fit" "$out" || { echo "FAIL: no reason"; cat "$out"; fail=1; }

# 3. a rank that fails mid-generation (injected error on rank 2, step 5):
#    the leader learns which rank and why, and the job ends
t0=$(date +%s.%N)
CARAVAN_TEST_FAIL=2:5 timeout 30 $MPIRUN -x CARAVAN_TEST_FAIL -np 3 "$BIN" run -m "$MODEL" -p "" \
  -n 200 --ignore-eos --temp 0 --pp 3 -t 1 >"$out" 2>&1
rc=$?
dt=$(echo "$(date +%s.%N) - $t0" | bc)
echo "injected failure: exit $rc after ${dt}s: $(grep -m1 'injected' "$out")"
{ [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; } || { echo "FAIL: exit $rc"; fail=1; }
grep -q "rank 2 (stage 2, tp 0).*injected failure" "$out" || { echo "FAIL: no reason naming rank 2"; cat "$out"; fail=1; }

# 4. a bad model file (truncated GGUF): every rank fails at start-up, clean exit
bad=$(mktemp --suffix=.gguf); head -c 600000 "$MODEL" >"$bad"
timeout 30 $MPIRUN -np 2 "$BIN" run -m "$bad" -p "" -n 4 --pp 2 -t 1 >"$out" 2>&1
rc=$?; rm -f "$bad"
echo "truncated model: exit $rc: $(grep -m1 'failed on rank' "$out")"
{ [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; } || { echo "FAIL: exit $rc"; fail=1; }
grep -q "failed on rank 0" "$out" || { echo "FAIL: no reason"; cat "$out"; fail=1; }

[ $fail -eq 0 ] && echo "kill_rank: all checks passed"
exit $fail
