# Scheduler tests (coordinator/sched.c) against a fake deterministic group.
cv_add_test(NAME test_sched SOURCES test_sched.c LABELS asan)
add_dependencies(caravan_asan_tests test_sched)
