# tokenizer.cmake - tokenizers (llama.cpp test vectors, round trips, streaming
# detokenizer), chat templates, and `caravan tokenize`.
cv_add_test(NAME test_tokenizer SOURCES test_tokenizer.c LABELS tokenizer asan TIMEOUT 300)
add_dependencies(caravan_asan_tests test_tokenizer)
cv_add_test(NAME test_chat SOURCES test_chat.c LABELS tokenizer asan TIMEOUT 60)
add_dependencies(caravan_asan_tests test_chat)
cv_add_script_test(NAME test_cli_tokenize COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_tokenize.sh
                   LABELS tokenizer cli TIMEOUT 60)
