// cudaemu: a CPU stand-in for the CUDA runtime, used only by the emulator build (-DRETORT_CUDA=EMU).
//
// engine/cuda/*.cu is compiled by g++ as C++ against these headers (after tools/cudaemu/rewrite_launches.py
// turns each `kernel<<<grid, block, smem, stream>>>(args)` into `::cudaemu::launch([&] { kernel(args); },
// grid, block, smem, stream)`), so the CUDA backend's host code and our own kernels run on the CPU and
// the CPU-vs-CUDA parity suite exercises them on machines without a GPU. cuBLAS and cuDNN are replaced by
// loops and OpenBLAS in blas_dnn.cpp.
//
// What is emulated (runtime.cpp says how):
//  - every CUDA thread of a block is a fiber; __syncthreads and warp shuffles are barriers of the block or
//    the warp. A barrier that not every live thread reaches, or a shuffle whose mask names lanes that do
//    not exist or have exited, stops the process with a message (undefined behaviour on a GPU);
//  - launch configurations are checked as the driver does (cudaErrorInvalidConfiguration);
//  - device memory is a separate arena that host code cannot touch: outside kernels, copies and library
//    calls it is mapped PROT_NONE, and a host access is reported with the address and allocation;
//  - fresh allocations are filled with 0xFF bytes (NaN in F32/F64), so a kernel that reads what nobody
//    wrote shows up in a parity test;
//  - RETORT_CUDAEMU_ORDER=reverse runs the threads between two barriers in reverse order, so a missing
//    barrier changes the results;
//  - data races between the threads of a launch, in global and shared memory, stop the process with
//    both threads and the address (racecheck.cpp; kernels compiled with -fsanitize=thread's calls).
// Not emulated: timing, concurrency between streams (everything runs synchronously, in issue order),
// the warp-synchronous behaviour of real hardware, float rounding of the GPU's math library.
#pragma once

#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

// ---- qualifiers --------------------------------------------------------------------------------------
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
// A block's threads are fibers of one OS thread, so a function-local static per OS thread is what they
// share; blocks running on other OS threads have their own.
#define __shared__ static thread_local

// ---- types -------------------------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;

#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
};

#define CUDART_VERSION 13000

// ---- runtime API -------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);

cudaError_t cudaMalloc(void** ptr, size_t size);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned flags);
cudaError_t cudaMallocHost(void** ptr, size_t size);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t count);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);

// ---- the emulator's own interface --------------------------------------------------------------------
namespace cudaemu {

// Runs `body` as every thread of a grid (what a rewritten `<<<>>>` launch calls). A bad configuration
// sets the error cudaGetLastError returns, as the driver does, and runs nothing.
void launch(const std::function<void()>& body, dim3 grid, dim3 block, size_t shared_bytes = 0,
            cudaStream_t stream = nullptr);

// Device memory is host-accessible while one of these is alive (kernels, copies and the cuBLAS/cuDNN
// stand-ins hold one); otherwise it is mapped PROT_NONE. Nests.
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

// True when [p, p + bytes) lies inside one live device allocation.
bool is_device_range(const void* p, size_t bytes);

// Per-thread builtins, set by the scheduler before it resumes a thread.
struct ThreadState {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern constinit thread_local ThreadState tls;  // constinit: no TLS wrapper call per access

void syncthreads();
// Warp shuffle: every lane in `mask` passes its value's bits and the lane it reads; returns that lane's bits.
uint64_t shuffle(unsigned mask, uint64_t bits, int src_lane);

}  // namespace cudaemu

// ---- device builtins ---------------------------------------------------------------------------------
#define threadIdx (::cudaemu::tls.thread)
#define blockIdx (::cudaemu::tls.block)
#define blockDim (::cudaemu::tls.block_dim)
#define gridDim (::cudaemu::tls.grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cudaemu::syncthreads(); }

namespace cudaemu::detail {
template <class T>
T shfl(unsigned mask, T v, int src_lane) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "cudaemu: shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = ::cudaemu::shuffle(mask, bits, src_lane);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
inline int lane_id() {
  return static_cast<int>((threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31u);
}
}  // namespace cudaemu::detail

template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cudaemu::detail::lane_id(), base = lane & ~(width - 1);
  const int src = lane - base + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return ::cudaemu::detail::shfl(mask, v, src);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cudaemu::detail::lane_id(), base = lane & ~(width - 1);
  const int src = lane - base >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return ::cudaemu::detail::shfl(mask, v, src);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::cudaemu::detail::lane_id(), base = lane & ~(width - 1);
  int src = lane ^ lane_mask;
  if (src < base || src >= base + width) src = lane;
  return ::cudaemu::detail::shfl(mask, v, src);
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = ::cudaemu::detail::lane_id(), base = lane & ~(width - 1);
  return ::cudaemu::detail::shfl(mask, v, base + (src_lane % width));
}

namespace cudaemu::racecheck {
void atomic_access(const void* p, size_t bytes);  // tells the race checker (racecheck.cpp)
}

// Threads of a block never run at the same time (a fiber switches only at a barrier), so a
// read-modify-write is atomic as it stands; the race checker is told it is atomic, and does not see the
// plain read and write themselves.
template <class T>
__attribute__((no_sanitize("thread"))) T atomicAdd(T* address, std::type_identity_t<T> v) {
  ::cudaemu::racecheck::atomic_access(address, sizeof(T));
  const T old = *address;
  *address = old + v;
  return old;
}

// Correctly rounded arithmetic that must not be contracted into an FMA (the emulator build compiles
// with -ffp-contract=off, so a plain operation is exactly that).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }

// CUDA's global max/min overloads for device code; for floating point they are fmax/fmin (a NaN
// operand yields the other one).
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
template <class A, class B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
