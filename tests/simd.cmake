# simd: CPU kernels (kernels/cpu) against their scalar oracles, and the
# stories260K golden run at several thread counts and CPU levels.
cv_add_test(NAME test_simd SOURCES test_simd.c TIMEOUT 600 LABELS simd)
