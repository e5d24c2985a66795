#!/usr/bin/env bash
# tests/gpu/run.sh - the GPU checks of the CUDA backend, in one run on a GPU
# host (the `device` machine: CUDA, CMake and a compiler, no MPI/protobuf).
#
#   stage build  ENGINE_ONLY Release build with CUDA (-j16)
#   stage ops    every CUDA op x weight type vs the CPU scalar oracle (test_cuda_ops)
#   stage golden stories260K greedy from BOS on cuda:0 = the 256 golden tokens
#   stage shard  two ranks on the one GPU, host-staged, PP2 and TP2 = one rank
#                (threads in one process: there is no MPI on the GPU host; with
#                mpirun present a real 2-process run is added)
#   stage bench  caravan mkmodel Llama-3.1-8B-shaped models (Q4_K, Q8_0, F16),
#                caravan bench on cuda:0, against the measured d2d copy bandwidth
#   stage simd   the CPU kernel tests on this host's CPU (test_simd)
# then prints one summary table (last, so it is in the reply's tail).
#
# Every stage has its own timeout and a failed stage does not stop the next;
# the whole run is held under CV_GPU_BUDGET seconds (default 450). Logs go to
# $OUT (at most 8 files: build.log ops.log golden.log shard.log bench.log
# simd.log memcheck.log summary.txt). Models: $CARAVAN_MODELS (default gpu_models/ in the
# repo root) must hold stories260K.gguf, stories260K.greedy.json and
# vocab/llama3.2-bpe-vocab.gguf. Exit status: number of failed stages.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-/tmp/cv-gpu-out}
mkdir -p "$OUT"
export CARAVAN_MODELS=${CARAVAN_MODELS:-$ROOT/gpu_models}
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${CV_GPU_BUILD:-$ROOT/build-gpu}
MODELS_TMP=${CV_GPU_TMP:-/tmp/cv_gpu_models}
BUDGET=${CV_GPU_BUDGET:-450}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
declare -A RESULT
FAILED=0

now() { date +%s; }
left() { echo $((START + BUDGET - $(now))); }
# run_stage NAME TIMEOUT_S CMD... : logs to $OUT/NAME.log, records ok/FAIL/TIMEOUT/SKIP
run_stage() {
  local name=$1 tmo=$2
  shift 2
  local l
  l=$(left)
  if [ "$l" -lt 15 ]; then
    RESULT[$name]="SKIP (time budget spent)"
    FAILED=$((FAILED + 1))
    return
  fi
  [ "$tmo" -gt $((l - 5)) ] && tmo=$((l - 5))
  local t0
  t0=$(now)
  echo "=== stage $name (timeout ${tmo}s) $(date -u +%H:%M:%S)" >>"$OUT/$name.log"
  timeout --kill-after=5 "$tmo" bash -c "$*" >>"$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(($(now) - t0))
  if [ $rc -eq 0 ]; then
    RESULT[$name]="ok (${dt}s)"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    RESULT[$name]="TIMEOUT after ${dt}s"
    FAILED=$((FAILED + 1))
  else
    RESULT[$name]="FAIL rc=$rc (${dt}s)"
    FAILED=$((FAILED + 1))
  fi
  echo "=== stage $name: ${RESULT[$name]}" >>"$OUT/$name.log"
  tail -n 25 "$OUT/$name.log"
}

{
  echo "host: $(hostname) $(date -u)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | head -2
  nvcc --version | tail -1
  cmake --version | head -1
  lscpu | grep -E "Model name|^CPU\(s\)" | head -2
  echo "avx512: $(grep -o -w 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  command -v mpirun >/dev/null && echo "mpirun: $(command -v mpirun)" || echo "mpirun: absent"
} >"$OUT/build.log" 2>&1
cat "$OUT/build.log"

# ---- build -------------------------------------------------------------------
TARGETS="caravan test_cuda_ops test_cuda_shard cuda_bw test_cuda_emul test_simd"
run_stage build 200 "set -x; cmake -S '$ROOT' -B '$BUILD' -DCMAKE_BUILD_TYPE=Release \
  -DCARAVAN_ENGINE_ONLY=ON -DCARAVAN_MODELS='$CARAVAN_MODELS' && \
  cmake --build '$BUILD' -j16 --target $TARGETS"
BIN=$BUILD/cli/caravan
T=$BUILD/tests

# ---- (a) every op x type vs the CPU oracle -------------------------------------
run_stage ops 120 "set -x; '$T/test_cuda_emul' && '$T/test_cuda_ops'"

# ---- (b) golden tokens on cuda:0 ---------------------------------------------------
run_stage golden 60 "set -x; M='$CARAVAN_MODELS/stories260K.gguf'; G='$CARAVAN_MODELS/stories260K.greedy.json'; \
  '$BIN' run -m \"\$M\" --temp 0 -n 256 --ignore-eos --json --device cuda:0 > '$OUT/golden.jsonl' && \
  python3 - \"\$G\" '$OUT/golden.jsonl' <<'PY'
import json, sys
gold = json.load(open(sys.argv[1]))
want = gold.get('generated_token_ids') or gold.get('tokens') or gold.get('token_ids')
got = [json.loads(l)['id'] for l in open(sys.argv[2]) if l.strip()]
if want and want[0] == 1 and len(want) == len(got) + 1:
    want = want[1:]
if got != want:
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    print(f'FAIL: cuda:0 {len(got)} tokens vs golden {len(want)}; first difference at {i}: got {got[i:i+5]} want {want[i:i+5]}')
    sys.exit(1)
print(f'ok: cuda:0 reproduces the {len(got)} golden tokens')
PY
  rc=\$?; rm -f '$OUT/golden.jsonl'; exit \$rc"

