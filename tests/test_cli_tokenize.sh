#!/bin/sh
# test_cli_tokenize.sh - `caravan tokenize`: acceptance-1 ids on stories260K,
# --no-bos, special tokens, and one-line errors with a non-zero exit on bad input.
set -u
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
M=${CARAVAN_MODELS:?CARAVAN_MODELS not set}
fail=0
check() { # name expected actual
    if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; fail=1; fi
}
check_err() { # name cmd...: non-zero exit, exactly one line on stderr, nothing on stdout
    name=$1; shift
    out=$("$@" 2>/tmp/cv_tok_err.$$); rc=$?
    lines=$(wc -l < /tmp/cv_tok_err.$$)
    if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && [ -z "$out" ]; then
        echo "ok   $name: rc=$rc: $(cat /tmp/cv_tok_err.$$)"
    else
        echo "FAIL $name: rc=$rc stderr lines=$lines stdout='$out'"; fail=1
    fi
    rm -f /tmp/cv_tok_err.$$
}
check "stories BOS" "[1, 403, 407, 261, 378]" "$("$BIN" tokenize -m "$M/stories260K.gguf" "Once upon a time")"
check "stories --no-bos" "[403, 407, 261, 378]" "$("$BIN" tokenize -m "$M/stories260K.gguf" --no-bos "Once upon a time")"
check "empty text" "[1]" "$("$BIN" tokenize -m "$M/stories260K.gguf" "")"
check "llama3 specials" "[128000, 128006, 882, 128007, 271, 13347, 128009]" \
    "$("$BIN" tokenize -m "$M/vocab/llama3.2-bpe-vocab.gguf" "<|start_header_id|>user<|end_header_id|>

Hi<|eot_id|>")"
check "gpt-2 no BOS flag" "[15496, 995]" "$("$BIN" tokenize -m "$M/vocab/ggml-vocab-gpt-2.gguf" "Hello world")"
check_err "missing file" "$BIN" tokenize -m /nonexistent.gguf "x"
check_err "not a gguf" "$BIN" tokenize -m "$M/README.md" "x"
check_err "no text" "$BIN" tokenize -m "$M/stories260K.gguf"
check_err "no model" "$BIN" tokenize "x"
check_err "bad flag" "$BIN" tokenize -m "$M/stories260K.gguf" --bogus "x"
check_err "two texts" "$BIN" tokenize -m "$M/stories260K.gguf" a b
exit $fail
