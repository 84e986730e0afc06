# Compiles through ccache where it is installed (scripts/install-deps.sh installs it) and can write its
# cache. The test command builds the sources twice — build/ and the emulator's build-emu/ — and most
# translation units preprocess to the same text in both (only the engine's backend table and the CUDA
# sources read the CUDA defines), so the second build takes them from the cache (ccache's preprocessor
# mode: -D and -I flags that change nothing in the preprocessed text do not change the hash).
# A launcher given on the command line (-DCMAKE_CXX_COMPILER_LAUNCHER=...) is left alone.
option(RETORT_CCACHE "Compile through ccache when it is installed" ON)
if(RETORT_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  find_program(RETORT_CCACHE_PROGRAM ccache)
  if(RETORT_CCACHE_PROGRAM)
    # One real compilation through it: a cache directory it cannot write fails every compile, so
    # rather build without it then.
    set(probe_dir ${CMAKE_BINARY_DIR}/CMakeFiles/ccache-probe)
    file(WRITE ${probe_dir}/probe.cpp "int retort_ccache_probe() { return 0; }\n")
    execute_process(COMMAND ${RETORT_CCACHE_PROGRAM} ${CMAKE_CXX_COMPILER} -c probe.cpp -o probe.o
                    WORKING_DIRECTORY ${probe_dir} RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_VARIABLE probe_err)
    if(probe_rc EQUAL 0)
      set(CMAKE_CXX_COMPILER_LAUNCHER ${RETORT_CCACHE_PROGRAM})
      if(NOT CMAKE_CUDA_COMPILER_LAUNCHER)
        set(CMAKE_CUDA_COMPILER_LAUNCHER ${RETORT_CCACHE_PROGRAM})
      endif()
      message(STATUS "Compiling through ${RETORT_CCACHE_PROGRAM}")
    else()
      string(STRIP "${probe_err}" probe_err)
      message(STATUS "ccache is installed but cannot compile (${probe_err}): building without it")
    endif()
  endif()
endif()
