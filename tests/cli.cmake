# Command-line behaviour of caravan run/inspect/tokenize/mkmodel on bad input (issue 2 acceptance 8), golden output through the CLI, and caravan bench's result lines (issue 3).
cv_add_script_test(NAME cli_errors COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli_errors.sh LABELS cli)
cv_add_script_test(NAME cli_golden COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli_golden.sh LABELS cli model)
cv_add_script_test(NAME cli_bench COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli_bench.sh LABELS cli model)
# Weights re-laid at load (R4) answer as the GGUF layout (issue 3).
cv_add_script_test(NAME cli_repack COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli_repack.sh LABELS cli model)
