# tokenizer.cmake - tokenizers (llama.cpp test vectors, round trips, streaming
# detokenizer), chat templates, and `caravan tokenize`.
cv_add_test(NAME test_tokenizer SOURCES test_tokenizer.c LABELS tokenizer asan TIMEOUT 300)
add_dependencies(caravan_asan_tests test_tokenizer)
cv_add_test(NAME test_chat SOURCES test_chat.c LABELS tokenizer asan TIMEOUT 60)
add_dependencies(caravan_asan_tests test_chat)
cv_add_script_test(NAME test_cli_tokenize COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_tokenize.sh
                   LABELS tokenizer cli TIMEOUT 60)
# The hand-written pre-tokenizers against the reference regexes (Python `regex`
# module; the test reports "skipped" where that module is not installed).
add_executable(pretok_dump pretok_dump.c)
target_link_libraries(pretok_dump PRIVATE cv_core)
target_include_directories(pretok_dump PRIVATE ${PROJECT_SOURCE_DIR})
if(CARAVAN_PYTHON)
  cv_add_script_test(NAME test_pretok_regex
                     COMMAND ${CARAVAN_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_pretok_regex.py
                             $<TARGET_FILE:pretok_dump>
                     LABELS tokenizer TIMEOUT 120)
  set_tests_properties(test_pretok_regex PROPERTIES SKIP_RETURN_CODE 77)
endif()
