# cuda: tests of the CUDA backend (kernels/cuda) and its NCCL comm.
# test_cuda_emul runs everywhere nvcc is (CPU only: the device layout and the
# decoders against the scalar oracle). The GPU programs are built so CI
# compiles them, but are run only by tests/gpu/run.sh on a GPU host.
if(CARAVAN_HAVE_CUDA)
  cv_add_test(NAME test_cuda_emul SOURCES gpu/test_cuda_emul.cu LABELS unit cuda)
  set_target_properties(test_cuda_emul PROPERTIES CUDA_ARCHITECTURES "${CARAVAN_CUDA_ARCHS}")
  target_compile_options(test_cuda_emul PRIVATE
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall;-Xcompiler=-Wno-unused-parameter>")

  foreach(prog test_cuda_ops test_cuda_shard cuda_bw)
    add_executable(${prog} gpu/${prog}.c)
    target_link_libraries(${prog} PRIVATE cv_worker cv_kernels cv_core Threads::Threads m)
    target_include_directories(${prog} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
  endforeach()
endif()

# comm_gpu_create under mpirun: CPU ranks must get the host-staged MPI comm
# (runs here); the "gpu" mode (NCCL when each rank has its own GPU) needs a
# multi-GPU host with MPI and is not registered.
if(CARAVAN_HAVE_CUDA AND CARAVAN_HAVE_MPI AND NCCL_LIB)
  add_executable(test_comm_nccl gpu/test_comm_nccl.c)
  target_link_libraries(test_comm_nccl PRIVATE cv_worker cv_kernels cv_core MPI::MPI_C)
  target_include_directories(test_comm_nccl PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME test_comm_gpu_cpu_np2
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --mca btl self,vader,tcp
                   -np 2 $<TARGET_FILE:test_comm_nccl> cpu)
  set_tests_properties(test_comm_gpu_cpu_np2 PROPERTIES TIMEOUT 60 LABELS "mpi;cuda" PROCESSORS 2
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endif()

# The per-rank --device spec of a worker group (worker/group_gpu.c, MPI
# builds): pure string logic, runs everywhere MPI is, GPU or not.
if(CARAVAN_HAVE_MPI)
  cv_add_test(NAME test_group_gpu SOURCES gpu/test_group_gpu.c LABELS unit)
endif()
