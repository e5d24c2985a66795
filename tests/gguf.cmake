# gguf.cmake - tests of the GGUF reader/writer, `caravan inspect`, the corrupt-file corpus and the fuzz target.
cv_add_test(NAME test_gguf SOURCES test_gguf.c LABELS gguf)
cv_add_test(NAME test_gguf_write SOURCES test_gguf_write.c LABELS gguf)
# The corrupt corpus: also rebuilt and rerun under ASan+UBSan by scripts/test.sh;
# its files (build tree) seed the fuzzer.
cv_add_test(NAME test_gguf_corrupt SOURCES test_gguf_corrupt.c LABELS gguf asan
            ARGS ${CMAKE_CURRENT_BINARY_DIR}/gguf_corpus)
add_dependencies(caravan_asan_tests test_gguf_corrupt)
set_tests_properties(test_gguf_corrupt PROPERTIES FIXTURES_SETUP gguf_corpus)

cv_add_script_test(NAME test_gguf_inspect COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_gguf_inspect.sh
                   LABELS gguf TIMEOUT 120)
set_tests_properties(test_gguf_inspect PROPERTIES SKIP_RETURN_CODE 77)

# libFuzzer target (clang only); tests/fuzz/run.sh builds it standalone for long runs.
# The short ctest run fuzzes for 15 s seeded with the corpus test_gguf_corrupt writes.
set(cv_fuzz OFF)
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  include(CheckCSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer")
  set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=fuzzer")
  check_c_source_compiles("#include <stdint.h>
#include <stddef.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }" CARAVAN_CLANG_HAS_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
  if(CARAVAN_CLANG_HAS_LIBFUZZER)
    set(cv_fuzz ON)
  else()
    message(STATUS "caravan: clang has no libFuzzer runtime; fuzz_gguf is left out")
  endif()
endif()
if(cv_fuzz)
  add_executable(fuzz_gguf fuzz/fuzz_gguf.c ${PROJECT_SOURCE_DIR}/core/gguf.c
                           ${PROJECT_SOURCE_DIR}/core/dtype.c ${PROJECT_SOURCE_DIR}/core/status.c)
  target_include_directories(fuzz_gguf PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined
                                           -fno-sanitize-recover=undefined)
  target_link_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined)
  set(fuzz_dir ${CMAKE_CURRENT_BINARY_DIR}/gguf_fuzz)
  add_test(NAME fuzz_gguf_short
           COMMAND sh -c "mkdir -p '${fuzz_dir}' && exec '$<TARGET_FILE:fuzz_gguf>' -max_total_time=15 -max_len=4096 -timeout=10 -print_final_stats=1 '${fuzz_dir}' '${CMAKE_CURRENT_BINARY_DIR}/gguf_corpus'")
  set_tests_properties(fuzz_gguf_short PROPERTIES LABELS "gguf;fuzz" TIMEOUT 60
                       FIXTURES_REQUIRED gguf_corpus
                       ENVIRONMENT "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
endif()
