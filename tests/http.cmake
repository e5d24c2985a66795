# http.cmake - the OpenAI-compatible HTTP front end (coordinator/http.c) end
# to end: the official `openai` package against /v1, client disconnects,
# bad input, /health and /metrics (prometheus_client's parser). One ctest per
# pytest file; the fixtures (coordinator + worker groups on free ports) are
# tests/e2e/conftest.py's. CARAVAN_PYTHON: see coord.cmake.
if(CARAVAN_HAVE_NET)
  set(CARAVAN_PYTHON "python3" CACHE STRING "python with tests/e2e/requirements.txt installed")
  foreach(t test_openai_basic test_http_cancel test_http_bad_input test_http_health_metrics
            test_http_concurrent)
    if(EXISTS ${PROJECT_SOURCE_DIR}/tests/e2e/${t}.py)
      cv_add_script_test(NAME e2e_${t}
        COMMAND ${CARAVAN_PYTHON} -m pytest -x -q -p no:cacheprovider ${PROJECT_SOURCE_DIR}/tests/e2e/${t}.py
        TIMEOUT 600 LABELS e2e http)
    endif()
  endforeach()
endif()
