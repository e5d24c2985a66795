# tokenizer.cmake - tokenizers (llama.cpp test vectors, round trips, streaming
# detokenizer), chat templates, and `caravan tokenize`.
cv_add_test(NAME test_tokenizer SOURCES test_tokenizer.c LABELS tokenizer asan TIMEOUT 300)
add_dependencies(caravan_asan_tests test_tokenizer)