# ---- (c) two ranks on one GPU, host-staged ----------------------------------------------
run_stage shard 90 "set -x; '$T/test_cuda_shard'"

# ---- (d) 8B-shaped models: generation and prompt speed -------------------------------------
BENCH_SH='
set -x -o pipefail
fail=0
mkdir -p "$MT"
V="$CARAVAN_MODELS/vocab/llama3.2-bpe-vocab.gguf"
"$T/cuda_bw" 0 | tee "$MT/bw.txt" || fail=$((fail + 1))
for ty in Q4_K Q8_0 F16; do
  f="$MT/llama8b-$ty.gguf"
  t0=$(date +%s)
  if ! "$BIN" mkmodel -o "$f" --vocab-from "$V" --arch llama --n-layer 32 --n-embd 4096 \
      --n-head 32 --n-head-kv 8 --n-ff 14336 --n-ctx 8192 --rope-base 500000 --type $ty -t 16; then
    echo "mkmodel $ty failed"; rm -f "$f"; fail=$((fail + 1)); continue
  fi
  echo "mkmodel $ty: $(( $(date +%s) - t0 ))s, $(stat -c %s "$f") bytes"
  "$BIN" bench -m "$f" -d cuda:0 -p 512 -n 128 -r 3 | tee "$MT/bench-$ty.txt" || fail=$((fail + 1))
  rm -f "$f"
done
exit $fail
'
run_stage bench 300 "export MT='$MODELS_TMP' T='$T' BIN='$BIN'; $BENCH_SH"
rm -f "$MODELS_TMP"/*.gguf # a timed-out stage leaves its model (up to 16 GB) behind

# ---- (e) CPU kernels on this host -------------------------------------------------------
run_stage simd 90 "set -x; grep -o -m1 'avx512[a-z]*' /proc/cpuinfo | head -1; '$T/test_simd'"

# ---- memcheck: the op test's quick mode under compute-sanitizer (out-of-bounds
# reads/writes that do not crash), only when the tool is there and time is left
if command -v compute-sanitizer >/dev/null 2>&1; then
  run_stage memcheck 100 "set -x; compute-sanitizer --tool memcheck --error-exitcode 3 \
    --print-limit 20 '$T/test_cuda_ops' --quick 2>&1 | grep -v '^ok ' ; exit \${PIPESTATUS[0]}"
else
  RESULT[memcheck]="not run: no compute-sanitizer"
fi

# ---- (c') a real two-process group, only where MPI exists -------------------------------
if command -v mpirun >/dev/null 2>&1; then
  RESULT[mpi]="not built: this script builds ENGINE_ONLY (no MPI group code)"
else
  RESULT[mpi]="not run: no mpirun on this host (shard stage covers PP2/TP2 in one process)"
fi

# ---- summary ------------------------------------------------------------------------------
{
  echo
  echo "==================== caravan GPU checks: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) ===================="
  for s in build ops golden shard bench simd memcheck mpi; do
    printf '%-8s %s\n' "$s" "${RESULT[$s]:-not run}"
  done
  if [ -f "$OUT/ops.log" ]; then
    echo "ops: $(grep -c -E '^ok +[a-z]' "$OUT/ops.log") op checks ok, $(grep -c '^FAIL' "$OUT/ops.log") FAIL lines;" \
      "layout emulation: $(grep -c -E '^ok +[A-Z]' "$OUT/ops.log") type/size ok"
    grep '^FAIL' "$OUT/ops.log" | head -10
  fi
  grep -h -E '^(ok|FAIL):' "$OUT/golden.log" 2>/dev/null | head -3
  grep -h -E 'vs one rank|vs cpu' "$OUT/shard.log" 2>/dev/null | head -3
  BW=$(grep -o 'd2d_gb_s=[0-9.]*' "$MODELS_TMP/bw.txt" 2>/dev/null | cut -d= -f2)
  echo
  echo "bench on cuda:0 (d2d copy bandwidth, read+write: ${BW:-?} GB/s)"
  printf '%-6s %-6s %10s %10s %9s\n' type test tok_s GB_s d2d_pct
  for ty in Q4_K Q8_0 F16; do
    f=$MODELS_TMP/bench-$ty.txt
    [ -f "$f" ] || { printf '%-6s %s\n' $ty "no result"; continue; }
    grep -E '^test=' "$f" | while read -r line; do
      tst=$(echo "$line" | grep -o 'test=[^ ]*' | cut -d= -f2)
      tok=$(echo "$line" | grep -o ' tok_s=[^ ]*' | cut -d= -f2)
      gbs=$(echo "$line" | grep -o ' gb_s=[^ ]*' | cut -d= -f2)
      pct=$(awk -v g="${gbs:-0}" -v b="${BW:-0}" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * g / b; else print "?" }')
      printf '%-6s %-6s %10s %10s %9s\n' "$ty" "$tst" "$tok" "$gbs" "$pct"
    done
  done
  echo
  echo "decode kernel alone (14336x4096, n_tok 1) and the prefill path (n_tok 512):"
  grep -h '^kernel=' "$MODELS_TMP/bw.txt" 2>/dev/null | sed 's/kernel=matvec //; s/rows=14336 cols=4096 //'
  echo "total $(( $(now) - START ))s; failed stages: $FAILED"
} | tee -a "$SUMMARY"
cp "$MODELS_TMP"/bench-*.txt "$MODELS_TMP"/bw.txt "$OUT/" 2>/dev/null || true
# keep to 8 files in $OUT
cat "$OUT"/bench-*.txt "$OUT"/bw.txt >>"$OUT/bench.log" 2>/dev/null && rm -f "$OUT"/bench-*.txt "$OUT"/bw.txt
exit $FAILED
