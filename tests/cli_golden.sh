#!/usr/bin/env bash
# cli_golden.sh - `caravan run` (scheduler + in-process link + engine) greedy
# from BOS on stories260K gives the 256 golden tokens, in text and --json
# mode, with 1..4 threads. Issue 2 acceptance 1 through the command line.
set -u
BIN=${CARAVAN_BIN:?}
M=${CARAVAN_MODELS:?}/stories260K.gguf
G=${CARAVAN_MODELS}/stories260K.greedy.json
for f in "$M" "$G"; do
  if [ ! -f "$f" ]; then
    if [ "${CI:-}" = true ]; then echo "FAIL: missing $f"; exit 1; fi
    echo "SKIP: missing $f"; exit 77
  fi
done
PY=${CARAVAN_PYTHON:-python3}
fails=0
for t in 1 2 3 4; do
  if ! "$BIN" run -m "$M" --temp 0 -n 256 --ignore-eos --json -t $t 2>/dev/null >/tmp/cv_golden_$$.jsonl; then
    echo "FAIL: caravan run -t $t exited non-zero"; fails=$((fails+1)); continue
  fi
  if ! "$PY" - "$G" /tmp/cv_golden_$$.jsonl "$t" <<'PYEOF'
import json, sys
gold = json.load(open(sys.argv[1]))
want = gold["generated_token_ids"]
got = [json.loads(l)["id"] for l in open(sys.argv[2]) if l.strip()]
if got != want:
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    print(f"FAIL: -t {sys.argv[3]}: {len(got)} tokens, golden {len(want)}; first difference at {i}: got {got[i:i+5]} want {want[i:i+5]}")
    sys.exit(1)
print(f"ok: -t {sys.argv[3]}: {len(got)} golden tokens")
PYEOF
  then fails=$((fails+1)); fi
done
text=$("$BIN" run -m "$M" --temp 0 -n 40 2>/dev/null)
case "$text" in
  "Once upon a time, there was a little girl named Lily."*) echo "ok: text mode";;
  *) echo "FAIL: text mode printed: $text"; fails=$((fails+1));;
esac
rm -f /tmp/cv_golden_$$.jsonl
echo "cli_golden: $((5-fails)) passed, $fails failed"
[ $fails -eq 0 ]
