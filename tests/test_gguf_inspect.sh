#!/usr/bin/env bash
# test_gguf_inspect.sh - `caravan inspect` succeeds on every GGUF under
# $CARAVAN_MODELS and prints what the file holds (checked on stories260K and
# a vocab-only file against shared/models/README.md); a missing file, a
# non-GGUF file and bad usage give a one-line error and a non-zero exit.
# The models folder missing: skip (77), or fail under CI=true.
set -u
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
DIR=${CARAVAN_MODELS:-../shared/models}
fail=0
if [ ! -d "$DIR" ]; then
  if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then echo "FAIL: models folder $DIR missing"; exit 1; fi
  echo "SKIP: models folder $DIR missing"; exit 77
fi
out=$(mktemp); err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
n=0
while IFS= read -r -d '' f; do
  n=$((n + 1))
  if ! "$BIN" inspect "$f" >"$out" 2>"$err"; then
    echo "FAIL: caravan inspect $f exited non-zero: $(head -c 300 "$err")"; fail=1; continue
  fi
  for want in "gguf: v" "tokenizer:" "metadata (" "tensors (" "total: "; do
    grep -qF "$want" "$out" || { echo "FAIL: $f: output lacks '$want'"; fail=1; }
  done
done < <(find "$DIR" -name '*.gguf' -print0 | sort -z)
[ "$n" -ge 1 ] || { echo "FAIL: no GGUF under $DIR"; fail=1; }

expect_line() { # file pattern
  grep -qE -- "$2" "$1" || { echo "FAIL: inspect output lacks /$2/"; fail=1; }
}
if [ -f "$DIR/stories260K.gguf" ]; then
  "$BIN" inspect "$DIR/stories260K.gguf" >"$out" 2>&1
  expect_line "$out" '^gguf: v3, 19 KVs, 48 tensors, alignment 32, data at offset 14176$'
  expect_line "$out" '^architecture: llama'
  expect_line "$out" 'n_layer 5, n_embd 64, n_head 8, n_head_kv 4, head_dim 8, n_ff 172, n_vocab 512'
  expect_line "$out" '^tokenizer: model llama, pre -, 512 tokens.*bos 1 .<s>., eos 2 .</s>.'
  expect_line "$out" 'tokenizer.ggml.tokens +string\[\] +\[512 string: "<unk>", "<s>", "</s>", \.\.\.\]'
  expect_line "$out" 'token_embd.weight +F32 +\[64, 512\] +131072 '
  expect_line "$out" '^total: 48 tensors, 292800 parameters, 1171200 bytes'
fi
if [ -f "$DIR/vocab/llama3.2-bpe-vocab.gguf" ]; then
  "$BIN" inspect --no-kv "$DIR/vocab/llama3.2-bpe-vocab.gguf" >"$out" 2>&1
  expect_line "$out" '^tokenizer: model gpt2, pre llama-bpe, 128256 tokens, 280147 merges, bos 128000'
  expect_line "$out" '^total: 0 tensors, 0 parameters, 0 bytes'
  grep -q '^metadata' "$out" && { echo "FAIL: --no-kv still printed the KVs"; fail=1; }
fi

# errors: one line on stderr, non-zero exit, nothing on stdout
check_err() { # want_rc args...
  local want=$1; shift
  "$BIN" inspect "$@" >"$out" 2>"$err"; local rc=$?
  if [ "$rc" -ne "$want" ] || [ "$(wc -l <"$err")" -ne 1 ] || [ -s "$out" ]; then
    echo "FAIL: inspect $*: rc $rc (want $want), stderr $(wc -l <"$err") lines: $(head -c 300 "$err")"
    fail=1
  fi
}
check_err 1 /nonexistent/model.gguf
check_err 1 "$DIR/README.md"
[ -f "$DIR/stories260K.gguf" ] && { head -c 5000 "$DIR/stories260K.gguf" >"$out.trunc"; check_err 1 "$out.trunc"; rm -f "$out.trunc"; }
check_err 2
check_err 2 --bogus-flag "$DIR/stories260K.gguf"
check_err 2 a.gguf b.gguf

[ "$fail" -eq 0 ] && echo "test_gguf_inspect: caravan inspect passed on $n GGUF files"
exit "$fail"
