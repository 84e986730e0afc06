// cudaemu: the CUDA runtime stand-in (see include/cuda_runtime.h for what is emulated and why).
//
// Kernels. A launch runs its blocks one after another on the calling thread. Within a block every CUDA
// thread is a fiber with its own stack (switched by the few instructions below on x86-64, by ucontext
// elsewhere). The scheduler takes one warp at a time: its lanes run until each waits at a barrier
// (__syncthreads, or a warp shuffle) or returns; a shuffle all lanes have reached is released and the
// lanes run on; then the next warp. When every thread waits at __syncthreads (or has returned), that
// barrier is released and the round repeats. A launch site whose first launch reached no barrier is from
// then on run without fibers (each thread is a plain call), which is much faster; should such a thread
// reach a barrier after all, the process stops with a message (set RETORT_CUDAEMU_FIBERS=always).
//
// Device memory. One reserved address range; each allocation gets its own pages, its data ending where
// the pages end, and an unmapped guard page after it, so reading past the end faults. Allocations are
// PROT_NONE except while a DeviceAccess scope (a kernel, a copy, a library call) uses them: the first
// touch of an allocation inside a scope faults, the SIGSEGV handler opens that allocation and the
// access is retried; the scope closes what it opened when it ends. So host code that dereferences a
// device pointer faults, and the handler says which allocation was touched and by whom. Freed pages
// are never handed out again (use after free faults as well).
#include <cuda_runtime.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include "racecheck.h"

namespace cudaemu {

constinit thread_local ThreadState tls{};

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "cudaemu: %s\n", msg.c_str());
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, 2);
  std::abort();
}

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? static_cast<size_t>(std::strtoull(v, nullptr, 10)) : fallback;
}
bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::strcmp(v, value) == 0;
}

// ---- errors ------------------------------------------------------------------------------------------

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

int device_count() { return static_cast<int>(env_size("RETORT_CUDAEMU_DEVICES", 1)); }

// ---- device memory -----------------------------------------------------------------------------------

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
constexpr size_t kReserve = size_t{1} << 38;  // 256 GiB of addresses (never backed unless touched)

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

struct Allocation {
  char* pages = nullptr;  // first data page
  size_t page_bytes = 0;  // data pages (the guard page follows)
  size_t size = 0;        // what was asked for (the data's start is the key in Arena::live)
};

struct Opened {
  char* pages;
  size_t bytes;
};

struct Arena {
  std::mutex mu;
  // Allocations the current DeviceAccess scope has opened (written by the signal handler: no allocation).
  static constexpr size_t kMaxOpened = 4096;
  Opened opened[kMaxOpened] = {};
  size_t n_opened = 0;
  char* base = nullptr;
  size_t top = 0;                           // bytes of the range handed out so far
  std::map<uintptr_t, Allocation> live;     // by data start
  size_t live_bytes = 0;
  size_t capacity = 0;                      // the emulated device's memory
  int access_depth = 0;

