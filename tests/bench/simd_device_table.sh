#!/usr/bin/env bash
# tests/bench/simd_device_table.sh - a second data point for the CPU kernels
# on the GPU host's CPU (16 cores, AVX-512): bench_kernels for every type, and
# caravan bench on Llama-3.2-1B-shaped Q4_0/Q8_0/Q4_K models at all cores
# (avx512 and avx2 levels) plus one-thread generation. Logs to $OUT.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/simd-out}
mkdir -p "$OUT"
export CARAVAN_MODELS=${CARAVAN_MODELS:-$PWD/gpu_models}
B=${SIMD_BUILD:-$PWD/build-simd-dev}
J=$(nproc)
( cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCARAVAN_ENGINE_ONLY=ON -DCARAVAN_CUDA=OFF &&
  cmake --build "$B" -j"$J" --target bench_kernels caravan ) >"$OUT/build.log" 2>&1 ||
  { echo "BUILD FAILED"; tail -40 "$OUT/build.log"; exit 1; }
timeout 150 "$B/tests/bench_kernels" -t "$J" -r 5 >"$OUT/bench_kernels.log" 2>&1
echo "bench_kernels rc=$?"; grep -v "^bench_kernels:" "$OUT/bench_kernels.log" | sed -e 's/ rows=[0-9]* n=[0-9]*//' -e 's/ bytes=[0-9]*//' -e 's/max_rel_err/err/'
for T in Q4_0 Q8_0 Q4_K; do
  M=/tmp/simd-l1b-$T.gguf
  "$B/cli/caravan" mkmodel -o "$M" --n-layer 16 --n-embd 2048 --n-head 32 --n-head-kv 8 --n-ff 8192 \
    --type $T --vocab-from "$CARAVAN_MODELS/llama3.2-bpe-vocab.gguf" -t "$J" >/dev/null 2>&1 || echo "mkmodel $T failed"
  for L in avx512 avx2; do
    timeout 60 "$B/cli/caravan" bench -m "$M" -t "$J" -p 512 -n 128 -r 3 --cpu-level $L 2>&1 | grep -E "^test=|read_bw" | sed "s/^/level=$L /"
  done
  timeout 60 "$B/cli/caravan" bench -m "$M" -t 1 -p 0 -n 64 -r 3 2>&1 | grep -E "^test=|read_bw" | sed "s/^/level=avx512 /"
done 2>&1 | tee "$OUT/table.log" | sed -e 's/model=[^ ]* //' -e 's/ tok_s_min=[^ ]* tok_s_max=[^ ]*//' -e 's/ weight_bytes=[0-9]*//'
