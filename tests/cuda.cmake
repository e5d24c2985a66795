# cuda: tests of the CUDA backend (kernels/cuda) and its NCCL comm.
# test_cuda_emul runs everywhere nvcc is (CPU only: the device layout and the
# decoders against the scalar oracle). The GPU programs are built so CI
# compiles them, but are run only by tests/gpu/run.sh on a GPU host.
if(CARAVAN_HAVE_CUDA)
  # the top-level warning flags are gcc's: keep them off nvcc for the targets below
  get_directory_property(cv_cuda_dir_opts COMPILE_OPTIONS)
  set(cv_cuda_c_only "")
  foreach(o ${cv_cuda_dir_opts})
    if(o MATCHES "^\\$<")
      list(APPEND cv_cuda_c_only "${o}")
    else()
      list(APPEND cv_cuda_c_only "$<$<COMPILE_LANGUAGE:C>:${o}>")
    endif()
  endforeach()
  set_directory_properties(PROPERTIES COMPILE_OPTIONS "${cv_cuda_c_only}")

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
