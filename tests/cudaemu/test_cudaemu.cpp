// The CUDA emulator's own tests (tools/cudaemu; built with -DRETORT_CUDA=EMU).
//
// CI runs the CUDA parity suite (tests/engine/test_cuda_parity.cpp) on CPU-only machines through the
// emulator, so a regression in it would either hide a bug of our kernels (a missed race, a missed
// overrun) or fail the parity tests for reasons that are not ours. These tests pin what
// tools/cudaemu/include/cuda_runtime.h promises, with real values:
//  - the builtins (threadIdx, blockIdx, blockDim, gridDim) of every thread of 2-D and 3-D grids of 3-D
//    blocks, and the warps of a 2-D block;
//  - __syncthreads as a real barrier of the block, in both thread orders (RETORT_CUDAEMU_ORDER), and
//    a missing barrier made visible by comparing the orders;
//  - warp shuffles (__shfl_down/up/xor/_sync) moving 4- and 8-byte values between the right lanes, and
//    the warp-sum and block-sum patterns our reductions use;
//  - the undefined behaviours the emulator stops on, each with its message (death tests): a divergent
//    __syncthreads, a shuffle naming an exited lane, host code touching device memory, a kernel
//    writing past its allocation, use after free, a barrier in a launch run without fibers;
//  - launch configurations refused as the driver refuses them (cudaErrorInvalidConfiguration);
//  - device memory: NaN-filled fresh allocations, checked copy ranges, the emulated capacity,
//    cudaMemGetInfo, cudaFree of what is not an allocation;
//  - the fiber-less fast path taken by a launch site whose first launch reached no barrier;
//  - atomicAdd across threads and blocks;
//  - the race checker (tools/cudaemu/racecheck.cpp): each kind of race in shared and global memory
//    stops the process naming both threads, as does a read of shared memory the block has not written;
//    barriers, atomics and one thread's own accesses do not; the reductions' patterns run clean;
//    `report` and `0` modes;
//  - one sanity check each of the cuBLAS and cuDNN stand-ins (tools/cudaemu/blas_dnn.cpp).
//
// Kernels are plain functions launched with cudaemu::launch([&] { kernel(args); }, grid, block), which
// is what the emulator build rewrites `kernel<<<grid, block>>>(args)` into. Each lambda has its own
// type and is therefore its own launch site (the runtime remembers, per site, whether a barrier was
// reached); a helper function that launches is one site however often it is called.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// ---- helpers ------------------------------------------------------------------------------------------

// Sets (or, with nullptr, unsets) an environment variable for the scope; the runtime reads
// RETORT_CUDAEMU_ORDER and RETORT_CUDAEMU_FIBERS at every launch.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Thread orders between barriers: forward (the default, variable unset) and reverse.
const char* const kOrders[] = {"forward", "reverse"};
ScopedEnv order_env(const char* order) {
  return ScopedEnv("RETORT_CUDAEMU_ORDER", std::strcmp(order, "reverse") == 0 ? "reverse" : nullptr);
}

// A cudaMalloc'd array of n Ts (freed at scope end) with host copies in and out.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    p_ = static_cast<T*>(p);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    ASSERT_EQ(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    EXPECT_EQ(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Every test starts with no pending error and must consume the errors it provokes. The emulator's
// switches start at their defaults (forward order, fibers only where needed) whatever the environment
// of the run says; the tests that need another setting make it themselves.
class CudaEmu : public ::testing::Test {
 protected:
  void SetUp() override {
    order_.emplace("RETORT_CUDAEMU_ORDER", nullptr);
    fibers_.emplace("RETORT_CUDAEMU_FIBERS", nullptr);
    racecheck_.emplace("RETORT_CUDAEMU_RACECHECK", nullptr);
    (void)cudaGetLastError();
  }
  void TearDown() override {
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the test left an error pending";
    racecheck_.reset();
    fibers_.reset();
    order_.reset();
  }

 private:
  std::optional<ScopedEnv> order_, fibers_, racecheck_;
};

// Death tests re-execute the binary up to the statement (no fork of a process that holds fibers,
// signal handlers and an mmap'd arena).
class CudaEmuDeathTest : public CudaEmu {
 protected:
  void SetUp() override {
    CudaEmu::SetUp();
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

// ---- kernels ------------------------------------------------------------------------------------------

struct Ids {
  unsigned tx, ty, tz, bx, by, bz, bdx, bdy, bdz, gdx, gdy, gdz;
};

// Every thread writes its builtins at its global linear id.
__global__ void record_ids(Ids* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[block * (blockDim.x * blockDim.y * blockDim.z) + thread] =
      Ids{threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
          blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
}
// One launch site for every call (the first launch runs on fibers, the later ones without).
void launch_record_ids(Ids* out, dim3 grid, dim3 block) {
  cudaemu::launch([&] { record_ids(out); }, grid, block);
}

constexpr unsigned kReverseBlock = 256;

// Each block reverses its slice of `in` through shared memory.
__global__ void reverse_block(const int* in, int* out) {
  __shared__ int buf[kReverseBlock];
  const unsigned t = threadIdx.x, base = blockIdx.x * blockDim.x;
  buf[t] = in[base + t];
  __syncthreads();
  out[base + t] = buf[blockDim.x - 1 - t];
}
void launch_reverse_block(const int* in, int* out, unsigned blocks) {
  cudaemu::launch([&] { reverse_block(in, out); }, dim3(blocks), dim3(kReverseBlock));
}

// out[t] = the value thread t - 1 stored (out[0] = thread 0's own), but with the barrier between the
// store and the load missing: a race. The first phase (with its barrier) poisons the buffer with -1.
constexpr unsigned kRaceBlock = 64;
__global__ void left_neighbour_without_barrier(int* out) {
  __shared__ int buf[kRaceBlock];
  const unsigned t = threadIdx.x;
  buf[t] = -1;
  __syncthreads();
  buf[t] = static_cast<int>(t);
  // __syncthreads() belongs here.
  out[t] = buf[t == 0 ? 0 : t - 1];
}
__global__ void left_neighbour_with_barrier(int* out) {
  __shared__ int buf[kRaceBlock];
  const unsigned t = threadIdx.x;
  buf[t] = -1;
  __syncthreads();
  buf[t] = static_cast<int>(t);
  __syncthreads();
  out[t] = buf[t == 0 ? 0 : t - 1];
}

constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ T warp_sum_down(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(kFullMask, v, offset);
  return v;  // the warp's sum in lane 0
}
template <class T>
__device__ T warp_sum_xor(T v) {
  for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(kFullMask, v, mask);
  return v;  // the warp's sum in every lane
}

// One warp: single shuffle steps per lane, then the two warp sums.
template <class T>
__global__ void warp_shuffles(const T* in, T* down3, T* up2, T* xor5, T* from7, T* sum_down, T* sum_xor) {
  const unsigned lane = threadIdx.x;
  const T v = in[lane];
  down3[lane] = __shfl_down_sync(kFullMask, v, 3);
  up2[lane] = __shfl_up_sync(kFullMask, v, 2);
  xor5[lane] = __shfl_xor_sync(kFullMask, v, 5);
  from7[lane] = __shfl_sync(kFullMask, v, 7);
  const T d = warp_sum_down(v);
  if (lane == 0) sum_down[0] = d;
  sum_xor[lane] = warp_sum_xor(v);
}

// A 2-D block's warps are its linear thread ids (x fastest) in groups of 32: each thread stores the
// sum of its warp and the value its xor-1 partner holds.
__global__ void warp_sums_2d(const int* in, int* sums, int* partner) {
  const unsigned t = threadIdx.x + blockDim.x * threadIdx.y;
  int v = in[t];
  partner[t] = __shfl_xor_sync(kFullMask, v, 1);
  sums[t] = warp_sum_xor(v);
}

// The block_sum pattern of our reductions: each warp sums its values, lane 0 stores the warp's sum in
// shared memory, and after the barrier warp 0 sums those (the other warps have exited by then).
template <class T>
__global__ void block_sum(const T* in, T* out) {
  __shared__ T partial[32];
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  T v = warp_sum_down(in[blockIdx.x * blockDim.x + t]);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp != 0) return;
  v = lane < blockDim.x / 32 ? partial[lane] : T(0);
  v = warp_sum_down(v);
  if (lane == 0) out[blockIdx.x] = v;
}

__global__ void write_at(float* p, long i, float v) { p[i] = v; }

__global__ void scale(const float* in, float* out, int n, float s) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < static_cast<unsigned>(n)) out[i] = in[i] * s;
}
void launch_scale(const float* in, float* out, int n, float s) {
  cudaemu::launch([&] { scale(in, out, n, s); }, dim3((n + 127) / 128), dim3(128));
}