  Arena() {
    capacity = env_size("RETORT_CUDAEMU_MEMORY_MB", 16384) << 20;
    void* p = mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("cannot reserve the device address range");
    base = static_cast<char*>(p);
    racecheck::init(base, kReserve);
  }
  bool contains(const void* p) const {
    const char* c = static_cast<const char*>(p);
    return c >= base && c < base + kReserve;
  }
  // The live allocation holding address p, if any (caller holds mu; the SIGSEGV handler reads without
  // it, on the faulting thread, which holds no lock of ours then).
  const std::pair<const uintptr_t, Allocation>* find(const void* p) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = live.upper_bound(a);
    if (it == live.begin()) return nullptr;
    --it;
    return a < it->first + it->second.size || (it->second.size == 0 && a == it->first) ? &*it : nullptr;
  }
  void protect(const Allocation& al, bool accessible) {
    if (mprotect(al.pages, al.page_bytes, accessible ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
      die("mprotect failed on device memory");
  }
};

Arena& arena() {
  static Arena* a = new Arena();  // leaked: used by the allocator's and contexts' static destructors
  return *a;
}

std::atomic<bool> g_handler_installed{false};

// Inside a DeviceAccess scope, opens the allocation whose data holds `addr`; false if there is none.
bool open_on_touch(Arena& a, const void* addr) {
  if (a.access_depth == 0) return false;
  const auto* hit = a.find(addr);
  if (!hit) return false;
  if (a.n_opened == Arena::kMaxOpened) {  // close them all; they open again when touched
    for (size_t i = 0; i < a.n_opened; ++i) mprotect(a.opened[i].pages, a.opened[i].bytes, PROT_NONE);
    a.n_opened = 0;
  }
  const Allocation& al = hit->second;
  if (mprotect(al.pages, al.page_bytes, PROT_READ | PROT_WRITE) != 0) return false;
  a.opened[a.n_opened++] = Opened{al.pages, al.page_bytes};
  return true;
}

// One line to stderr from the SIGSEGV handler (write(2), no stdio buffering).
__attribute__((format(printf, 1, 2))) void say(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  if (n > 0) (void)!write(2, buf, std::min(static_cast<size_t>(n), sizeof buf - 1));
}

void on_segv(int sig, siginfo_t* info, void*) {
  Arena& a = arena();
  if (a.contains(info->si_addr)) {
    if (open_on_touch(a, info->si_addr)) return;  // the access is retried, now allowed
    const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
    const char* who = a.access_depth > 0 ? "a kernel (or copy) went outside its allocation" :
                                           "host code touched device memory";
    // The nearest live allocations below and above the address, for the message (not
    // async-signal-safe, but we die).
    auto above = a.live.upper_bound(addr);
    if (above != a.live.begin()) {
      auto below = std::prev(above);
      say("cudaemu: %s: address 0x%" PRIxPTR " is %" PRIdPTR " bytes from the start of the allocation below it "
          "(0x%" PRIxPTR ", %zu bytes)\n",
          who, addr, static_cast<intptr_t>(addr - below->first), below->first, below->second.size);
    }
    if (above != a.live.end())
      say("cudaemu: %s: address 0x%" PRIxPTR " is %" PRIdPTR " bytes before the allocation above it (0x%" PRIxPTR
          ", %zu bytes)\n",
          who, addr, static_cast<intptr_t>(above->first - addr), above->first, above->second.size);
    if (a.live.empty()) say("cudaemu: %s: address 0x%" PRIxPTR " (no live allocation)\n", who, addr);
    void* frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_handler() {
  if (g_handler_installed.exchange(true)) return;
  struct sigaction sa{};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

// Checks that [p, p + n) is device memory (want_device) or host memory (!want_device).
bool range_ok(const void* p, size_t n, bool want_device) {
  if (n == 0) return true;
  if (!want_device) return !arena().contains(p);
  return is_device_range(p, n);
}

// ---- kernels -----------------------------------------------------------------------------------------

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

#if defined(__x86_64__)
// switch_stack(&save, next): pushes the callee-saved registers, stores the stack pointer in *save,
// loads `next` and pops the registers saved there. A new fiber's stack is prepared by start_stack so
// that the first switch "returns" into fiber_trampoline. (glibc's swapcontext also saves the signal
// mask with two system calls per switch, which made barrier-heavy kernels 10x slower.)
extern "C" void cudaemu_switch_stack(void** save, void* next);
asm(R"(
  .text
  .globl cudaemu_switch_stack
  .type cudaemu_switch_stack, @function
cudaemu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cudaemu_switch_stack, .-cudaemu_switch_stack
)");

[[noreturn]] void fiber_trampoline();

struct Context {
  void* sp = nullptr;
};
void start_stack(Context& c, char* stack, size_t bytes) {
  auto* top = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15});
  top[-1] = nullptr;                                       // keeps the entry's stack ABI-aligned
  top[-2] = reinterpret_cast<void*>(&fiber_trampoline);    // "return address" of the first switch
  for (int i = 3; i <= 8; ++i) top[-i] = nullptr;          // rbp rbx r12 r13 r14 r15
  c.sp = top - 8;
}
void switch_to(Context& from, Context& to) { cudaemu_switch_stack(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc{};
};
void start_stack(Context& c, char* stack, size_t bytes) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, reinterpret_cast<void (*)()>(&fiber_trampoline), 0);
}
void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Fiber {
  Context ctx;
  void* asan_fake_stack = nullptr;  // AddressSanitizer's bookkeeping while the fiber is switched out
  char* stack = nullptr;
  State state = State::Ready;
  uint3 tid{};
  unsigned mask = 0;
  uint64_t bits = 0, result = 0;
  int src = 0;
};

constexpr size_t kStack = 256 * 1024;

struct Runner {
  std::vector<Fiber> fibers;
  Context sched;
  const void* sched_stack = nullptr;  // the scheduler's stack, for AddressSanitizer
  size_t sched_stack_size = 0;
  const std::function<void()>* body = nullptr;
  int current = -1;    // the running fiber, or -1 in plain (fiber-less) mode
  bool direct = false; // running without fibers
  bool saw_barrier = false;
  const char* site = "";

  void ensure(size_t n) {
    while (fibers.size() < n) {
      Fiber f;
      void* p = mmap(nullptr, kStack + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) die("cannot allocate a fiber stack");
      mprotect(p, kPage, PROT_NONE);  // guard page below the stack
      f.stack = static_cast<char*>(p) + kPage;
      fibers.push_back(f);
    }
  }
};

thread_local Runner t_runner;

// Switches between the scheduler and a fiber, telling AddressSanitizer (when the build has it) which
// stack is current, so that it neither reports the switch nor loses track of either stack.
#if defined(__SANITIZE_ADDRESS__)
void resume_fiber(Runner& r, Fiber& f) {
  void* save = nullptr;
  __sanitizer_start_switch_fiber(&save, f.stack, kStack);
  switch_to(r.sched, f.ctx);
  __sanitizer_finish_switch_fiber(save, nullptr, nullptr);
}
void back_to_scheduler(Runner& r, Fiber& f, bool finished) {
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.asan_fake_stack, r.sched_stack, r.sched_stack_size);
  switch_to(f.ctx, r.sched);
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &r.sched_stack, &r.sched_stack_size);
}
void fiber_started(Runner& r) { __sanitizer_finish_switch_fiber(nullptr, &r.sched_stack, &r.sched_stack_size); }
#else
void resume_fiber(Runner& r, Fiber& f) { switch_to(r.sched, f.ctx); }
void back_to_scheduler(Runner& r, Fiber& f, bool) { switch_to(f.ctx, r.sched); }
void fiber_started(Runner&) {}
#endif

