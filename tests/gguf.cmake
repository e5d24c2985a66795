# gguf.cmake - tests of the GGUF reader/writer, `caravan inspect`, the corrupt-file corpus and the fuzz target.
cv_add_test(NAME test_gguf SOURCES test_gguf.c LABELS gguf)
cv_add_test(NAME test_gguf_write SOURCES test_gguf_write.c LABELS gguf)
