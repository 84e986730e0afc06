# Finds OpenBLAS (Debian's libopenblas-openmp-dev: OpenBLAS threads are OpenMP threads, so our own
# OpenMP loops and BLAS calls share one pool instead of oversubscribing the cores).
find_path(RETORT_BLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-pthread
        /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include
  NO_DEFAULT_PATH)
find_library(RETORT_BLAS_LIBRARY NAMES openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/x86_64-linux-gnu)
if(NOT RETORT_BLAS_INCLUDE_DIR OR NOT RETORT_BLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found: run scripts/install-deps.sh (needs libopenblas-openmp-dev)")
endif()
add_library(retort_blas INTERFACE)
target_include_directories(retort_blas SYSTEM INTERFACE ${RETORT_BLAS_INCLUDE_DIR})
target_link_libraries(retort_blas INTERFACE ${RETORT_BLAS_LIBRARY})

# oneDNN (Debian's libdnnl-dev, built on GNU OpenMP like OpenBLAS above): F32 CPU convolutions.
find_path(RETORT_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp PATHS /usr/include)
find_library(RETORT_DNNL_LIBRARY NAMES dnnl PATHS /usr/lib/x86_64-linux-gnu)
if(NOT RETORT_DNNL_INCLUDE_DIR OR NOT RETORT_DNNL_LIBRARY)
  message(FATAL_ERROR "oneDNN not found: run scripts/install-deps.sh (needs libdnnl-dev)")
endif()
target_include_directories(retort_blas SYSTEM INTERFACE ${RETORT_DNNL_INCLUDE_DIR})
target_link_libraries(retort_blas INTERFACE ${RETORT_DNNL_LIBRARY})