// Reaches __syncthreads only when asked to (the first launch from its site does not).
__global__ void maybe_barrier(int* out, bool barrier) {
  if (barrier) __syncthreads();
  out[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
}
void launch_maybe_barrier(int* out, bool barrier) {
  cudaemu::launch([&] { maybe_barrier(out, barrier); }, dim3(1), dim3(64));
}

// Each thread counts itself, adds its global id and records the counter's old value; the same again
// after a barrier, so the fibers of a block interleave between the two.
// (Only the overloads CUDA has: int, unsigned, unsigned long long, float, double; the value converts to
// the pointee's type, as in `atomicAdd(unsigned_ptr, 1)`.)
__global__ void atomics(int* counter, unsigned long long* id_sum, float* float_sum, unsigned* hits, int* olds) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  olds[i] = atomicAdd(counter, 1);
  atomicAdd(id_sum, static_cast<unsigned long long>(i));
  __syncthreads();
  atomicAdd(float_sum, 0.5f);
  atomicAdd(hits, 1);
}

// ---- values -----------------------------------------------------------------------------------------

// Values whose sums are exact in any order: multiples of 1/4 (float), of 1/8 around 1e9 (double), and
// int64 values well beyond 32 bits, negative ones included (so all 8 bytes must cross a shuffle).
template <class T>
T value_at(int i) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>);
  if constexpr (std::is_same_v<T, float>)
    return static_cast<float>(i) * 0.5f + 0.25f;
  else if constexpr (std::is_same_v<T, double>)
    return 1e9 + static_cast<double>(i) * 0.125;
  else
    return (static_cast<int64_t>(i) - 100) * (int64_t{1} << 33) + i;
}
template <class T>
std::vector<T> values(int n) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = value_at<T>(i);
  return v;
}

// Where the death tests' reads go, so that they are not optimized away.
volatile float g_sink = 0;

bool all_bytes_ff(const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i)
    if (b[i] != 0xFF) return false;
  return true;
}

// ======================================================================================================
// 1. builtins
// ======================================================================================================

TEST_F(CudaEmu, BuiltinsOfEveryThreadOfA2DGridOf3DBlocks) {
  const dim3 block(4, 3, 2);
  // A 2-D grid, and a 3-D one (blockIdx.z). The first launch from the site runs on fibers, the later
  // ones without (the site reached no barrier): both must set the builtins, in both orders.
  for (const dim3 grid : {dim3(3, 2), dim3(3, 2, 2)})
    for (int round = 0; round < 2; ++round)
      for (const char* order : kOrders) {
        SCOPED_TRACE(std::string(order) + " order, round " + std::to_string(round) + ", grid.z " +
                     std::to_string(grid.z));
        const ScopedEnv env = order_env(order);
        const size_t n = size_t{grid.x} * grid.y * grid.z * block.x * block.y * block.z;
        DeviceArray<Ids> out(n);  // 0xFF bytes: a slot nobody wrote shows
        launch_record_ids(out.get(), grid, block);
        ASSERT_EQ(cudaGetLastError(), cudaSuccess);
        const std::vector<Ids> ids = out.download();
        size_t i = 0;
        for (unsigned bz = 0; bz < grid.z; ++bz)
          for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx)
              for (unsigned tz = 0; tz < block.z; ++tz)
                for (unsigned ty = 0; ty < block.y; ++ty)
                  for (unsigned tx = 0; tx < block.x; ++tx, ++i) {
                    const Ids& g = ids[i];
                    SCOPED_TRACE("slot " + std::to_string(i));
                    EXPECT_EQ(g.tx, tx);
                    EXPECT_EQ(g.ty, ty);
                    EXPECT_EQ(g.tz, tz);
                    EXPECT_EQ(g.bx, bx);
                    EXPECT_EQ(g.by, by);
                    EXPECT_EQ(g.bz, bz);
                    EXPECT_EQ(g.bdx, block.x);
                    EXPECT_EQ(g.bdy, block.y);
                    EXPECT_EQ(g.bdz, block.z);
                    EXPECT_EQ(g.gdx, grid.x);
                    EXPECT_EQ(g.gdy, grid.y);
                    EXPECT_EQ(g.gdz, grid.z);
                  }
        ASSERT_EQ(i, n);
      }
}

// ======================================================================================================
// 2, 3. __syncthreads and the thread order
// ======================================================================================================