// Every fiber starts here, runs the thread and goes back to the scheduler for good.
void fiber_trampoline() {
  Runner& r = t_runner;
  fiber_started(r);
  (*r.body)();
  Fiber& f = r.fibers[static_cast<size_t>(r.current)];
  f.state = State::Done;
  back_to_scheduler(r, f, true);
  __builtin_unreachable();
}

void wait_here(State s) {
  Runner& r = t_runner;
  if (r.direct)
    die(std::string("a thread reached a barrier in a launch run without fibers (its site reached none the first "
                    "time); rerun with RETORT_CUDAEMU_FIBERS=always. Kernel: ") + r.site);
  r.saw_barrier = true;
  Fiber& f = r.fibers[static_cast<size_t>(r.current)];
  f.state = s;
  back_to_scheduler(r, f, false);
}

std::string describe_block(const Runner& r, size_t n) {
  std::string s;
  const char* names[] = {"running", "at __syncthreads", "at a warp shuffle", "exited"};
  int counts[4] = {};
  for (size_t i = 0; i < n; ++i) ++counts[static_cast<int>(r.fibers[i].state)];
  for (int k = 0; k < 4; ++k)
    if (counts[k]) s += std::to_string(counts[k]) + " " + names[k] + "; ";
  return s + "block (" + std::to_string(tls.block.x) + "," + std::to_string(tls.block.y) + "," +
         std::to_string(tls.block.z) + ") of kernel " + r.site;
}

