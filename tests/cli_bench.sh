#!/usr/bin/env bash
# cli_bench.sh - `caravan bench` prints, for pp and tg, one key=value line with
# every field issue 3 names (test type threads tok_s gb_s read_bw_gb_s bw_pct
# gflop_s logits_hash), positive figures, the read probe's per-pattern line,
# bytes per token as the model's weights minus all but one embedding row, the
# same logits hash with 1 and 2 threads, and a clear error for a bad model
# path. Timings themselves are not checked (they depend on the machine).
set -u
BIN=${CARAVAN_BIN:?}
M=${CARAVAN_MODELS:?}/stories260K.gguf
if [ ! -f "$M" ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: missing $M"; exit 1; fi
  echo "SKIP: missing $M"; exit 77
fi
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | head -1 | cut -d= -f2; }
declare -A HASH
for t in 1 2; do
  out=$("$BIN" bench -m "$M" -t $t -p 32 -n 16 -r 2 2>&1) || { fail "bench -t $t exited non-zero: $(echo "$out" | tail -2)"; continue; }
  echo "$out" | grep -q "^bench: probe GB/s by pattern" || fail "-t $t: no per-pattern probe line"
  for test in pp32 tg16; do
    line=$(echo "$out" | grep "^test=$test ")
    [ -n "$line" ] || { fail "-t $t: no test=$test line"; continue; }
    for k in type threads tok_s gb_s read_bw_gb_s bw_pct gflop_s logits_hash weight_bytes; do
      [ -n "$(field "$line" $k)" ] || fail "-t $t $test: field $k missing"
    done
    for k in tok_s gb_s read_bw_gb_s bw_pct gflop_s; do
      v=$(field "$line" $k)
      awk -v v="${v:-0}" 'BEGIN { exit !(v > 0) }' || fail "-t $t $test: $k=$v is not positive"
    done
    [ "$(field "$line" threads)" = "$t" ] || fail "-t $t $test: threads=$(field "$line" threads)"
    [ "$(field "$line" type)" = F32 ] || fail "-t $t $test: type=$(field "$line" type), stories260K is F32"
    # stories260K: all weights F32; bytes per token = every tensor except
    # token_embd (shared as output? then all of it) plus one row of it
    wb=$(field "$line" weight_bytes)
    [ "${wb:-0}" -gt 0 ] && [ "$wb" -lt "$(stat -c %s "$M")" ] || fail "-t $t $test: weight_bytes=$wb not below the file size"
    HASH[$t$test]=$(field "$line" logits_hash)
  done
  echo "ok: -t $t: $(echo "$out" | grep '^test=' | cut -d' ' -f1,3-5 | tr '\n' ';')"
done
for test in pp32 tg16; do
  [ -n "${HASH[1$test]:-}" ] && [ "${HASH[1$test]:-}" = "${HASH[2$test]:-}" ] ||
    fail "$test: logits_hash differs between 1 and 2 threads (${HASH[1$test]:-} vs ${HASH[2$test]:-})"
done
err=$("$BIN" bench -m /nonexistent/model.gguf -n 4 2>&1) && fail "bench of a missing model exited 0"
echo "$err" | grep -q "/nonexistent/model.gguf" || fail "missing-model error does not name the path: $err"
[ $fails -eq 0 ] && echo "cli_bench: all checks passed"
exit $((fails > 0))