TEST_F(CudaEmu, SyncthreadsMakesABlockReverseThroughSharedMemoryRight) {
  const unsigned blocks = 4, n = blocks * kReverseBlock;
  std::vector<int> in(n);
  std::iota(in.begin(), in.end(), 1000);
  for (const char* order : kOrders) {
    SCOPED_TRACE(std::string(order) + " order");
    const ScopedEnv env = order_env(order);
    DeviceArray<int> d_in(in), d_out(n);
    launch_reverse_block(d_in.get(), d_out.get(), blocks);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<int> out = d_out.download();
    for (unsigned b = 0; b < blocks; ++b)
      for (unsigned t = 0; t < kReverseBlock; ++t)
        ASSERT_EQ(out[b * kReverseBlock + t], in[b * kReverseBlock + kReverseBlock - 1 - t])
            << "block " << b << " thread " << t;
  }
}

// Why RETORT_CUDAEMU_ORDER exists. Between two barriers the emulator runs a block's threads one after
// another, each to its next barrier. In the default (forward) order a thread that reads the slot of a
// LOWER-numbered thread finds it already written, so a missing barrier gives the right answer by luck;
// only the reverse order, where that thread has not run yet, shows the race. (A read of a higher
// thread's slot is caught by the forward order instead.) Running the parity tests in both orders
// catches either.
TEST_F(CudaEmu, MissingSyncthreadsShowsAsDifferentResultsInTheTwoOrders) {
  std::vector<int> right(kRaceBlock);  // [0, 0, 1, 2, ..., 62]
  for (unsigned t = 0; t < kRaceBlock; ++t) right[t] = t == 0 ? 0 : static_cast<int>(t) - 1;
  std::vector<int> reverse_result(kRaceBlock, -1);  // [0, -1, -1, ...]: nobody had stored yet
  reverse_result[0] = 0;

  std::vector<std::vector<int>> results;  // without the barrier: forward, reverse
  const ScopedEnv unchecked("RETORT_CUDAEMU_RACECHECK", "0");  // (the race checker stops at this race)
  for (const char* order : kOrders) {
    SCOPED_TRACE(std::string(order) + " order");
    const ScopedEnv env = order_env(order);
    DeviceArray<int> with(kRaceBlock), without(kRaceBlock);
    cudaemu::launch([&] { left_neighbour_with_barrier(with.get()); }, dim3(1), dim3(kRaceBlock));
    cudaemu::launch([&] { left_neighbour_without_barrier(without.get()); }, dim3(1), dim3(kRaceBlock));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(with.download(), right);
    results.push_back(without.download());
  }
  EXPECT_EQ(results[0], right) << "forward: the missing barrier is hidden";
  EXPECT_EQ(results[1], reverse_result) << "reverse: the missing barrier shows";
  EXPECT_NE(results[0], results[1]);
}

// ======================================================================================================
// 4. warp shuffles
// ======================================================================================================

template <class T>
class CudaEmuShuffle : public CudaEmu {};
using ShuffleTypes = ::testing::Types<float, double, int64_t>;
TYPED_TEST_SUITE(CudaEmuShuffle, ShuffleTypes);

TYPED_TEST(CudaEmuShuffle, LanesReadTheRightLanesAndAWarpSums) {
  using T = TypeParam;
  const std::vector<T> in = values<T>(32);
  const T total = std::accumulate(in.begin(), in.end(), T(0));
  for (const char* order : kOrders) {
    SCOPED_TRACE(std::string(order) + " order");
    const ScopedEnv env = order_env(order);
    DeviceArray<T> d_in(in), down3(32), up2(32), xor5(32), from7(32), sum_down(1), sum_xor(32);
    cudaemu::launch([&] {
      warp_shuffles(d_in.get(), down3.get(), up2.get(), xor5.get(), from7.get(), sum_down.get(), sum_xor.get());
    }, dim3(1), dim3(32));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<T> d3 = down3.download(), u2 = up2.download(), x5 = xor5.download(), f7 = from7.download(),
                         sx = sum_xor.download();
    for (int lane = 0; lane < 32; ++lane) {
      SCOPED_TRACE("lane " + std::to_string(lane));
      // A source lane outside the warp leaves the lane with its own value.
      EXPECT_EQ(d3[lane], in[lane + 3 < 32 ? lane + 3 : lane]);
      EXPECT_EQ(u2[lane], in[lane >= 2 ? lane - 2 : lane]);
      EXPECT_EQ(x5[lane], in[lane ^ 5]);
      EXPECT_EQ(f7[lane], in[7]);
      EXPECT_EQ(sx[lane], total);
    }
    EXPECT_EQ(sum_down.download()[0], total);
  }
}

TYPED_TEST(CudaEmuShuffle, BlockSumOf256ThreadsThroughWarpSumsAndSharedMemory) {
  using T = TypeParam;
  const int blocks = 3, threads = 256;
  const std::vector<T> in = values<T>(blocks * threads);
  for (const char* order : kOrders) {
    SCOPED_TRACE(std::string(order) + " order");
    const ScopedEnv env = order_env(order);
    DeviceArray<T> d_in(in), d_out(blocks);
    cudaemu::launch([&] { block_sum(d_in.get(), d_out.get()); }, dim3(blocks), dim3(threads));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<T> out = d_out.download();
    for (int b = 0; b < blocks; ++b)
      EXPECT_EQ(out[b], std::accumulate(in.begin() + b * threads, in.begin() + (b + 1) * threads, T(0)))
          << "block " << b;
  }
}

TEST_F(CudaEmu, WarpsOfA2DBlockAreConsecutiveLinearThreadIds) {
  const unsigned n = 8 * 12;  // block 8 x 12: three warps of four rows each
  std::vector<int> in(n);
  for (unsigned t = 0; t < n; ++t) in[t] = static_cast<int>(t * t);
  for (const char* order : kOrders) {
    SCOPED_TRACE(std::string(order) + " order");
    const ScopedEnv env = order_env(order);
    DeviceArray<int> d_in(in), sums(n), partner(n);
    cudaemu::launch([&] { warp_sums_2d(d_in.get(), sums.get(), partner.get()); }, dim3(1), dim3(8, 12));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<int> s = sums.download(), p = partner.download();
    for (unsigned t = 0; t < n; ++t) {
      const unsigned w = t / 32;
      EXPECT_EQ(s[t], std::accumulate(in.begin() + w * 32, in.begin() + w * 32 + 32, 0)) << "thread " << t;
      EXPECT_EQ(p[t], in[t ^ 1]) << "thread " << t;
    }
  }
}

// ======================================================================================================
// 5. undefined behaviour stops the process with a message
// ======================================================================================================