uint3 thread_of(size_t i, dim3 b) {
  return uint3{static_cast<unsigned>(i % b.x), static_cast<unsigned>(i / b.x % b.y),
               static_cast<unsigned>(i / (static_cast<size_t>(b.x) * b.y))};
}

// Releases warp w's shuffle if every lane in its mask has arrived; false if it cannot be released.
bool release_warp(Runner& r, size_t n, size_t w) {
  const size_t lo = w * 32, hi = std::min(n, lo + 32);
  int waiting = -1;
  for (size_t i = lo; i < hi; ++i)
    if (r.fibers[i].state == State::AtWarpBarrier) waiting = static_cast<int>(i);
  if (waiting < 0) return false;
  const unsigned mask = r.fibers[static_cast<size_t>(waiting)].mask;
  bool all = true;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    const size_t i = lo + static_cast<size_t>(lane);
    if (i >= hi)
      die("a warp shuffle's mask 0x" + [&] { char b[16]; std::snprintf(b, 16, "%08x", mask); return std::string(b); }() +
          " names lane " + std::to_string(lane) + ", which does not exist (block of " + std::to_string(n) +
          " threads); " + describe_block(r, n));
    const Fiber& f = r.fibers[i];
    if (f.state == State::Done || f.state == State::AtBlockBarrier)
      die("warp " + std::to_string(w) + ": lane " + std::to_string(lane) + " is in the shuffle's mask but " +
          (f.state == State::Done ? "has exited" : "waits at __syncthreads") + "; " + describe_block(r, n));
    if (f.state != State::AtWarpBarrier) all = false;
    else if (f.mask != mask) die("warp " + std::to_string(w) + ": lanes shuffle with different masks; " + describe_block(r, n));
  }
  if (!all) return false;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    Fiber& f = r.fibers[lo + static_cast<size_t>(lane)];
    const int src_lane = f.src - static_cast<int>(lo);
    if (src_lane < 0 || src_lane >= 32 || !(mask >> src_lane & 1u))
      die("warp " + std::to_string(w) + ": lane " + std::to_string(lane) + " reads lane " + std::to_string(src_lane) +
          ", which is not in the mask (undefined); " + describe_block(r, n));
    f.result = r.fibers[static_cast<size_t>(f.src)].bits;
  }
  for (int lane = 0; lane < 32; ++lane)
    if (mask >> lane & 1u) r.fibers[lo + static_cast<size_t>(lane)].state = State::Ready;
  return true;
}

void run_block_fibers(Runner& r, size_t n, dim3 block, bool reverse) {
  r.ensure(n);
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    f.state = State::Ready;
    f.tid = thread_of(i, block);
    start_stack(f.ctx, f.stack, kStack);
  }
  // One warp at a time: its lanes run to their next barrier; while that is a shuffle of the warp, it
  // is released and they run on; then the next warp. Once every warp waits at __syncthreads (or has
  // finished), the block barrier is released and the round starts again.
  const size_t warps = (n + 31) / 32;
  for (;;) {
    for (size_t wk = 0; wk < warps; ++wk) {
      const size_t w = reverse ? warps - 1 - wk : wk;
      const size_t lo = w * 32, hi = std::min(n, lo + 32);
      do {
        for (size_t k = lo; k < hi; ++k) {
          const size_t i = reverse ? lo + hi - 1 - k : k;
          Fiber& f = r.fibers[i];
          if (f.state != State::Ready) continue;
          r.current = static_cast<int>(i);
          tls.thread = f.tid;
          resume_fiber(r, f);
        }
      } while (release_warp(r, n, w));
    }
    size_t done = 0, at_block = 0;
    for (size_t i = 0; i < n; ++i) {
      done += r.fibers[i].state == State::Done;
      at_block += r.fibers[i].state == State::AtBlockBarrier;
    }
    if (done == n) break;
    if (at_block + done == n) {
      if (done > 0)
        die("__syncthreads reached by " + std::to_string(at_block) + " of " + std::to_string(n) +
            " threads; the others had exited (undefined on a GPU); " + describe_block(r, n));
      for (size_t i = 0; i < n; ++i) r.fibers[i].state = State::Ready;
      racecheck::barrier();
      continue;
    }
    die("deadlock: no barrier can be released; " + describe_block(r, n));
  }
  r.current = -1;
}

