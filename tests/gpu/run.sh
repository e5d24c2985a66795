#!/usr/bin/env bash
# tests/gpu/run.sh - the GPU checks of the CUDA backend, in one run on a GPU
# host (the `device` machine: CUDA, CMake and a compiler, no MPI/protobuf),
# for every decode configuration ("configs", VAR:GRAPHS[:FUSE]): matvec
# variant CARAVAN_CUDA_MMV=v1|v2, CARAVAN_CUDA_GRAPHS=0|1, and for v2
# CARAVAN_CUDA_FUSE=1|0 (grouped matmuls and fused small ops, default 1);
# v2+graphs first, v2 without fusion last (it tells a fusion bug from a
# kernel bug).
#
#   stage build  ENGINE_ONLY Release build with CUDA (-j16)
#   stage ops    layout emulation (test_cuda_emul), then every CUDA op x weight
#                type vs the CPU scalar oracle (test_cuda_ops) per config
#   stage golden stories260K greedy from BOS on cuda:0 = the 256 golden tokens, per config
#   stage shard  two ranks on the one GPU, host-staged, PP2 and TP2 = one rank
#                (threads in one process), v1 and v2+graphs
#   stage kern   the decode kernel alone (cuda_bw: 14336x4096 per type), v1, v2
#                and v2 with 4 tasks in flight per lane (CARAVAN_CUDA_MMV_U=4; default 2)
#   stage bench  caravan mkmodel Llama-3.1-8B-shaped models (Q8_0, F16, Q4_K),
#                caravan bench -p 512 -n 128 on cuda:0 per config (-r 3 for the
#                first two configs, -r 1 for the others), against the measured
#                d2d copy bandwidth; one result line per run as soon as it is done
#   stage simd   the CPU kernel tests on this host's CPU (test_simd)
#   memcheck     test_cuda_ops --quick with v2 + graphs under compute-sanitizer
#   ncu          one v2 matvec launch per main type under Nsight Compute (if time is left)
# then prints one summary table (last, so it is in the reply's tail) and a
# final line naming the best correct config.
#
# Every stage has its own timeout and a failed stage does not stop the next;
# the whole run is held under CV_GPU_BUDGET seconds (default 420: an H200 run
# should take ~4-5 min). Less important runs are skipped when time runs low.
# Logs go to $OUT (at most 8 files: build.log ops.log golden.log shard.log
# bench.log simd.log memcheck.log summary.txt; kern goes into bench.log).
# Models: $CARAVAN_MODELS (default gpu_models/ in the repo root) must hold
# stories260K.gguf, stories260K.greedy.json and vocab/llama3.2-bpe-vocab.gguf.
# CV_GPU_CONFIGS overrides the config list (e.g. "v2:1 v1:0").
# CV_GPU_TYPES overrides the bench types (default "Q8_0 F16 Q4_K").
# Exit status: number of failed stages.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-/tmp/cv-gpu-out}
mkdir -p "$OUT"
export CARAVAN_MODELS=${CARAVAN_MODELS:-$ROOT/gpu_models}
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${CV_GPU_BUILD:-$ROOT/build-gpu}
MODELS_TMP=${CV_GPU_TMP:-/tmp/cv_gpu_models}
BUDGET=${CV_GPU_BUDGET:-420}
CONFIGS=${CV_GPU_CONFIGS:-"v2:1 v1:0 v2:0 v1:1 v2:1:0"}
TYPES=${CV_GPU_TYPES:-"Q8_0 F16 Q4_K"}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
mkdir -p "$MODELS_TMP"
RES=$MODELS_TMP/results.txt # one line per config check / bench result
: >"$RES"
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
  tail -n 12 "$OUT/$name.log"
}

{
  echo "host: $(hostname) $(date -u)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | head -2
  nvcc --version | tail -1
  cmake --version | head -1
  lscpu | grep -E "Model name|^CPU\(s\)" | head -2
  echo "avx512: $(grep -o -w 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  command -v mpirun >/dev/null && echo "mpirun: $(command -v mpirun)" || echo "mpirun: absent"
  echo "configs: $CONFIGS; bench types: $TYPES; budget ${BUDGET}s"
} >"$OUT/build.log" 2>&1
cat "$OUT/build.log"

