# mpi.cmake - worker-group tests: comm_mpi, the planner, `caravan plan`, and
# distributed forward/generation under mpirun --oversubscribe (2-core machine:
# each rank runs one thread; models are small).

# The planner has no MPI dependency; built from planner.c alone so that it does not
# wait on the rest of the coordinator library.
add_executable(test_plan test_plan.c ${PROJECT_SOURCE_DIR}/coordinator/planner.c)
target_link_libraries(test_plan PRIVATE cv_core)
target_include_directories(test_plan PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
add_test(NAME test_plan COMMAND test_plan)
set_tests_properties(test_plan PROPERTIES TIMEOUT 60
                     ENVIRONMENT "CARAVAN_MODELS=${CARAVAN_MODELS}")

if(CARAVAN_HAVE_MPI)
  set(CV_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --mca btl self,vader,tcp)

  # cv_add_mpi_test(NAME name NP n TARGET exe [ARGS args...] [TIMEOUT s])
  function(cv_add_mpi_test)
    cmake_parse_arguments(T "" "NAME;NP;TARGET;TIMEOUT" "ARGS" ${ARGN})
    add_test(NAME ${T_NAME} COMMAND ${CV_MPIRUN} -np ${T_NP} $<TARGET_FILE:${T_TARGET}> ${T_ARGS})
    set(env "CARAVAN_MODELS=${CARAVAN_MODELS}" "CARAVAN_BIN=$<TARGET_FILE:caravan>"
            "CARAVAN_SRC=${PROJECT_SOURCE_DIR}" "CARAVAN_BUILD=${PROJECT_BINARY_DIR}"
            "OMPI_ALLOW_RUN_AS_ROOT=1" "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1" "OMP_NUM_THREADS=1")
    set_tests_properties(${T_NAME} PROPERTIES ENVIRONMENT "${env}" LABELS "mpi"
                         PROCESSORS ${T_NP})
    if(T_TIMEOUT)
      set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT})
    else()
      set_tests_properties(${T_NAME} PROPERTIES TIMEOUT 120)
    endif()
  endfunction()

  # Built from comm_mpi.c alone so that it does not wait on the rest of the worker.
  add_executable(test_comm_mpi test_comm_mpi.c ${PROJECT_SOURCE_DIR}/worker/comm_mpi.c)
  target_link_libraries(test_comm_mpi PRIVATE cv_core MPI::MPI_C)
  target_include_directories(test_comm_mpi PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
  cv_add_mpi_test(NAME test_comm_mpi_np2 NP 2 TARGET test_comm_mpi TIMEOUT 60)
  cv_add_mpi_test(NAME test_comm_mpi_np4 NP 4 TARGET test_comm_mpi TIMEOUT 60)
endif()

if(CARAVAN_HAVE_MPI)
  # Distributed forward vs the single-process engine (rank 0 runs both).
  add_executable(test_group test_group.c)
  # group.c uses the planner (cv_sched): list cv_worker on both sides of it
  target_link_libraries(test_group PRIVATE cv_worker cv_sched cv_worker cv_kernels cv_core MPI::MPI_C)
  target_include_directories(test_group PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
  # Acceptance 1: stories260K golden 256 greedy tokens from every layout.
  foreach(layout "1;2" "1;3" "1;5" "2;1" "4;1" "2;2")
    list(GET layout 0 tp)
    list(GET layout 1 pp)
    math(EXPR np "${tp} * ${pp}")
    cv_add_mpi_test(NAME test_group_stories_tp${tp}_pp${pp} NP ${np} TARGET test_group
                    ARGS stories260K.gguf ${tp} ${pp} --gen 256 --golden stories260K.greedy.json
                    TIMEOUT 180)
  endforeach()
endif()

if(CARAVAN_HAVE_MPI)
  # Acceptance 2 (mkmodel Q4_K/Q8_0, 4 concurrent sequences) and 5 (kill a rank).
  cv_add_script_test(NAME group_mkmodel COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/group_mkmodel.sh
                     TIMEOUT 900 LABELS mpi)
  cv_add_script_test(NAME group_kill_rank COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/kill_rank.sh
                     TIMEOUT 120 LABELS mpi)
  # Acceptance 6: the 70B layout prints; 2 x 8 GB is refused with the reason.
  add_test(NAME plan_70b COMMAND caravan plan --shape llama3-70b --type Q4_K --tp 2 --pp 3
                                 --mem 24G,24G,24G,24G,12G,12G)
  add_test(NAME plan_70b_refused COMMAND caravan plan --shape llama3-70b --type Q4_K --pp 2
                                         --mem 8G,8G)
  set_tests_properties(plan_70b_refused PROPERTIES WILL_FAIL TRUE)
endif()

if(CARAVAN_HAVE_MPI)
  # Issue item: mpirun -np N caravan run --tp T --pp P == one process (scheduler-driven).
  cv_add_script_test(NAME group_run_cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/run_group.sh
                     TIMEOUT 300 LABELS mpi)
  # Sampling split between the last stage and the leader (group.c): same tokens.
  cv_add_script_test(NAME group_sample_split COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/sample_split.sh
                     TIMEOUT 300 LABELS mpi)
endif()

if(CARAVAN_HAVE_MPI)
  # Acceptance 3: each rank's resident memory within 10% of its planned bytes
  # (TP 1/2/4, PP 2/4 on a 1.1 GiB mkmodel model made in /tmp and deleted).
  # Measures memory, not time. Label "memory": ctest -L memory.
  add_executable(test_shard_rss test_shard_rss.c)
  target_link_libraries(test_shard_rss PRIVATE cv_worker cv_sched cv_worker cv_kernels cv_core
                                               MPI::MPI_C)
  target_include_directories(test_shard_rss PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
  cv_add_script_test(NAME group_shard_rss COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/shard_rss.sh
                     TIMEOUT 180 LABELS mpi memory)
  set_tests_properties(group_shard_rss PROPERTIES SKIP_RETURN_CODE 77)
endif()