std::mutex g_sites_mu;
std::unordered_map<std::type_index, bool> g_site_has_barrier;  // by the launch lambda's type

}  // namespace

// ---- emulator interface -------------------------------------------------------------------------------

std::string describe_device_address(const void* p) {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  const auto* al = a.find(p);
  if (!al) return "device memory outside every live allocation";
  char buf[160];
  std::snprintf(buf, sizeof buf, "byte %" PRIuPTR " of the %zu-byte allocation at 0x%" PRIxPTR,
                reinterpret_cast<uintptr_t>(p) - al->first, al->second.size, al->first);
  return buf;
}

bool is_device_range(const void* p, size_t bytes) {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  const auto* al = a.find(p);
  if (!al) return false;
  return reinterpret_cast<uintptr_t>(p) + bytes <= al->first + al->second.size;
}

DeviceAccess::DeviceAccess() {
  install_handler();
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  ++a.access_depth;
}

DeviceAccess::~DeviceAccess() {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  if (--a.access_depth > 0) return;
  for (size_t i = 0; i < a.n_opened; ++i) mprotect(a.opened[i].pages, a.opened[i].bytes, PROT_NONE);
  a.n_opened = 0;
}

void syncthreads() { wait_here(State::AtBlockBarrier); }

uint64_t shuffle(unsigned mask, uint64_t bits, int src_lane) {
  Runner& r = t_runner;
  if (!r.direct) {
    Fiber& f = r.fibers[static_cast<size_t>(r.current)];
    f.mask = mask;
    f.bits = bits;
    f.src = static_cast<int>((static_cast<size_t>(r.current) & ~size_t{31})) + src_lane % 32;
  }
  wait_here(State::AtWarpBarrier);
  return r.fibers[static_cast<size_t>(r.current)].result;
}

void launch(const std::function<void()>& body, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t) {
  install_handler();
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
      grid.z > 65535 || shared_bytes > 48 * 1024) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  Runner& r = t_runner;
  if (r.current >= 0 || r.direct) die("a kernel launched another kernel (dynamic parallelism is not emulated)");
  const std::type_index site(body.target_type());
  bool fibers = true;
  if (!env_is("RETORT_CUDAEMU_FIBERS", "always")) {
    std::lock_guard<std::mutex> lock(g_sites_mu);
    auto it = g_site_has_barrier.find(site);
    fibers = it == g_site_has_barrier.end() || it->second;
  }
  const bool reverse = env_is("RETORT_CUDAEMU_ORDER", "reverse");
  DeviceAccess access;
  r.body = &body;
  r.site = body.target_type().name();
  r.saw_barrier = false;
  tls.block_dim = block;
  tls.grid_dim = grid;
  racecheck::launch_begin(r.site, grid, block);
  const uint64_t nblocks = uint64_t{grid.x} * grid.y * grid.z;
  for (uint64_t k = 0; k < nblocks; ++k) {
    const uint64_t b = reverse ? nblocks - 1 - k : k;
    tls.block = uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                      static_cast<unsigned>(b / (uint64_t{grid.x} * grid.y))};
    racecheck::block_begin(b);
    if (fibers) {
      run_block_fibers(r, threads, block, reverse);
    } else {
      r.direct = true;
      for (uint64_t t = 0; t < threads; ++t) {
        tls.thread = thread_of(reverse ? threads - 1 - t : t, block);
        body();
      }
      r.direct = false;
    }
  }
  racecheck::launch_end();
  if (fibers) {
    std::lock_guard<std::mutex> lock(g_sites_mu);
    auto [it, inserted] = g_site_has_barrier.emplace(site, r.saw_barrier);
    if (!inserted) it->second = it->second || r.saw_barrier;
  }
  r.body = nullptr;
}

}  // namespace cudaemu