# The per-config helpers run inside the stages' bash -c; exported so they can.
# cfg_env "v2:1" -> "CARAVAN_CUDA_MMV=v2 CARAVAN_CUDA_GRAPHS=1 CARAVAN_CUDA_FUSE=1"
cfg_env() {
  local v=${1%%:*} r=${1#*:}
  local g=${r%%:*} f=1
  [ "$r" != "$g" ] && f=${r#*:}
  echo "CARAVAN_CUDA_MMV=$v CARAVAN_CUDA_GRAPHS=$g CARAVAN_CUDA_FUSE=$f"
}
export -f cfg_env
export RES CONFIGS TYPES MODELS_TMP

# ---- build -------------------------------------------------------------------
TARGETS="caravan test_cuda_ops test_cuda_shard cuda_bw test_cuda_emul test_simd"
run_stage build 240 "set -x; cmake -S '$ROOT' -B '$BUILD' -DCMAKE_BUILD_TYPE=Release \
  -DCARAVAN_ENGINE_ONLY=ON -DCARAVAN_MODELS='$CARAVAN_MODELS' && \
  cmake --build '$BUILD' -j16 --target $TARGETS"
BIN=$BUILD/cli/caravan
T=$BUILD/tests
export BIN T

# ---- (a) every op x type vs the CPU oracle, per config ------------------------------
run_stage ops 150 '
fail=0
"$T/test_cuda_emul" > /tmp/cv_emul.txt 2>&1 && echo "emul ok: $(grep -c "^ok" /tmp/cv_emul.txt) checks" \
  || { fail=$((fail + 1)); grep -v "^ok" /tmp/cv_emul.txt | head -20; }
for c in $CONFIGS; do
  echo "--- test_cuda_ops $(cfg_env $c)"
  env $(cfg_env $c) timeout 60 "$T/test_cuda_ops" > /tmp/cv_ops.txt 2>&1
  rc=$?
  nok=$(grep -c "^ok " /tmp/cv_ops.txt); nf=$(grep -c "^FAIL" /tmp/cv_ops.txt)
  grep "^FAIL" /tmp/cv_ops.txt | head -12 | sed "s/^/[$c] /"
  tail -1 /tmp/cv_ops.txt
  if [ $rc -eq 0 ] && [ "$nf" -eq 0 ]; then st=ok; else st=FAIL; fail=$((fail + 1)); fi
  echo "ops $c $st $nok $nf" | tee -a "$RES"
done
exit $fail'

# ---- (b) golden tokens on cuda:0, per config ---------------------------------------------
cat >/tmp/cv_golden.py <<'PY'
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
run_stage golden 90 '
fail=0
M="$CARAVAN_MODELS/stories260K.gguf"; G="$CARAVAN_MODELS/stories260K.greedy.json"
for c in $CONFIGS; do
  env $(cfg_env $c) timeout 30 "$BIN" run -m "$M" --temp 0 -n 256 --ignore-eos --json --device cuda:0 \
    > /tmp/cv_golden.jsonl 2>/tmp/cv_golden.err && python3 /tmp/cv_golden.py "$G" /tmp/cv_golden.jsonl > /tmp/cv_golden.txt 2>&1
  rc=$?
  echo "$c: $(cat /tmp/cv_golden.txt 2>/dev/null)"; [ $rc -eq 0 ] || tail -5 /tmp/cv_golden.err
  if [ $rc -eq 0 ]; then st=ok; else st=FAIL; fail=$((fail + 1)); fi
  echo "golden $c $st" >> "$RES"
  rm -f /tmp/cv_golden.jsonl /tmp/cv_golden.txt
done
exit $fail'

# ---- (c) two ranks on one GPU, host-staged ----------------------------------------------
run_stage shard 90 '
fail=0
for c in v1:0 v2:1; do
  echo "--- test_cuda_shard $(cfg_env $c)"
  env $(cfg_env $c) timeout 40 "$T/test_cuda_shard" > /tmp/cv_shard.txt 2>&1
  rc=$?
  sed "s/^/[$c] /" /tmp/cv_shard.txt
  if [ $rc -eq 0 ]; then st=ok; else st=FAIL; fail=$((fail + 1)); fi
  echo "shard $c $st" >> "$RES"
done
exit $fail'

# ---- (d) the decode kernel alone, v1 and v2 ----------------------------------------------
run_stage kern 90 '
set -o pipefail
fail=0
CARAVAN_CUDA_MMV=v1 "$T/cuda_bw" 0 | tee "$MODELS_TMP/bw.txt" || fail=$((fail + 1))
BW=$(grep -o "d2d_gb_s=[0-9.]*" "$MODELS_TMP/bw.txt" | cut -d= -f2)
CARAVAN_CUDA_MMV=v2 "$T/cuda_bw" 0 "${BW:-0}" | tee -a "$MODELS_TMP/bw.txt" || fail=$((fail + 1))
CARAVAN_CUDA_MMV=v2 CARAVAN_CUDA_MMV_U=4 "$T/cuda_bw" 0 "${BW:-0}" | tee -a "$MODELS_TMP/bw.txt" || fail=$((fail + 1))
exit $fail'
mv "$OUT/kern.log" "$OUT/bench.log" 2>/dev/null

# ---- (e) 8B-shaped models: generation and prompt speed, per config -------------------------
# Per type: one mkmodel, then one bench per config (most important config
# first); a bench is skipped when less than MIN_LEFT seconds are left.
BENCH_SH='
fail=0
V="$CARAVAN_MODELS/vocab/llama3.2-bpe-vocab.gguf"
for ty in $TYPES; do
  f="$MT/llama8b-$ty.gguf"
  t0=$(date +%s)
  if ! "$BIN" mkmodel -o "$f" --vocab-from "$V" --arch llama --n-layer 32 --n-embd 4096 \
      --n-head 32 --n-head-kv 8 --n-ff 14336 --n-ctx 8192 --rope-base 500000 --type $ty -t 16 > /tmp/cv_mk.txt 2>&1; then
    tail -3 /tmp/cv_mk.txt; echo "mkmodel $ty failed"; rm -f "$f"; fail=$((fail + 1)); continue
  fi
  echo "mkmodel $ty: $(( $(date +%s) - t0 ))s, $(stat -c %s "$f") bytes"
  k=0
  for c in $CONFIGS; do
    k=$((k + 1))
    if [ $(( END - $(date +%s) )) -lt 45 ]; then echo "skip bench $ty $c: time"; continue; fi
    r=1; [ $k -le 2 ] && r=3 # the first two configs (new best guess, old default) x 3 reps
    echo "--- bench $ty $(cfg_env $c) -r $r"
    env $(cfg_env $c) timeout 100 "$BIN" bench -m "$f" -d cuda:0 -p 512 -n 128 -r $r > /tmp/cv_b.txt 2>&1
    rc=$?
    grep -E "^test=|ERROR|error" /tmp/cv_b.txt | head -6
    [ $rc -eq 0 ] || { fail=$((fail + 1)); tail -5 /tmp/cv_b.txt; }
    grep -E "^test=" /tmp/cv_b.txt | sed "s/^/bench $c $ty /" >> "$RES"
  done
  # where one decode step spends its time (v2, fused, no graphs): GPU time per
  # kernel over one step under ncu, summed by kernel name
  if [ "$ty" = "$NCU_TYPE" ] && command -v ncu >/dev/null 2>&1 && [ $(( END - $(date +%s) )) -gt 70 ]; then
    echo "--- ncu: one decode step, $ty, v2 fused, per kernel"
    CARAVAN_CUDA_MMV=v2 CARAVAN_CUDA_FUSE=1 CARAVAN_CUDA_GRAPHS=0 timeout 60 ncu --clock-control none \
      --metrics gpu__time_duration.sum --csv --page raw --print-kernel-base function \
      --launch-skip 700 --launch-count 600 "$BIN" bench -m "$f" -d cuda:0 -p 0 -n 4 -r 0 \
      > /tmp/cv_ncu.csv 2>/tmp/cv_ncu.err
    python3 /tmp/cv_ncu.py /tmp/cv_ncu.csv | tee "$MT/ncu_step.txt" || tail -5 /tmp/cv_ncu.err
  fi
  rm -f "$f"
done
exit $fail
'
# ncu CSV -> GPU time per kernel name over one decode step (from one
# embedding launch, k_dequant_rows, to the next), top 10 and the step total
cat >/tmp/cv_ncu.py <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
if len(rows) < 3:
    print("ncu: no kernels profiled"); sys.exit(1)
h = rows[0]; ki = h.index("Kernel Name"); ti = h.index("gpu__time_duration.sum")
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(rows[1][ti], 1e-3)
ks = [(r[ki], float(r[ti].replace(",", "")) * scale) for r in rows[2:] if len(r) > ti]
idx = [i for i, (n, _) in enumerate(ks) if "dequant_rows" in n]
if len(idx) >= 2:
    ks = ks[idx[-2]:idx[-1]]
tot = sum(t for _, t in ks)
agg = collections.defaultdict(lambda: [0.0, 0])
for n, t in ks:
    agg[n][0] += t; agg[n][1] += 1
print(f"ncu, one decode step: {len(ks)} kernels, {tot:.1f} us of GPU time (launch gaps not included)")
for n, (t, c) in sorted(agg.items(), key=lambda kv: -kv[1][0])[:10]:
    print(f"  {n[:36]:36s} x{c:<4d} {t:9.1f} us {100 * t / max(tot, 1e-9):5.1f}%")
PY
export NCU_TYPE=${CV_GPU_NCU_TYPE:-Q8_0}
run_stage bench 330 "export MT='$MODELS_TMP' END=$((START + BUDGET - 40)); $BENCH_SH"
rm -f "$MODELS_TMP"/*.gguf # a timed-out stage leaves its model (up to 16 GB) behind

# ---- (f) CPU kernels on this host -------------------------------------------------------
run_stage simd 60 "set -x; grep -o -m1 'avx512[a-z]*' /proc/cpuinfo | head -1; '$T/test_simd'"

# ---- memcheck: the op test's quick mode under compute-sanitizer (out-of-bounds
# reads/writes that do not crash), with the new kernels and graphs
if command -v compute-sanitizer >/dev/null 2>&1; then
  run_stage memcheck 100 "set -x; CARAVAN_CUDA_MMV=v2 CARAVAN_CUDA_GRAPHS=1 compute-sanitizer --tool memcheck \
    --error-exitcode 3 --print-limit 20 '$T/test_cuda_ops' --quick 2>&1 | grep -v '^ok ' ; exit \${PIPESTATUS[0]}"
else
  RESULT[memcheck]="not run: no compute-sanitizer"
fi

# ---- ncu: one v2 launch per main type under the profiler (DRAM throughput,
# occupancy, registers), only when the tool is there and time is left; its
# lines go into bench.log
if command -v ncu >/dev/null 2>&1 && [ "$(left)" -gt 100 ]; then
  run_stage ncu 80 '
BW=$(grep -o "d2d_gb_s=[0-9.]*" "$MODELS_TMP/bw.txt" | head -1 | cut -d= -f2)
for ty in Q8_0 F16 Q4_K; do
  echo "--- ncu v2 $ty"
  CARAVAN_CUDA_MMV=v2 CARAVAN_CUDA_FUSE=0 timeout 25 ncu --clock-control none -k regex:k_mmv2_[qf] \
    --launch-skip 4 --launch-count 1 --section SpeedOfLight --section Occupancy --section LaunchStats \
    "$T/cuda_bw" 0 "${BW:-4000}" $ty 2>&1 | grep -E "k_mmv2|Throughput|Duration|Occupancy|Registers Per|Block Limit|==ERROR|==WARNING" | head -16
done
exit 0 # informational: never a failed stage'
  cat "$OUT/ncu.log" >>"$OUT/bench.log" && rm -f "$OUT/ncu.log"
else
  RESULT[ncu]="not run (no ncu or no time left)"
fi

if command -v mpirun >/dev/null 2>&1; then
  RESULT[mpi]="not built: this script builds ENGINE_ONLY (no MPI group code)"
else
  RESULT[mpi]="not run: no mpirun on this host (shard stage covers PP2/TP2 in one process)"
fi

# ---- summary ------------------------------------------------------------------------------
{
  echo
  echo "==================== caravan GPU checks: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) ===================="
  for s in build ops golden shard kern bench simd memcheck ncu mpi; do
    printf '%-8s %s\n' "$s" "${RESULT[$s]:-not run}"
  done
  grep -h "^emul" "$OUT/ops.log" 2>/dev/null | head -1
  echo "config (CARAVAN_CUDA_MMV:CARAVAN_CUDA_GRAPHS[:CARAVAN_CUDA_FUSE]) checks: ops (ok/FAIL lines), golden, shard"
  for c in $CONFIGS; do
    o=$(awk -v c="$c" '$1 == "ops" && $2 == c { print $3 " (" $4 "/" $5 ")" }' "$RES")
    g=$(awk -v c="$c" '$1 == "golden" && $2 == c { print $3 }' "$RES")
    s=$(awk -v c="$c" '$1 == "shard" && $2 == c { print $3 }' "$RES")
    printf '  %-7s ops %-16s golden %-5s shard %s\n' "$c" "${o:-?}" "${g:-?}" "${s:--}"
  done
  grep -h '^\[[^]]*\] FAIL' "$OUT/ops.log" 2>/dev/null | head -8
  grep -h 'vs one rank\|vs cpu' "$OUT/shard.log" 2>/dev/null | head -6
  BW=$(grep -o 'd2d_gb_s=[0-9.]*' "$MODELS_TMP/bw.txt" 2>/dev/null | head -1 | cut -d= -f2)
  echo
  echo "decode kernel alone (14336x4096, n_tok 1; d2d copy ${BW:-?} GB/s read+write):"
  printf '  %-4s' type; for v in v1 v2 v2u4; do printf ' %9s %6s' "$v us" "%d2d"; done; echo
  for ty in F16 BF16 Q8_0 Q4_0 Q4_K Q5_K Q6_K Q2_K Q3_K; do
    printf '  %-4s' $ty
    for v in v1 v2 v2u4; do
      l=$(grep "^kernel=matvec var=$v type=$ty " "$MODELS_TMP/bw.txt" 2>/dev/null | head -1)
      us=$(echo "$l" | grep -o ' us=[0-9.]*' | cut -d= -f2)
      pc=$(echo "$l" | grep -o 'pct_d2d=[0-9.]*' | cut -d= -f2)
      er=$(echo "$l" | grep -q ERROR && echo '!')
      printf ' %9s %6s' "${us:--}$er" "${pc:--}"
    done
    echo
  done
  echo
  echo "bench on cuda:0, Llama-3.1-8B shape (tg128 and pp512; % of d2d copy bandwidth):"
  printf '%-7s %-5s %10s %9s %7s %10s\n' config type tg_tok_s tg_GB_s tg_pct pp512_tok_s
  for c in $CONFIGS; do
    for ty in $TYPES; do
      tg=$(awk -v c="$c" -v t="$ty" '$1 == "bench" && $2 == c && $3 == t && $4 ~ /^test=tg/' "$RES" | head -1)
      pp=$(awk -v c="$c" -v t="$ty" '$1 == "bench" && $2 == c && $3 == t && $4 ~ /^test=pp/' "$RES" | head -1)
      [ -n "$tg$pp" ] || continue
      tok=$(echo "$tg" | grep -o ' tok_s=[^ ]*' | cut -d= -f2)
      gbs=$(echo "$tg" | grep -o ' gb_s=[^ ]*' | cut -d= -f2)
      pct=$(echo "$tg" | grep -o ' bw_pct=[^ ]*' | cut -d= -f2)
      ptok=$(echo "$pp" | grep -o ' tok_s=[^ ]*' | cut -d= -f2)
      printf '%-7s %-5s %10s %9s %6s%% %10s\n' "$c" "$ty" "${tok:--}" "${gbs:--}" "${pct:--}" "${ptok:--}"
    done
  done
  # best correct config: ops, golden (and shard where run) ok; highest mean tg bw_pct
  if [ -f "$MODELS_TMP/ncu_step.txt" ]; then echo; cat "$MODELS_TMP/ncu_step.txt"; fi
  best=$(for c in $CONFIGS; do
    bad=$(awk -v c="$c" '($1 == "ops" || $1 == "golden" || $1 == "shard") && $2 == c && $3 != "ok"' "$RES" | wc -l)
    have=$(awk -v c="$c" '($1 == "ops" || $1 == "golden") && $2 == c && $3 == "ok"' "$RES" | wc -l)
    [ "$bad" -eq 0 ] && [ "$have" -ge 2 ] || continue
    awk -v c="$c" '$1 == "bench" && $2 == c && $4 ~ /^test=tg/ {
        for (i = 4; i <= NF; i++) if ($i ~ /^bw_pct=/) { split($i, a, "="); s += a[2]; n++; ty = ty " " $3 } }
      END { if (n) printf "%.1f %s%s\n", s / n, c, ty }' "$RES"
  done | sort -rn | head -1)
  if [ -n "$best" ]; then
    set -- $best
    pct=$1 cfg=$2
    shift 2
    echo "best correct config: $(cfg_env $cfg) (tg mean ${pct}% of d2d over $*)"
  else
    echo "best correct config: none (no config passed ops + golden with bench results)"
  fi
  echo "total $(( $(now) - START ))s; failed stages: $FAILED"
} | tee -a "$SUMMARY"
{ echo "=== results"; cat "$RES"; echo "=== cuda_bw"; cat "$MODELS_TMP/bw.txt"; } >>"$OUT/bench.log" 2>/dev/null
exit $FAILED