TEST_F(CudaEmuDeathTest, SyncthreadsReachedByOnlySomeThreads) {
  // Warp 1 returns early; warp 0 waits at a barrier the block never completes.
  const auto run = [] {
    cudaemu::launch([] {
      if (threadIdx.x >= 32) return;
      __syncthreads();
    }, dim3(1), dim3(64));
  };
  EXPECT_DEATH(run(), "cudaemu: __syncthreads reached by 32 of 64 threads; the others had exited");
}

TEST_F(CudaEmuDeathTest, ShuffleWhoseMaskNamesAnExitedLane) {
  const auto run = [] {
    cudaemu::launch([] {
      if (threadIdx.x >= 16) return;
      (void)__shfl_down_sync(kFullMask, static_cast<int>(threadIdx.x), 1);
    }, dim3(1), dim3(32));
  };
  EXPECT_DEATH(run(), "cudaemu: warp 0: lane 16 is in the shuffle's mask but has exited");
}

TEST_F(CudaEmuDeathTest, ShuffleWhoseMaskNamesALaneBeyondTheBlock) {
  const auto run = [] {
    cudaemu::launch([] { (void)__shfl_xor_sync(kFullMask, 1.0f, 1); }, dim3(1), dim3(16));
  };
  EXPECT_DEATH(run(), "names lane 16, which does not exist \\(block of 16 threads\\)");
}

TEST_F(CudaEmuDeathTest, HostCodeReadingOrWritingDeviceMemory) {
  DeviceArray<float> d(64);
  volatile float* p = d.get();
  EXPECT_DEATH(g_sink = p[3], "cudaemu: host code touched device memory");
  EXPECT_DEATH(p[3] = 1.0f, "cudaemu: host code touched device memory");
}

TEST_F(CudaEmuDeathTest, KernelAccessOnePastTheEndOfAnAllocation) {
  // 64 floats: 256 bytes, a multiple of 8, so the data ends exactly where its pages end and the next
  // byte is the guard page. (Sizes are rounded up to 8 bytes: past the end of 3 floats is not caught.
  // Nor is an underflow such as p[-1] once the kernel has touched the allocation: the data page has
  // slack below the data, so only an allocation's first touch in a launch checks that — unless
  // RETORT_CUDAEMU_ALIGN=start puts the data at the start of its pages, next test.)
  DeviceArray<float> d(64);
  float* p = d.get();
  cudaemu::launch([&] { write_at(p, 63, 1.0f); }, dim3(1), dim3(1));  // the last element is fine
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(d.download()[63], 1.0f);
  EXPECT_DEATH(cudaemu::launch([&] { write_at(p, 64, 1.0f); }, dim3(1), dim3(1)),
               "cudaemu: a kernel \\(or copy\\) went outside its allocation: address 0x[0-9a-f]+ is 256 bytes from "
               "the start of the allocation below it \\(0x[0-9a-f]+, 256 bytes\\)");
  EXPECT_DEATH(cudaemu::launch([&] { g_sink = p[64]; }, dim3(1), dim3(1)), "went outside its allocation");
  // The usual shape of the bug: 65 threads for 64 elements (a missing `if (i < n)`). Threads 0-63 have
  // opened the allocation by the time thread 64 writes, so only the guard page can catch it.
  EXPECT_DEATH(cudaemu::launch([&] { write_at(p, threadIdx.x, 2.0f); }, dim3(1), dim3(65)),
               "went outside its allocation: .* is 256 bytes from the start of the allocation below it");
}

// With RETORT_CUDAEMU_ALIGN=start an allocation's data starts right after the previous allocation's
// guard page, so an underflow faults even after the allocation has been opened in the launch. (The
// variable is read at the first cudaMalloc of the process: the death test's child starts afresh.)
TEST_F(CudaEmuDeathTest, UnderflowWithDataAtTheStartOfItsPages) {
  ::setenv("RETORT_CUDAEMU_ALIGN", "start", 1);
  EXPECT_DEATH(
      {
        DeviceArray<float> other(16);  // the arena's first allocation has no guard page below it
        DeviceArray<float> d(64);
        float* p = d.get();
        cudaemu::launch([&] { write_at(p, 0, 1.0f); write_at(p, -1, 1.0f); }, dim3(1), dim3(1));
      },
      "went outside its allocation: address 0x[0-9a-f]+ is 4 bytes before the allocation above it "
      "\\(0x[0-9a-f]+, 256 bytes\\)");
  ::unsetenv("RETORT_CUDAEMU_ALIGN");
}

TEST_F(CudaEmuDeathTest, UseAfterFree) {
  void* raw = nullptr;
  ASSERT_EQ(cudaMalloc(&raw, 64 * sizeof(float)), cudaSuccess);
  float* p = static_cast<float*>(raw);
  ASSERT_EQ(cudaFree(p), cudaSuccess);
  volatile float* vp = p;
  EXPECT_DEATH(g_sink = vp[0], "cudaemu: host code touched device memory");
  EXPECT_DEATH(cudaemu::launch([&] { write_at(p, 0, 1.0f); }, dim3(1), dim3(1)),
               "cudaemu: a kernel \\(or copy\\) went outside its allocation");
  // A copy is checked before it touches anything: an error, not a fault.
  float host = 0;
  EXPECT_EQ(cudaMemcpy(&host, p, sizeof host, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

// A site whose first launch reached no barrier runs without fibers from then on; a barrier there
// stops the process (RETORT_CUDAEMU_FIBERS=always is the way out, next test).
TEST_F(CudaEmuDeathTest, BarrierInALaunchSiteThatReachedNoneTheFirstTime) {
  DeviceArray<int> out(64);
  launch_maybe_barrier(out.get(), false);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_DEATH(launch_maybe_barrier(out.get(), true),
               "cudaemu: a thread reached a barrier in a launch run without fibers");
}

// ======================================================================================================
// 8. the fiber-less path of a launch site whose first launch reached no barrier
// ======================================================================================================

TEST_F(CudaEmu, SecondLaunchFromABarrierFreeSiteIsStillRight) {
  const int n = 1000;  // 8 blocks, the last one partly idle
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i) - 300.0f;
  for (int round = 0; round < 3; ++round) {  // round 0 runs on fibers, 1 and 2 without
    for (const char* order : kOrders) {
      SCOPED_TRACE(std::string(order) + " order, round " + std::to_string(round));
      const ScopedEnv env = order_env(order);
      const float s = 1.5f + static_cast<float>(round);
      DeviceArray<float> d_in(in), d_out(n + 8);  // the tail stays as allocated (NaN)
      launch_scale(d_in.get(), d_out.get(), n, s);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      const std::vector<float> out = d_out.download();
      for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], in[i] * s) << "element " << i;
      for (int i = n; i < n + 8; ++i) EXPECT_TRUE(std::isnan(out[i])) << "element " << i;
    }
  }
}