// ---- runtime API --------------------------------------------------------------------------------------

using cudaemu::arena;
using cudaemu::fail;

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = cudaemu::device_count();
  return *count > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = cudaemu::t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= cudaemu::device_count()) return fail(cudaErrorInvalidDevice);
  cudaemu::t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= cudaemu::device_count()) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "cudaemu (CUDA emulated on the CPU)");
  prop->totalGlobalMem = arena().capacity;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) { return cudaRuntimeGetVersion(version); }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = cudaemu::t_last_error;
  cudaemu::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return cudaemu::t_last_error; }

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  cudaemu::install_handler();
  auto& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  const size_t data = cudaemu::round_up(std::max<size_t>(size, 1), cudaemu::kPage);
  if (size > a.capacity || a.live_bytes + size > a.capacity || a.top + data + cudaemu::kPage > cudaemu::kReserve) {
    *ptr = nullptr;
    return fail(cudaErrorMemoryAllocation);
  }
  cudaemu::Allocation al;
  al.pages = a.base + a.top;
  al.page_bytes = data;
  // The data ends where its pages end (8-byte aligned), so one element past the end is the guard page;
  // with RETORT_CUDAEMU_ALIGN=start it starts where they start instead, right after the previous
  // allocation's guard page, so one element before the start faults.
  al.size = size;
  a.top += data + cudaemu::kPage;
  static const bool at_start = cudaemu::env_is("RETORT_CUDAEMU_ALIGN", "start");
  char* start = at_start ? al.pages : al.pages + data - cudaemu::round_up(size, 8);
  a.protect(al, true);
  std::memset(start, 0xFF, size);  // NaN in F32/F64: reading what nobody wrote shows
  a.protect(al, false);
  a.live.emplace(reinterpret_cast<uintptr_t>(start), al);
  a.live_bytes += size;
  *ptr = start;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  auto& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == a.live.end()) return fail(cudaErrorInvalidDevicePointer);
  a.protect(it->second, false);
  madvise(it->second.pages, it->second.page_bytes, MADV_DONTNEED);
  cudaemu::racecheck::released(it->second.pages, it->second.page_bytes);
  a.live_bytes -= it->second.size;
  a.live.erase(it);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  *ptr = std::malloc(std::max<size_t>(size, 1));
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, 0); }
cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  auto& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  *total_bytes = a.capacity;
  *free_bytes = a.capacity - a.live_bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t) {
  if (count == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue);
  bool dst_dev = false, src_dev = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: dst_dev = true; break;
    case cudaMemcpyDeviceToHost: src_dev = true; break;
    case cudaMemcpyDeviceToDevice: dst_dev = src_dev = true; break;
    case cudaMemcpyDefault:
      dst_dev = arena().contains(dst);
      src_dev = arena().contains(src);
      break;
    default: return fail(cudaErrorInvalidMemcpyDirection);
  }
  if (!cudaemu::range_ok(dst, count, dst_dev) || !cudaemu::range_ok(src, count, src_dev))
    return fail(cudaErrorInvalidValue);
  cudaemu::DeviceAccess access;
  std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) { return cudaMemsetAsync(ptr, value, count, nullptr); }
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  if (count == 0) return cudaSuccess;
  if (!cudaemu::is_device_range(ptr, count)) return fail(cudaErrorInvalidValue);
  cudaemu::DeviceAccess access;
  std::memset(ptr, value, count);
  return cudaSuccess;
}

// Streams and events are tokens: all work has finished when its call returns.
namespace {
struct Token {
  int kind;  // 1 stream, 2 event
};
}  // namespace
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  if (!stream) return fail(cudaErrorInvalidValue);
  *stream = reinterpret_cast<cudaStream_t>(new Token{1});
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete reinterpret_cast<Token*>(stream);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  if (!event) return fail(cudaErrorInvalidValue);
  *event = reinterpret_cast<cudaEvent_t>(new Token{2});
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<Token*>(event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t event) { return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle); }
