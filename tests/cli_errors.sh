#!/usr/bin/env bash
# cli_errors.sh - issue 2 acceptance 8: bad CLI input gives a one-line error
# naming the problem and a non-zero exit (never a crash or a hang).
set -u
BIN=${CARAVAN_BIN:?}
M=${CARAVAN_MODELS:?}/stories260K.gguf
if [ ! -f "$M" ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: missing $M"; exit 1; fi
  echo "SKIP: missing $M"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "this is not a gguf file" > "$tmp/not.gguf"
long=$(printf 'Once upon a time %.0s' $(seq 1 40))
fails=0; n=0
# expect "description" "regex the message must match" cmd...
expect() {
  local what=$1 re=$2; shift 2
  n=$((n+1))
  timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
  lines=$(wc -l <"$tmp/err")
  if [ $rc -eq 0 ] || [ $rc -ge 124 ]; then
    echo "FAIL: $what: exit $rc (want a clean non-zero exit)"; fails=$((fails+1)); return
  fi
  if [ "$lines" -ne 1 ]; then
    echo "FAIL: $what: $lines lines on stderr (want 1):"; sed 's/^/    /' "$tmp/err"; fails=$((fails+1)); return
  fi
  if ! grep -Eq -- "$re" "$tmp/err"; then
    echo "FAIL: $what: message does not match /$re/: $(cat "$tmp/err")"; fails=$((fails+1)); return
  fi
  echo "ok: $what -> $(cat "$tmp/err")"
}
expect "missing model file"      "nonexistent"        "$BIN" run -m /nonexistent/model.gguf -p hi
expect "not a GGUF"              "magic|GGUF"         "$BIN" run -m "$tmp/not.gguf" -p hi
expect "prompt over the context" "context"            "$BIN" run -m "$M" --ctx 16 -p "$long"
expect "n = 0"                   "-n"                 "$BIN" run -m "$M" -n 0
expect "n < 0"                   "-n"                 "$BIN" run -m "$M" -n -5
expect "unknown flag"            "unknown option"     "$BIN" run -m "$M" --bogus
expect "non-numeric value"       "--temp"             "$BIN" run -m "$M" --temp abc
expect "missing value"           "needs a value"      "$BIN" run -m
expect "no model"                "-m"                 "$BIN" run -p hi
expect "bad device"              "device"             "$BIN" run -m "$M" --device tpu:0
expect "top-logprobs w/o json"   "json"               "$BIN" run -m "$M" --top-logprobs 2
expect "unknown command"         "unknown command"    "$BIN" frobnicate
expect "inspect missing file"    "nonexistent"        "$BIN" inspect /nonexistent.gguf
expect "inspect not a GGUF"      "magic|GGUF"         "$BIN" inspect "$tmp/not.gguf"
expect "tokenize without model"  "-m|model"           "$BIN" tokenize "hello"
expect "mkmodel bad type"        "no quantizer|type"  "$BIN" mkmodel -o "$tmp/x.gguf" --vocab-from "$M" --n-layer 1 --n-embd 64 --n-head 8 --n-ff 128 --type Q9_9
expect "mkmodel bad shape"       "multiple"           "$BIN" mkmodel -o "$tmp/x.gguf" --vocab-from "$M" --n-layer 1 --n-embd 65 --n-head 8 --n-ff 128
echo "cli_errors: $((n-fails)) passed, $fails failed"
[ $fails -eq 0 ]
