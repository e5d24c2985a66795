#!/usr/bin/env bash
# tests/bench/simd_device.sh - the CPU kernel checks on a host with AVX-512
# (the GPU `device` machine): engine-only build without CUDA, then test_simd
# (every kernel vs its scalar oracle at every CPU level the host has),
# test_simd_golden (stories260K greedy golden, levels x threads 1..4) and a
# short bench_kernels. Logs to $OUT. Models from $CARAVAN_MODELS (default
# gpu_models/ in the repo root).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/simd-out}
mkdir -p "$OUT"
export CARAVAN_MODELS=${CARAVAN_MODELS:-$PWD/gpu_models}
B=${SIMD_BUILD:-$PWD/build-simd-dev}
J=$(nproc)
lscpu | grep -E "Model name|^CPU\(s\)" ; grep -o -w -E "avx512f|avx512bw|avx512vl|avx512dq|avx512_vnni|avx512_bf16|avx_vnni" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
( cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCARAVAN_ENGINE_ONLY=ON -DCARAVAN_CUDA=OFF &&
  cmake --build "$B" -j"$J" --target test_simd test_simd_golden bench_kernels ) >"$OUT/build.log" 2>&1 ||
  { echo "BUILD FAILED"; tail -40 "$OUT/build.log"; exit 1; }
echo "== test_simd"
timeout 240 "$B/tests/test_simd" >"$OUT/simd.log" 2>&1; echo "test_simd rc=$?"
grep -E "best level|NOT RUN|avx512|FAIL|passed|failed" "$OUT/simd.log" | head -40
echo "== test_simd_golden"
timeout 180 "$B/tests/test_simd_golden" >"$OUT/golden.log" 2>&1; echo "test_simd_golden rc=$?"
tail -14 "$OUT/golden.log"
echo "== bench_kernels"
for T in Q4_0 Q8_0 Q4_K; do timeout 60 "$B/tests/bench_kernels" -t "$J" -r 5 -T $T; done 2>&1 | tee "$OUT/bench.log" | grep -v "^bench_kernels:"
