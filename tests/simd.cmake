# simd: CPU kernels (kernels/cpu) against their scalar oracles, and the
# stories260K golden run at several thread counts and CPU levels.
cv_add_test(NAME test_simd SOURCES test_simd.c TIMEOUT 600 LABELS simd)
# Kernel benchmarks (not a ctest: timings depend on the machine).
add_executable(bench_kernels bench/bench_kernels.c)
target_link_libraries(bench_kernels PRIVATE cv_kernels cv_core)
target_include_directories(bench_kernels PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
cv_add_test(NAME test_simd_golden SOURCES test_simd_golden.c TIMEOUT 600 LABELS simd model)
# Fused few-token decode vs one token (T1/T2/T4/T8, fit d + n p; not a ctest).
add_executable(bench_multi bench/bench_multi.c)
target_link_libraries(bench_multi PRIVATE cv_kernels cv_core)
target_include_directories(bench_multi PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
# One-token decode of a Llama-1B-shaped matvec chain, GB/s per tensor shape vs a read probe (not a ctest).
add_executable(bench_decode_shapes bench/bench_decode_shapes.c)
target_link_libraries(bench_decode_shapes PRIVATE cv_kernels cv_core)
target_include_directories(bench_decode_shapes PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
# Prefill GEMM on weights and activations at the ends of their ranges (int16 bounds of gemm_avx2.c).
cv_add_test(NAME test_gemm_extremes SOURCES test_gemm_extremes.c TIMEOUT 300 LABELS simd)
# Row-interleaved (R4) weight layouts: round trip, kernels vs the oracle and the standard layout.
cv_add_test(NAME test_repack SOURCES test_repack.c TIMEOUT 300 LABELS simd)