TEST_F(CudaEmu, FibersAlwaysLetsABarrierFreeSiteReachABarrierLater) {
  const ScopedEnv fibers("RETORT_CUDAEMU_FIBERS", "always");
  DeviceArray<int> out(64);
  std::vector<int> expected(64);
  std::iota(expected.begin(), expected.end(), 1);
  for (const bool barrier : {false, true}) {
    const auto run = [&] { cudaemu::launch([&] { maybe_barrier(out.get(), barrier); }, dim3(1), dim3(64)); };
    run();
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(out.download(), expected) << "barrier " << barrier;
  }
}

// ======================================================================================================
// 6. launch configurations
// ======================================================================================================

TEST_F(CudaEmu, InvalidLaunchConfigurationsAreRefusedAndRunNothing) {
  struct Config {
    const char* what;
    dim3 grid, block;
    size_t shared;
  };
  const Config bad[] = {
      {"block of 1025 threads", dim3(1), dim3(1025), 0},
      {"block of 32 x 32 x 2 threads", dim3(1), dim3(32, 32, 2), 0},
      {"block.z = 65", dim3(1), dim3(1, 1, 65), 0},
      {"block.x = 0", dim3(1), dim3(0), 0},
      {"grid.y = 65536", dim3(1, 65536), dim3(1), 0},
      {"grid.z = 65536", dim3(1, 1, 65536), dim3(1), 0},
      {"grid of 0 blocks", dim3(0), dim3(32), 0},
      {"49 KiB of dynamic shared memory", dim3(1), dim3(32), 49 * 1024},
  };
  for (const Config& c : bad) {
    SCOPED_TRACE(c.what);
    int ran = 0;
    cudaemu::launch([&] { ++ran; }, c.grid, c.block, c.shared);
    EXPECT_EQ(ran, 0);
    EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidConfiguration);  // peeking keeps it
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // and getting it clears it
  }
  // The limits themselves are allowed.
  const Config good[] = {
      {"block of 1024 threads", dim3(1), dim3(1024), 0},
      {"block.z = 64", dim3(1), dim3(1, 1, 64), 0},
      {"grid.y = 65535", dim3(1, 65535), dim3(1), 0},
      {"48 KiB of dynamic shared memory", dim3(1), dim3(1), 48 * 1024},
  };
  for (const Config& c : good) {
    SCOPED_TRACE(c.what);
    int ran = 0;
    cudaemu::launch([&] { ++ran; }, c.grid, c.block, c.shared);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(ran, static_cast<int>(c.grid.x * c.grid.y * c.grid.z * c.block.x * c.block.y * c.block.z));
  }
}

// ======================================================================================================
// 7. device memory
// ======================================================================================================

TEST_F(CudaEmu, FreshAllocationsReadBackAsAllOnesBytesThatIsNaN) {
  DeviceArray<float> f(100);
  const std::vector<float> hf = f.download();
  EXPECT_TRUE(all_bytes_ff(hf.data(), hf.size() * sizeof(float)));
  for (const float v : hf) EXPECT_TRUE(std::isnan(v));
  DeviceArray<double> d(7);  // 56 bytes: not a multiple of the page
  const std::vector<double> hd = d.download();
  EXPECT_TRUE(all_bytes_ff(hd.data(), hd.size() * sizeof(double)));
  for (const double v : hd) EXPECT_TRUE(std::isnan(v));
  DeviceArray<unsigned char> odd(13);  // not a multiple of 8 either
  EXPECT_TRUE(all_bytes_ff(odd.download().data(), 13));
}

