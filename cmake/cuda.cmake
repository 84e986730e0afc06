# RETORT_CUDA=AUTO|ON|OFF|EMU. AUTO compiles the CUDA backend wherever nvcc is found (our machines have the
# CUDA 13 toolkit but no GPU: the code is compiled and linked everywhere, and runs where a GPU is).
# Architecture: sm_90 (H100/H200) plus PTX, so newer GPUs JIT-compile it.
# EMU builds the CUDA backend as C++ against tools/cudaemu, a CPU stand-in for the CUDA runtime, cuBLAS
# and cuDNN, so its host code and kernels run (slowly) where there is no GPU: the parity tests then
# compare our kernels with the CPU backend for real (docs/cuda.md, "Without a GPU").
set(RETORT_HAVE_CUDA OFF)
set(RETORT_CUDA_EMU OFF)
if(RETORT_CUDA STREQUAL "EMU")
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  set(RETORT_CUDA_EMU ON)
elseif(NOT RETORT_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90-real 90-virtual)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # Device code is C++20 like the rest (it includes our headers). CMake 3.25 predates nvcc 13 and does
    # not know its C++20 flag, so it is named here.
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(RETORT_HAVE_CUDA ON)
  elseif(RETORT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RETORT_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    message(STATUS "nvcc not found: building without the CUDA backend")
  endif()
endif()
