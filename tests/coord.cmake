# coord.cmake - coordinator tests: the gRPC front end, the cluster protocol and
# worker groups that join and fail, end to end with real clients (pytest +
# grpcio, stubs generated from proto/ at test time). One ctest per test file.
# CARAVAN_PYTHON: a python with tests/e2e/requirements.txt installed
# (scripts/test.sh makes .venv and passes it).
if(CARAVAN_HAVE_NET)
  cv_add_test(NAME test_cluster_wire SOURCES test_cluster_wire.c LIBS cv_coord LABELS coord asan)
  add_dependencies(caravan_asan_tests test_cluster_wire)
  set(CARAVAN_PYTHON "python3" CACHE STRING "python with tests/e2e/requirements.txt installed")
  foreach(t test_grpc_basic test_grpc_cancel test_grpc_bad_input test_cluster_bad_input
            test_cluster_failover test_grpc_concurrent)
    if(EXISTS ${PROJECT_SOURCE_DIR}/tests/e2e/${t}.py)
      cv_add_script_test(NAME e2e_${t}
        COMMAND ${CARAVAN_PYTHON} -m pytest -x -q -p no:cacheprovider ${PROJECT_SOURCE_DIR}/tests/e2e/${t}.py
        TIMEOUT 600 LABELS e2e coord)
    endif()
  endforeach()
endif()
