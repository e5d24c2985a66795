# Issue 2 acceptance 5: mkmodel in every quantizable type vs the same model in F32.
cv_add_test(NAME test_types_vs_f32 SOURCES test_types_vs_f32.c LABELS model TIMEOUT 600)
add_dependencies(test_types_vs_f32 caravan)
