# engine: model config, CPU backend, forward pass, sampler, engine step.
cv_add_test(NAME test_engine_golden SOURCES test_engine_golden.c LABELS model asan)
add_dependencies(caravan_asan_tests test_engine_golden)
cv_add_test(NAME test_engine_tiny SOURCES test_engine_tiny.c LABELS model)
cv_add_test(NAME test_sampler SOURCES test_sampler.c LABELS unit)
cv_add_test(NAME test_engine_batch SOURCES test_engine_batch.c LABELS model asan)
add_dependencies(caravan_asan_tests test_engine_batch)
