// cudaemu: a CPU stand-in for cuSOLVER's dense API, used only by the CUDA emulator build (see
// cuda_runtime.h here).
//
// Declares only what engine/cuda uses (the handle and its stream, the 64-bit API's parameter object,
// and the batched symmetric eigendecomposition cusolverDnXsyevBatched with its workspace query), with
// the names, signatures and enum values of CUDA 13's cusolverDn.h, cusolver_common.h and
// library_types.h. tools/cudaemu/solver.cpp implements them with LAPACK.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#define CUSOLVER_VER_MAJOR 12
#define CUSOLVER_VER_MINOR 0
#define CUSOLVER_VER_PATCH 4

extern "C" {

typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_64F = 1 } cudaDataType;

typedef enum {
  CUSOLVER_STATUS_SUCCESS = 0,
  CUSOLVER_STATUS_NOT_INITIALIZED = 1,
  CUSOLVER_STATUS_ALLOC_FAILED = 2,
  CUSOLVER_STATUS_INVALID_VALUE = 3,
  CUSOLVER_STATUS_ARCH_MISMATCH = 4,
  CUSOLVER_STATUS_MAPPING_ERROR = 5,
  CUSOLVER_STATUS_EXECUTION_FAILED = 6,
  CUSOLVER_STATUS_INTERNAL_ERROR = 7,
  CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED = 8,
  CUSOLVER_STATUS_NOT_SUPPORTED = 9
} cusolverStatus_t;

typedef enum { CUSOLVER_EIG_MODE_NOVECTOR = 0, CUSOLVER_EIG_MODE_VECTOR = 1 } cusolverEigMode_t;

struct cusolverDnContext;
typedef struct cusolverDnContext* cusolverDnHandle_t;
struct cusolverDnParams;
typedef struct cusolverDnParams* cusolverDnParams_t;

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* handle);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t streamId);
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t* params);
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t params);

// Eigenvalues (ascending, W[k * n + j]) and, with CUSOLVER_EIG_MODE_VECTOR, eigenvectors (overwriting A,
// column-major, A[k * lda * n + j * lda + i]) of batchSize symmetric n x n matrices, each given by its
// `uplo` triangle; info[k] > 0 when matrix k did not converge. Device memory: A, W, the device
// workspace, info.
cusolverStatus_t cusolverDnXsyevBatched_bufferSize(cusolverDnHandle_t handle, cusolverDnParams_t params,
                                                   cusolverEigMode_t jobz, cublasFillMode_t uplo, int64_t n,
                                                   cudaDataType dataTypeA, const void* A, int64_t lda,
                                                   cudaDataType dataTypeW, const void* W, cudaDataType computeType,
                                                   size_t* workspaceInBytesOnDevice, size_t* workspaceInBytesOnHost,
                                                   int64_t batchSize);
cusolverStatus_t cusolverDnXsyevBatched(cusolverDnHandle_t handle, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                        cublasFillMode_t uplo, int64_t n, cudaDataType dataTypeA, void* A, int64_t lda,
                                        cudaDataType dataTypeW, void* W, cudaDataType computeType, void* bufferOnDevice,
                                        size_t workspaceInBytesOnDevice, void* bufferOnHost,
                                        size_t workspaceInBytesOnHost, int* info, int64_t batchSize);

}  // extern "C"
