#!/usr/bin/env bash
# cli_repack.sh - a model whose weights the CPU backend re-lays at load (the
# row-interleaved R4 layouts: Q4_0, Q8_0, Q4_K; also a Q4_0 model with a
# head tied to the embedding table) answers exactly as from the GGUF
# layout: `caravan run` greedy, 2 prompts in one batch (2-token decode on
# the groups) and one longer prompt alone (its prefill, well over 8 tokens,
# in the GEMM: panels packed straight from the Q4_0 / Q8_0 groups, from
# unpacked Q4_K groups; then the one-token R4 kernel), with
# CARAVAN_REPACK=0 (GGUF layout), the default (re-laid) and
# --mmap (the file mapping: never re-laid), 1 and 2 threads; the per-token
# logprobs must agree to 1e-4 and the tokens exactly. mkmodel models (n_embd
# 512, 2 layers, stories260K vocab).
set -u
BIN=${CARAVAN_BIN:?}
V=${CARAVAN_MODELS:?}/stories260K.gguf
if [ ! -f "$V" ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: missing $V"; exit 1; fi
  echo "SKIP: missing $V"; exit 77
fi
PY=${CARAVAN_PYTHON:-python3}
tmp=$(mktemp -d /tmp/cv-repack-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0 n=0
# Q4_0-tied: the head shares the embedding table, which is read as rows and
# must never be re-laid
for ty in Q4_0 Q8_0 Q4_K Q4_0-tied; do
  m=$tmp/m-$ty.gguf tied=""
  [ "${ty#*-}" = tied ] && tied=--tied
  "$BIN" mkmodel -o "$m" --vocab-from "$V" --n-layer 2 --n-embd 512 --n-head 8 --n-head-kv 4 \
    --n-ff 1536 --type ${ty%-tied} $tied --seed 11 -t 1 >/dev/null || { echo "FAIL: mkmodel $ty"; exit 1; }
  for t in 1 2; do
    for prompts in one two; do
      if [ $prompts = one ]; then
        set -- -p "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog"
      else
        set -- -p "Once upon a time" -p "The cat"
      fi
      for mode in gguf r4 mmap; do
        case $mode in
          gguf) env=CARAVAN_REPACK=0 extra="";;
          r4) env=CARAVAN_REPACK=1 extra="";;
          mmap) env=CARAVAN_REPACK=1 extra="--mmap";;
        esac
        env $env "$BIN" run -m "$m" "$@" --temp 0 -n 24 --ignore-eos --json -t $t $extra \
          2>"$tmp/err" >"$tmp/$mode.jsonl" || { echo "FAIL: $ty -t $t $prompts $mode exited non-zero"; cat "$tmp/err"; fails=$((fails+1)); }
      done
      n=$((n+1))
      "$PY" - "$tmp" "$ty -t $t $prompts prompt(s)" <<'PYEOF' || fails=$((fails+1))
import json, sys
d, what = sys.argv[1], sys.argv[2]
runs = {m: [json.loads(l) for l in open(f"{d}/{m}.jsonl") if l.strip()] for m in ("gguf", "r4", "mmap")}
ref = runs["gguf"]
if len(ref) < 24:
    print(f"FAIL: {what}: only {len(ref)} tokens from the GGUF layout"); sys.exit(1)
for m in ("r4", "mmap"):
    got = runs[m]
    ids = [(o.get("seq", 0), o["id"]) for o in got]
    want = [(o.get("seq", 0), o["id"]) for o in ref]
    if ids != want:
        print(f"FAIL: {what}: {m} tokens differ from the GGUF layout: {ids[:8]} vs {want[:8]}"); sys.exit(1)
    for a, b in zip(got, ref):
        la, lb = a.get("logprob"), b.get("logprob")
        if la is None or lb is None or abs(la - lb) > 1e-4:
            print(f"FAIL: {what}: {m} logprob {la} vs {lb}"); sys.exit(1)
print(f"ok: {what}: {len(ref)} tokens, R4 and --mmap equal to the GGUF layout")
PYEOF
    done
  done
done
echo "cli_repack: $((n-fails)) passed, $fails failed"
[ $fails -eq 0 ]