TEST_F(CudaEmu, CopiesAndMemsetsOutsideTheAllocationAreRefused) {
  DeviceArray<float> d(64);
  std::vector<float> host(16, 2.0f);
  // Device range [60, 76) runs 12 floats past the end.
  EXPECT_EQ(cudaMemcpy(d.get() + 60, host.data(), 16 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d.get() + 60, 16 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(d.get() + 60, 0, 16 * sizeof(float)), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  // A host pointer where the direction says device, and the other way round.
  EXPECT_EQ(cudaMemcpy(host.data(), host.data() + 8, 4 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d.get(), d.get() + 8, 4 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  // Nothing was written by the refused calls.
  const std::vector<float> after = d.download();
  EXPECT_TRUE(all_bytes_ff(after.data(), after.size() * sizeof(float)));
  // The exact range, and a device-to-device copy inside it, work.
  EXPECT_EQ(cudaMemcpy(d.get() + 48, host.data(), 16 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.get(), d.get() + 48, 16 * sizeof(float), cudaMemcpyDeviceToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemset(d.get() + 16, 0, 4 * sizeof(float)), cudaSuccess);
  const std::vector<float> out = d.download();
  for (int i = 0; i < 64; ++i) {
    if (i < 16 || i >= 48)
      EXPECT_EQ(out[i], 2.0f) << i;
    else if (i < 20)
      EXPECT_EQ(out[i], 0.0f) << i;
    else
      EXPECT_TRUE(std::isnan(out[i])) << i;
  }
}

TEST_F(CudaEmu, CapacityAndMemGetInfo) {
  size_t free0 = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
  if (!std::getenv("RETORT_CUDAEMU_MEMORY_MB")) {
    EXPECT_EQ(total, size_t{16} << 30);  // the default, 16 GiB
  }
  EXPECT_LE(free0, total);

  // More than the emulated device has: refused without touching anything.
  void* p = reinterpret_cast<void*>(0x1);
  EXPECT_EQ(cudaMalloc(&p, total + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);

  const size_t bytes = 3 * 1000 * 1000 + 5;  // not page-rounded: the count is what was asked for
  void* a = nullptr;
  ASSERT_EQ(cudaMalloc(&a, bytes), cudaSuccess);
  size_t free1 = 0;
  ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
  EXPECT_EQ(free0 - free1, bytes);
  ASSERT_EQ(cudaFree(a), cudaSuccess);
  size_t free2 = 0;
  ASSERT_EQ(cudaMemGetInfo(&free2, &total), cudaSuccess);
  EXPECT_EQ(free2, free0);

  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(prop.totalGlobalMem, total);
}

TEST_F(CudaEmu, CudaFreeOfWhatIsNotAnAllocationIsAnError) {
  EXPECT_EQ(cudaFree(nullptr), cudaSuccess);
  int on_stack = 0;
  std::vector<float> on_heap(4);
  DeviceArray<float> d(64);
  void* const not_allocations[] = {&on_stack, on_heap.data(), d.get() + 1};
  for (void* p : not_allocations) {
    const cudaError_t e = cudaFree(p);
    EXPECT_NE(e, cudaSuccess) << p;
    EXPECT_EQ(cudaGetLastError(), e);
  }
  void* twice = nullptr;
  ASSERT_EQ(cudaMalloc(&twice, 16), cudaSuccess);
  ASSERT_EQ(cudaFree(twice), cudaSuccess);
  const cudaError_t e = cudaFree(twice);
  EXPECT_NE(e, cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), e);
}

TEST_F(CudaEmu, DeviceRangesAndDeviceAccessScopes) {
  DeviceArray<float> d(64);
  EXPECT_TRUE(cudaemu::is_device_range(d.get(), 64 * sizeof(float)));
  EXPECT_TRUE(cudaemu::is_device_range(d.get() + 63, sizeof(float)));
  EXPECT_FALSE(cudaemu::is_device_range(d.get() + 63, 2 * sizeof(float)));
  std::vector<float> host(4);
  EXPECT_FALSE(cudaemu::is_device_range(host.data(), sizeof(float)));
  {
    const cudaemu::DeviceAccess outer;  // what kernels, copies and library calls hold
    {
      const cudaemu::DeviceAccess inner;
      d.get()[5] = 7.0f;
    }
    d.get()[6] = d.get()[5] + 1.0f;  // still open: scopes nest
  }
  const std::vector<float> out = d.download();
  EXPECT_EQ(out[5], 7.0f);
  EXPECT_EQ(out[6], 8.0f);
}

// ======================================================================================================
// 9. atomics
// ======================================================================================================

TEST_F(CudaEmu, AtomicAddFromManyThreadsAndBlocks) {
  const unsigned blocks = 40, threads = 256, n = blocks * threads;
  for (const char* order : kOrders) {
    SCOPED_TRACE(std::string(order) + " order");
    const ScopedEnv env = order_env(order);
    DeviceArray<int> counter(std::vector<int>{0}), olds(n);
    DeviceArray<unsigned long long> id_sum(std::vector<unsigned long long>{0});
    DeviceArray<float> float_sum(std::vector<float>{0.0f});
    DeviceArray<unsigned> hits(std::vector<unsigned>{0});
    cudaemu::launch([&] { atomics(counter.get(), id_sum.get(), float_sum.get(), hits.get(), olds.get()); },
                    dim3(blocks), dim3(threads));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(counter.download()[0], static_cast<int>(n));
    EXPECT_EQ(id_sum.download()[0], static_cast<unsigned long long>(n) * (n - 1) / 2);
    EXPECT_EQ(float_sum.download()[0], 0.5f * static_cast<float>(n));
    EXPECT_EQ(hits.download()[0], n);
    // atomicAdd returns the old value: every value 0 .. n-1 exactly once.
    std::vector<int> o = olds.download();
    std::sort(o.begin(), o.end());
    for (unsigned i = 0; i < n; ++i) ASSERT_EQ(o[i], static_cast<int>(i));
  }
}

// ======================================================================================================
// 10. the cuBLAS and cuDNN stand-ins
// ======================================================================================================

TEST_F(CudaEmu, CublasSgemmStridedBatchedMatchesANaiveProduct) {
  // C[b] = 2 * A[b] @ B[b]^T, column-major: A is m x k, B is stored n x k, C is m x n.
  const int m = 3, n = 4, k = 5, batch = 2;
  const long long sa = m * k + 1, sb = n * k, sc = m * n + 2;  // strides with gaps
  std::vector<float> a(sa * batch), b(sb * batch);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(static_cast<int>(i % 7) - 3);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(static_cast<int>(i % 5) - 2) * 0.5f;
  DeviceArray<float> da(a), db(b), dc(sc * batch);  // C starts NaN: beta == 0 must not read it

  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  const float alpha = 2.0f, beta = 0.0f;
  ASSERT_EQ(cublasSgemmStridedBatched_64(handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &alpha, da.get(), m, sa,
                                         db.get(), n, sb, &beta, dc.get(), m, sc, batch),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> c = dc.download();
  for (int bi = 0; bi < batch; ++bi)
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float want = 0;
        for (int kk = 0; kk < k; ++kk) want += a[bi * sa + i + kk * m] * b[bi * sb + j + kk * n];
        EXPECT_EQ(c[bi * sc + i + j * m], 2.0f * want) << "batch " << bi << " (" << i << ", " << j << ")";
      }
  EXPECT_TRUE(std::isnan(c[m * n])) << "the gap between the C matrices was written";

  // alpha == 0 and beta == 0: C = 0 without reading A, B or the NaN in C.
  DeviceArray<float> dc0(sc * batch);
  const float zero = 0.0f;
  ASSERT_EQ(cublasSgemmStridedBatched_64(handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &zero, da.get(), m, sa,
                                         db.get(), n, sb, &zero, dc0.get(), m, sc, batch),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> c0 = dc0.download();
  for (int bi = 0; bi < batch; ++bi)
    for (int i = 0; i < m * n; ++i) EXPECT_EQ(c0[bi * sc + i], 0.0f) << "batch " << bi << " element " << i;

  // A matrix that does not fit its allocation is refused, as on a GPU.
  EXPECT_EQ(cublasSgemmStridedBatched_64(handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &alpha, da.get(), m, sa,
                                         db.get(), n, sb, &beta, dc.get(), m, sc, batch + 1),
            CUBLAS_STATUS_EXECUTION_FAILED);
  ASSERT_EQ(cublasDestroy(handle), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_NOT_INITIALIZED);
}

TEST_F(CudaEmu, CudnnConvolutionForwardOfOneChannel3x3) {
  // x: 1x1x4x4 with x[r][s] = 4r + s; w: 1x1x3x3 with w[r][s] = 3r + s + 1; no padding, stride 1.
  // Cross-correlation at (0, 0): 0*1 + 1*2 + 2*3 + 4*4 + 5*5 + 6*6 + 8*7 + 9*8 + 10*9 = 303; each step
  // right adds sum(w) = 45, each step down 4 * 45: y = [[303, 348], [483, 528]].
  // Convolution (the filter rotated by 180 degrees) at (0, 0): sum of x * (10 - w) = 10 * 45 - 303 = 147.
  std::vector<float> x(16), w(9);
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>(i);
  for (int i = 0; i < 9; ++i) w[i] = static_cast<float>(i + 1);
  DeviceArray<float> dx(x), dw(w), dy(4);

  cudnnHandle_t handle = nullptr;
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
  ASSERT_EQ(cudnnCreate(&handle), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnCreateTensorDescriptor(&xd), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnCreateTensorDescriptor(&yd), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnCreateFilterDescriptor(&wd), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnCreateConvolutionDescriptor(&cd), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 4, 4), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 1, 1, 3, 3), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
            CUDNN_STATUS_SUCCESS);
  int on = 0, oc = 0, oh = 0, ow = 0;
  ASSERT_EQ(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &on, &oc, &oh, &ow), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(on, 1);
  EXPECT_EQ(oc, 1);
  EXPECT_EQ(oh, 2);
  EXPECT_EQ(ow, 2);
  ASSERT_EQ(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 2, 2), CUDNN_STATUS_SUCCESS);

  const float alpha = 1.0f, beta = 0.0f;  // y starts NaN: beta == 0 must not read it
  ASSERT_EQ(cudnnConvolutionForward(handle, &alpha, xd, dx.get(), wd, dw.get(), cd,
                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &beta, yd, dy.get()),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(dy.download(), (std::vector<float>{303, 348, 483, 528}));

  ASSERT_EQ(cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 1, 1, CUDNN_CONVOLUTION, CUDNN_DATA_FLOAT),
            CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnConvolutionForward(handle, &alpha, xd, dx.get(), wd, dw.get(), cd,
                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &beta, yd, dy.get()),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(dy.download()[0], 147.0f);

  // IMPLICIT_PRECOMP_GEMM asks for a workspace (one element per output, plus one), so the engine's
  // workspace path runs: too small a workspace is refused; a big enough one is scribbled on and used.
  size_t ws = 0;
  ASSERT_EQ(cudnnGetConvolutionForwardWorkspaceSize(handle, xd, wd, cd, yd,
                                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &ws),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(ws, 5 * sizeof(float));
  DeviceArray<float> scratch(5);
  EXPECT_EQ(cudnnConvolutionForward(handle, &alpha, xd, dx.get(), wd, dw.get(), cd,
                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, scratch.get(), ws - 4, &beta,
                                    yd, dy.get()),
            CUDNN_STATUS_BAD_PARAM);
  ASSERT_EQ(cudnnConvolutionForward(handle, &alpha, xd, dx.get(), wd, dw.get(), cd,
                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, scratch.get(), ws, &beta, yd,
                                    dy.get()),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(dy.download()[0], 147.0f);

  EXPECT_EQ(cudnnDestroyConvolutionDescriptor(cd), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroyFilterDescriptor(wd), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroyTensorDescriptor(yd), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroyTensorDescriptor(xd), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroy(handle), CUDNN_STATUS_SUCCESS);
}


// ======================================================================================================
// 11. the race checker
// ======================================================================================================

// Whether this file (and so, by the same CMake flags, engine/cuda) has the instrumentation the checker
// needs; builds with another sanitizer go without (RETORT_CUDAEMU_RACECHECK in CMakeLists.txt).
#if defined(__SANITIZE_THREAD__)
constexpr bool kRacecheckBuilt = true;
#else
constexpr bool kRacecheckBuilt = false;
#endif
#define SKIP_WITHOUT_RACECHECK() \
  if (!kRacecheckBuilt) GTEST_SKIP() << "built without the race checker's instrumentation"

// Each thread stores its id at out[i], reads its neighbour's slot, and stores that after the barrier
// (if `barrier`) — the barrier orders the neighbour's store before the read.
__global__ void neighbour(int* slots, int* out, bool barrier) {
  const unsigned t = threadIdx.x;
  slots[t] = static_cast<int>(t);
  if (barrier) __syncthreads();
  out[t] = slots[(t + 1) % blockDim.x];
}
// Every block writes out[threadIdx.x]: blocks write the same elements.
__global__ void blocks_write_the_same(float* out) { out[threadIdx.x] = static_cast<float>(blockIdx.x); }
// Each thread reads its right neighbour's element, then writes its own: a write after another thread's
// read, ordered only by the barrier.
__global__ void shift_left_in_place(float* x, bool barrier) {
  const unsigned t = threadIdx.x;
  const float right = t + 1 < blockDim.x ? x[t + 1] : 0.0f;
  if (barrier) __syncthreads();
  x[t] = right;
}
// The shared-memory tree reduction (smem[t] += smem[t + s], a barrier per level): thread t reads
// smem[t] that thread t - s... read a level earlier, and writes it; all ordered by the barriers.
__global__ void tree_sum(const float* in, float* out) {
  __shared__ float smem[256];
  const unsigned t = threadIdx.x;
  smem[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (t < s) smem[t] += smem[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = smem[0];
}
// Threads count into one counter with atomicAdd; thread 0 then reads it plainly, without the barrier
// (a race with its block's later counts) or after it (still a race with other blocks' counts).
__global__ void count_then_read(int* counter, int* seen, bool barrier) {
  atomicAdd(counter, 1);
  if (barrier) __syncthreads();
  if (threadIdx.x == 0) seen[blockIdx.x] = *counter;
}

// Block 0 fills its shared array, every block reads it: on the emulator block 1 would find block 0's
// values (one host thread's thread_local), on a GPU undefined contents.
__global__ void read_shared_only_block_0_wrote(int* out) {
  __shared__ int buf[32];
  if (blockIdx.x == 0) buf[threadIdx.x] = 1;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = buf[threadIdx.x];
}

TEST_F(CudaEmuDeathTest, RacecheckSharedMemoryReadBeforeTheBlockWroteIt) {
  SKIP_WITHOUT_RACECHECK();
  const auto run = [](unsigned blocks) {
    DeviceArray<int> out(32 * blocks);
    cudaemu::launch([&] { read_shared_only_block_0_wrote(out.get()); }, dim3(blocks), dim3(32));
    EXPECT_EQ(out.download(), std::vector<int>(32 * blocks, 1));
  };
  run(1);  // one block: every read finds its block's write
  EXPECT_DEATH(run(2), "cudaemu racecheck: a read of uninitialized shared memory in the kernel launched by .*\n"
                       "  block \\(1,0,0\\) thread \\(0,0,0\\) reads 4 bytes at 0x[0-9a-f]+ \\(__shared__ memory\\),\n"
                       "  which no thread of this block has written");
}

TEST_F(CudaEmuDeathTest, RacecheckSharedMemoryReadWithoutABarrier) {
  SKIP_WITHOUT_RACECHECK();
  const auto run = [] {
    DeviceArray<int> out(kRaceBlock);
    cudaemu::launch([&] { left_neighbour_without_barrier(out.get()); }, dim3(1), dim3(kRaceBlock));
  };
  // Thread 1 reads buf[0], which thread 0 wrote in the same interval.
  EXPECT_DEATH(run(), "cudaemu racecheck: a data race in the kernel launched by .*, grid \\(1,1,1\\) of blocks "
                      "\\(64,1,1\\):\n"
                      "  block \\(0,0,0\\) thread \\(1,0,0\\) reads 4 bytes at 0x[0-9a-f]+ \\(__shared__ memory\\),\n"
                      "  which block \\(0,0,0\\) thread \\(0,0,0\\) wrote earlier in this launch, with no "
                      "__syncthreads between the two accesses");
}

TEST_F(CudaEmuDeathTest, RacecheckGlobalMemoryReadAfterAnotherThreadsWrite) {
  SKIP_WITHOUT_RACECHECK();
  const auto run = [] {
    DeviceArray<int> slots(64), out(64);
    cudaemu::launch([&] { neighbour(slots.get(), out.get(), false); }, dim3(1), dim3(64));
  };
  // Threads run in order between barriers, so thread 63 reads slot 0 after thread 0 wrote it (thread 0
  // read slot 1 before thread 1 wrote it: that shows as thread 1's write after thread 0's read).
  EXPECT_DEATH(run(), "block \\(0,0,0\\) thread \\(1,0,0\\) writes 4 bytes at 0x[0-9a-f]+ \\(byte 4 of the "
                      "256-byte allocation at 0x[0-9a-f]+\\),\n  which block \\(0,0,0\\) thread \\(0,0,0\\) read "
                      "earlier in this launch, with no __syncthreads");
}

TEST_F(CudaEmuDeathTest, RacecheckWriteAfterAnotherThreadsRead) {
  SKIP_WITHOUT_RACECHECK();
  const auto run = [] {
    DeviceArray<float> x(std::vector<float>(32, 1.0f));
    cudaemu::launch([&] { shift_left_in_place(x.get(), false); }, dim3(1), dim3(32));
  };
  EXPECT_DEATH(run(), "thread \\(1,0,0\\) writes 4 bytes .*\n  which block \\(0,0,0\\) thread \\(0,0,0\\) read");
}

TEST_F(CudaEmuDeathTest, RacecheckTwoBlocksWritingOneElement) {
  SKIP_WITHOUT_RACECHECK();
  const auto run = [] {
    DeviceArray<float> out(32);
    cudaemu::launch([&] { blocks_write_the_same(out.get()); }, dim3(2), dim3(32));
  };
  EXPECT_DEATH(run(), "block \\(1,0,0\\) thread \\(0,0,0\\) writes 4 bytes at 0x[0-9a-f]+ \\(byte 0 of the 128-byte "
                      "allocation at 0x[0-9a-f]+\\),\n  which block \\(0,0,0\\) thread \\(0,0,0\\) wrote earlier in "
                      "this launch; threads of different blocks are never ordered within a launch");
}

TEST_F(CudaEmuDeathTest, RacecheckPlainReadOfAnAtomicallyUpdatedCounter) {
  SKIP_WITHOUT_RACECHECK();
  const auto run = [](unsigned blocks, bool barrier) {
    DeviceArray<int> counter(std::vector<int>{0}), seen(blocks);
    cudaemu::launch([&] { count_then_read(counter.get(), seen.get(), barrier); }, dim3(blocks), dim3(32));
  };
  // Thread 0 counts and reads; thread 1's count comes after that read in the same interval.
  EXPECT_DEATH(run(1, false), "thread \\(1,0,0\\) atomically updates 4 bytes .*\n  which block \\(0,0,0\\) "
                              "thread \\(0,0,0\\) read earlier in this launch, with no __syncthreads");
  EXPECT_DEATH(run(2, true), "block \\(1,0,0\\) thread \\(0,0,0\\) atomically updates 4 bytes .*\n  which "
                             "block \\(0,0,0\\) thread \\(0,0,0\\) read earlier in this launch; threads of "
                             "different blocks");
}

TEST_F(CudaEmu, RacecheckAcceptsBarriersAtomicsAndEachThreadsOwnAccesses) {
  // The same kernels with their barriers, and patterns our kernels use: none may be reported (a report
  // would stop the process) and every result is right.
  {
    DeviceArray<int> slots(64), out(64);
    cudaemu::launch([&] { neighbour(slots.get(), out.get(), true); }, dim3(1), dim3(64));
    std::vector<int> want(64);
    for (int t = 0; t < 64; ++t) want[static_cast<size_t>(t)] = (t + 1) % 64;
    EXPECT_EQ(out.download(), want);
  }
  {
    std::vector<float> x0(32);
    std::iota(x0.begin(), x0.end(), 0.0f);
    DeviceArray<float> x(x0);
    cudaemu::launch([&] { shift_left_in_place(x.get(), true); }, dim3(1), dim3(32));
    std::vector<float> want(32);
    for (int t = 0; t < 32; ++t) want[static_cast<size_t>(t)] = t + 1 < 32 ? static_cast<float>(t + 1) : 0.0f;
    EXPECT_EQ(x.download(), want);
  }
  {
    const unsigned blocks = 3, threads = 256;
    std::vector<float> in(blocks * threads, 0.5f);
    DeviceArray<float> d_in(in), out(blocks);
    cudaemu::launch([&] { tree_sum(d_in.get(), out.get()); }, dim3(blocks), dim3(threads));
    EXPECT_EQ(out.download(), std::vector<float>(blocks, 128.0f));
  }
  {
    DeviceArray<int> counter(std::vector<int>{0}), seen(1);
    cudaemu::launch([&] { count_then_read(counter.get(), seen.get(), true); }, dim3(1), dim3(32));
    EXPECT_EQ(seen.download(), std::vector<int>{32});
  }
  {
    // In place, one element per thread (the elementwise kernels and the optimizer steps).
    DeviceArray<float> in(std::vector<float>(300, 2.0f));
    launch_scale(in.get(), in.get(), 300, 3.0f);
    EXPECT_EQ(in.download(), std::vector<float>(300, 6.0f));
  }
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST_F(CudaEmu, RacecheckReportModeGoesOnAndZeroIsSilent) {
  SKIP_WITHOUT_RACECHECK();
  for (const char* mode : {"report", "0"}) {
    SCOPED_TRACE(mode);
    const ScopedEnv env("RETORT_CUDAEMU_RACECHECK", mode);
    DeviceArray<float> out(32);
    ::testing::internal::CaptureStderr();
    cudaemu::launch([&] { blocks_write_the_same(out.get()); }, dim3(4), dim3(32));
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(out.download(), std::vector<float>(32, 3.0f)) << "the launch ran to its end";
    if (std::strcmp(mode, "report") == 0) {
      // One report per launch, however many races it has.
      EXPECT_NE(err.find("cudaemu racecheck: a data race"), std::string::npos) << err;
      EXPECT_EQ(err.find("cudaemu racecheck", 10), std::string::npos) << err;
    } else {
      EXPECT_EQ(err, "");
    }
  }
}

}  // namespace
