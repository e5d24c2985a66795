# gguf.cmake - tests of the GGUF reader/writer, `caravan inspect`, the corrupt-file corpus and the fuzz target.
cv_add_test(NAME test_gguf SOURCES test_gguf.c LABELS gguf)
cv_add_test(NAME test_gguf_write SOURCES test_gguf_write.c LABELS gguf)
# The corrupt corpus: also rebuilt and rerun under ASan+UBSan by scripts/test.sh;
# its files (build tree) seed the fuzzer.
cv_add_test(NAME test_gguf_corrupt SOURCES test_gguf_corrupt.c LABELS gguf asan
            ARGS ${CMAKE_CURRENT_BINARY_DIR}/gguf_corpus)
add_dependencies(caravan_asan_tests test_gguf_corrupt)
