# dtype.cmake - weight type tests: traits, fp16/bf16, block layouts, quantize/dequantize/dot.
cv_add_test(NAME test_dtype SOURCES test_dtype.c LABELS asan TIMEOUT 120)
add_dependencies(caravan_asan_tests test_dtype)
