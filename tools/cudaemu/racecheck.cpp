// cudaemu's race checker: data races between the CUDA threads of one launch, in global (device) and
// shared memory — what compute-sanitizer's racecheck finds on a GPU for shared memory, here for both.
//
// The emulator build compiles our kernels (engine/cuda/*.cu, rewritten to C++) with GCC's
// -fsanitize=thread instrumentation but does not link ThreadSanitizer's runtime: the __tsan_read4,
// __tsan_write8, ... calls the compiler puts before every memory access land here instead. Outside a
// launch they return at once; inside one, each access is checked against what the launch's other
// threads did to the same 4 bytes, by CUDA's rules rather than C++'s:
//  - two accesses of different threads to the same location, at least one a write (atomicAdd counts
//    as an atomic write), race unless both are atomic or the threads are in the same block and a
//    __syncthreads lies between the two accesses; threads of different blocks are never ordered;
//  - a warp shuffle exchanges values, not memory, so it orders nothing (as in CUDA's memory model);
//  - launches are ordered after each other and after everything the host did before them;
//  - a read of __shared__ memory that no thread of the block has written yet is reported too: a
//    block's shared memory starts undefined on a GPU (here it would hold the previous block's values).
// Each thread of a block runs its accesses between two barriers before the next barrier is released,
// so "a __syncthreads between them" is "the block's barrier count (its interval) differs".
//
// Shadow state: for device memory, one 32-byte record per 4 bytes, in a reserved range parallel to the
// device arena (touched pages only; dropped when the allocation is freed), stamped with the launch it
// describes; for the executable's TLS block on the host thread, where the kernels' __shared__ arrays
// live (the header makes them function-local thread_locals), a table of records stamped with the block,
// since each block has its own shared memory. Nothing else is checked: stacks (the fibers' and the
// host thread's) are private to a thread, the emulator's own per-thread state is its business, and
// host memory a kernel reads (its launch lambda's captures) is not written during a launch on a GPU —
// a kernel cannot touch host memory there. A record keeps the last writer (thread, interval, atomic),
// the last reader and the latest interval of any other reader, which decides every rule above exactly
// for accesses within one block (intervals only grow) and conservatively across blocks.
//
// RETORT_CUDAEMU_RACECHECK (read at every launch): unset or 1 stops the process at the first race, with
// both threads, the address (which allocation, which byte) and where the access is; `report` prints the
// first race of each launch and goes on; 0 turns checking off.
#include "racecheck.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <link.h>
#include <execinfo.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cudaemu {
std::string describe_device_address(const void* p);  // runtime.cpp
}

namespace cudaemu::racecheck {
namespace {

enum Mode { kOff, kStop, kReport };

Mode mode_from_env() {
  const char* v = std::getenv("RETORT_CUDAEMU_RACECHECK");
  if (!v || !*v || std::strcmp(v, "1") == 0) return kStop;
  if (std::strcmp(v, "0") == 0) return kOff;
  if (std::strcmp(v, "report") == 0) return kReport;
  std::fprintf(stderr, "cudaemu: RETORT_CUDAEMU_RACECHECK=%s: expected 1, report or 0\n", v);
  std::abort();
}

// What happened to 4 bytes in the current launch (device memory) or block (shared memory).
struct Record {
  uint32_t stamp = 0;     // the launch (device memory) or block (shared memory) it describes; another
                          // value means "nothing yet"
  uint32_t writer = 0;    // 1 + the last writer's thread id in the launch; 0: none
  uint32_t w_interval = 0;
  uint32_t reader = 0;    // 1 + the last reader since that write; 0: none
  uint32_t r_interval = 0;
  uint32_t r2_interval = 0;  // the latest interval of a reader other than `reader` (flag kOtherReader)
  uint32_t flags = 0;
  uint32_t unused = 0;
};
static_assert(sizeof(Record) == 32);
constexpr uint32_t kAtomicWrite = 1, kOtherReader = 2, kReadersInBlocks = 4;
constexpr int kGranuleShift = 2;  // 4 bytes per record

char* g_base = nullptr;  // device arena
size_t g_bytes = 0;
Record* g_shadow = nullptr;
std::atomic<uint32_t> g_launches{0};
std::atomic<int> g_checking{0};  // host threads inside a checked launch (at most one is checked)

struct State {
  bool active = false;
  Mode mode = kStop;  // read at each launch
  uint32_t launch = 0;
  uint32_t block_stamp = 0;  // counts blocks begun on this host thread
  const char* site = "";
  dim3 grid, block;
  uint64_t threads = 0;      // per block
  uint64_t block_base = 0;   // first thread id of the current block
  uint32_t interval = 0;
  uintptr_t tls_lo = 0, tls_span = 0;  // the executable's TLS block on this thread: the __shared__ arrays
  Record* shared = nullptr;            // one record per 4 bytes of it (mmap'd, kept for the thread's life)
  bool reported = false;  // this launch has had its race reported (`report` mode)
};
// constinit: no TLS wrapper call on the hooks' path.
constinit thread_local State t_state{};

// The executable's own TLS block on this host thread, where the __shared__ arrays of the kernels linked
// into it live: on x86-64 (TLS variant II) it is the block just below the thread pointer, its size and
// alignment those of the program's PT_TLS segment. Elsewhere, or without one: not found, and shared
// memory goes unchecked. (Libraries' TLS — libc's, libstdc++'s — lies further down and is not ours.)
void find_program_tls(State& s) {
#if defined(__x86_64__)
  struct Tls {
    size_t memsz = 0, align = 1, misalign = 0;
  } tls_seg;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_TLS) {
            auto* t = static_cast<Tls*>(out);
            t->memsz = info->dlpi_phdr[i].p_memsz;
            t->align = std::max<size_t>(info->dlpi_phdr[i].p_align, 1);
            t->misalign = info->dlpi_phdr[i].p_vaddr % t->align;
          }
        return 1;  // the first object is the program itself
      },
      &tls_seg);
  if (tls_seg.memsz == 0 || tls_seg.misalign != 0) return;
  const auto tp = reinterpret_cast<uintptr_t>(__builtin_thread_pointer());
  const uintptr_t lo = tp - (tls_seg.memsz + tls_seg.align - 1) / tls_seg.align * tls_seg.align;
  void* p = mmap(nullptr, ((tls_seg.memsz + 3) >> kGranuleShift) * sizeof(Record), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return;
  s.shared = static_cast<Record*>(p);
  s.tls_lo = lo;
  s.tls_span = tls_seg.memsz;
#else
  (void)s;
#endif
}

// A type's name as typeid gives it (the launch lambda's), demangled.
std::string demangle_type(const char* mangled) {
  int status = 0;
  char* out = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status != 0 || !out) return mangled;
  std::string r = out;
  std::free(out);
  return r;
}

std::string coords(uint64_t linear, dim3 d) {
  return "(" + std::to_string(linear % d.x) + "," + std::to_string(linear / d.x % d.y) + "," +
         std::to_string(linear / (uint64_t{d.x} * d.y)) + ")";
}
std::string describe_thread(const State& s, uint32_t id1) {
  const uint64_t id = id1 - 1;
  return "block " + coords(id / s.threads, s.grid) + " thread " + coords(id % s.threads, s.block);
}

// The access's code address as a module offset for addr2line. (dladdr's symbol name would mislead: the
// kernels are local functions, absent from the dynamic symbol table, so it names some exported neighbour.)
std::string where(void* pc) {
  char buf[512];
  Dl_info info{};
  if (pc && dladdr(pc, &info) && info.dli_fname) {
    const uintptr_t offset = reinterpret_cast<uintptr_t>(pc) - reinterpret_cast<uintptr_t>(info.dli_fbase);
    std::snprintf(buf, sizeof buf, "%s at offset 0x%" PRIxPTR " (`addr2line -Cfie %s 0x%" PRIxPTR "` names the line)",
                  info.dli_fname, offset, info.dli_fname, offset);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%p", pc);
  return buf;
}

enum Kind { kRead, kWrite, kAtomic };
const char* verb(Kind k) { return k == kRead ? "reads" : k == kWrite ? "writes" : "atomically updates"; }

// Prints "cudaemu racecheck: <what> in the kernel launched by ...", the access, `then` (what makes it
// wrong) and where the access is; stops in the default mode. One report per launch.
[[gnu::noinline]] void report(State& s, const char* what, Kind k, uintptr_t addr, size_t bytes, uint32_t me,
                              const std::string& then, void* pc) {
  if (s.reported) return;
  s.reported = true;
  char abuf[32];
  std::snprintf(abuf, sizeof abuf, "0x%" PRIxPTR, addr);
  const bool device = addr - reinterpret_cast<uintptr_t>(g_base) < g_bytes;
  std::string msg = std::string("cudaemu racecheck: ") + what + " in the kernel launched by " +
                    demangle_type(s.site) + ", grid (" + std::to_string(s.grid.x) + "," + std::to_string(s.grid.y) +
                    "," + std::to_string(s.grid.z) + ") of blocks (" + std::to_string(s.block.x) + "," +
                    std::to_string(s.block.y) + "," + std::to_string(s.block.z) + "):\n";
  msg += "  " + describe_thread(s, me) + " " + verb(k) + " " + std::to_string(bytes) + " bytes at " + abuf + " (" +
         (device ? describe_device_address(reinterpret_cast<const void*>(addr)) : "__shared__ memory") + "),\n";
  msg += "  " + then + "\n  the access: " + where(pc) + "\n";
  std::fputs(msg.c_str(), stderr);
  if (s.mode == kStop) {
    void* frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
    std::abort();
  }
}
// A race with an earlier access: `other` says whose ("block (0,0,0) thread (3,0,0) wrote"), `same_block`
// whether that thread was of this one's block.
void report_race(State& s, const std::string& other, bool same_block, Kind k, uintptr_t addr, size_t bytes,
                 uint32_t me, void* pc) {
  report(s, "a data race", k, addr, bytes, me,
         "which " + other + " earlier in this launch" +
             (same_block ? ", with no __syncthreads between the two accesses" :
                           "; threads of different blocks are never ordered within a launch"),
         pc);
}

inline uint64_t block_of(const State& s, uint32_t id1) { return (id1 - 1) / s.threads; }
// Whether an access by `earlier` in interval `ei` happens before one by `me` in interval `mi`.
inline bool ordered(const State& s, uint32_t earlier, uint32_t ei, uint32_t me, uint32_t mi) {
  return earlier == me || (ei < mi && block_of(s, earlier) == block_of(s, me));
}

[[gnu::always_inline]] inline void check(State& s, Record& r, Kind k, uint32_t me, uintptr_t addr, size_t bytes,
                                         void* pc) {
  const uint32_t now = s.interval;
  const auto mine = [&](uint32_t id) { return block_of(s, id) == block_of(s, me); };
  if (r.writer && !ordered(s, r.writer, r.w_interval, me, now) && !(k == kAtomic && (r.flags & kAtomicWrite)))
    report_race(s, describe_thread(s, r.writer) + ((r.flags & kAtomicWrite) ? " atomically updated" : " wrote"),
           mine(r.writer), k, addr, bytes, me, pc);
  if (k == kRead) {
    if (r.reader != 0 && r.reader != me) {
      if (!mine(r.reader)) r.flags |= kReadersInBlocks;
      r.r2_interval = r.r_interval;  // intervals only grow: the previous reader's is the latest other one
      r.flags |= kOtherReader;
    }
    r.reader = me;
    r.r_interval = now;
    return;
  }
  // A write must come after every read of another thread: a reader of another block never is; one of
  // this block is if it read in an earlier interval.
  if (r.reader) {
    if (!mine(r.reader))
      report_race(s, describe_thread(s, r.reader) + " read", false, k, addr, bytes, me, pc);
    else if (r.flags & kReadersInBlocks)
      report_race(s, "a thread of another block read", false, k, addr, bytes, me, pc);
    else if (r.reader != me && r.r_interval >= now)
      report_race(s, describe_thread(s, r.reader) + " read", true, k, addr, bytes, me, pc);
    else if (r.reader == me && (r.flags & kOtherReader) && r.r2_interval >= now)
      report_race(s, "another thread of this block read", true, k, addr, bytes, me, pc);
  }
  r.writer = me;
  r.w_interval = now;
  r.reader = 0;
  r.flags = k == kAtomic ? kAtomicWrite : 0;
}

// Checks an access to [a, a + bytes) against its records (`shared`: in __shared__ memory, where a read
// must also find the location written earlier by the block: a block's shared memory starts undefined).
[[gnu::noinline]] void check_range(State& s, Record* shadow, uint32_t stamp, bool shared, uintptr_t a, size_t bytes,
                                   Kind k, void* pc) {
  const uint3 th = tls.thread;
  const uint32_t me = static_cast<uint32_t>(
      s.block_base + th.x + uint64_t{th.y} * s.block.x + uint64_t{th.z} * s.block.x * s.block.y + 1);
  const size_t n = ((a + bytes - 1) >> kGranuleShift) - (a >> kGranuleShift) + 1;
  for (size_t i = 0; i < n; ++i) {
    Record& r = shadow[i];
    if (r.stamp != stamp) r = Record{stamp};
    if (shared && k != kWrite && r.writer == 0)
      report(s, "a read of uninitialized shared memory", k, a, bytes, me,
             "which no thread of this block has written: a block's __shared__ memory is undefined until it does",
             pc);
    check(s, r, k, me, a, bytes, pc);
  }
}

// The hooks' path: outside a launch, or for an address that is neither device memory nor shared
// memory, it returns after a few instructions.
inline void access(const void* p, size_t bytes, Kind k, void* pc) {
  State& s = t_state;
  if (!s.active || bytes == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a - reinterpret_cast<uintptr_t>(g_base) < g_bytes)
    check_range(s, g_shadow + ((a - reinterpret_cast<uintptr_t>(g_base)) >> kGranuleShift), s.launch, false, a, bytes,
                k, pc);
  else if (a - s.tls_lo < s.tls_span && a - reinterpret_cast<uintptr_t>(&tls) >= sizeof(tls))
    check_range(s, s.shared + ((a - s.tls_lo) >> kGranuleShift), s.block_stamp, true, a, bytes, k, pc);
}

}  // namespace

void init(const void* base, size_t bytes) {
  const size_t shadow = (bytes >> kGranuleShift) * sizeof(Record);
  void* p = mmap(nullptr, shadow, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "cudaemu: cannot reserve %zu GiB of address space for the race checker's shadow; "
                 "races are not checked (RETORT_CUDAEMU_RACECHECK=0 silences this)\n", shadow >> 30);
    return;
  }
  g_shadow = static_cast<Record*>(p);
  g_base = static_cast<char*>(const_cast<void*>(base));
  g_bytes = bytes;
}

void launch_begin(const char* site, dim3 grid, dim3 block) {
  State& s = t_state;
  s.active = false;
  s.mode = mode_from_env();
  if (s.mode == kOff || !g_shadow) return;
  s.threads = uint64_t{block.x} * block.y * block.z;
  const unsigned __int128 total = static_cast<unsigned __int128>(s.threads) * grid.x * grid.y * grid.z;
  if (total >= UINT32_MAX) return;  // thread ids would not fit in a record: unchecked
  if (g_checking.fetch_add(1) != 0) {  // another host thread is in a checked launch: leave this one
    g_checking.fetch_sub(1);
    return;
  }
  if (s.tls_span == 0) find_program_tls(s);
  s.active = true;
  s.launch = g_launches.fetch_add(1) + 1;
  if (s.launch == 0) s.launch = g_launches.fetch_add(1) + 1;  // 0 means "no launch" in a record
  s.site = site;
  s.grid = grid;
  s.block = block;
  s.reported = false;
}

void launch_end() {
  State& s = t_state;
  if (!s.active) return;
  s.active = false;
  g_checking.fetch_sub(1);
}

void block_begin(uint64_t block_linear) {
  State& s = t_state;
  if (!s.active) return;
  s.block_base = block_linear * s.threads;
  s.interval = 0;
  if (++s.block_stamp == 0) {  // wrapped: forget every stamp
    std::fill(s.shared, s.shared + (s.tls_span >> kGranuleShift), Record{});
    s.block_stamp = 1;
  }
}

void barrier() {
  if (t_state.active) ++t_state.interval;
}

void released(const void* pages, size_t bytes) {
  if (!g_shadow) return;
  const uintptr_t off = reinterpret_cast<uintptr_t>(pages) - reinterpret_cast<uintptr_t>(g_base);
  madvise(reinterpret_cast<char*>(g_shadow) + (off >> kGranuleShift) * sizeof(Record),
          (bytes >> kGranuleShift) * sizeof(Record), MADV_DONTNEED);
}

void atomic_access(const void* p, size_t bytes) { access(p, bytes, kAtomic, __builtin_return_address(0)); }

}  // namespace cudaemu::racecheck

// ---- the instrumentation's entry points ---------------------------------------------------------------
// What GCC's -fsanitize=thread calls. Plain accesses are checked; the atomics the host code of the
// instrumented files uses (std::atomic) are performed here, sequentially consistent.
using cudaemu::racecheck::kRead;
using cudaemu::racecheck::kWrite;
#define CUDAEMU_HOOK(name, n, kind) \
  extern "C" void name(void* p) { cudaemu::racecheck::access(p, n, kind, __builtin_return_address(0)); }
#define CUDAEMU_RC(n)                              \
  CUDAEMU_HOOK(__tsan_read##n, n, kRead)           \
  CUDAEMU_HOOK(__tsan_write##n, n, kWrite)         \
  CUDAEMU_HOOK(__tsan_unaligned_read##n, n, kRead) \
  CUDAEMU_HOOK(__tsan_unaligned_write##n, n, kWrite) \
  CUDAEMU_HOOK(__tsan_volatile_read##n, n, kRead)  \
  CUDAEMU_HOOK(__tsan_volatile_write##n, n, kWrite)
CUDAEMU_RC(1)
CUDAEMU_RC(2)
CUDAEMU_RC(4)
CUDAEMU_RC(8)
CUDAEMU_RC(16)
#undef CUDAEMU_RC
#undef CUDAEMU_HOOK
extern "C" void __tsan_read_range(void* p, unsigned long n) {
  if (n) cudaemu::racecheck::access(p, n, kRead, __builtin_return_address(0));
}
extern "C" void __tsan_write_range(void* p, unsigned long n) {
  if (n) cudaemu::racecheck::access(p, n, kWrite, __builtin_return_address(0));
}
// clang's instrumentation turns memcpy, memmove and memset into these.
extern "C" void* __tsan_memcpy(void* d, const void* s, unsigned long n) {
  cudaemu::racecheck::access(s, n, kRead, __builtin_return_address(0));
  cudaemu::racecheck::access(d, n, kWrite, __builtin_return_address(0));
  return std::memcpy(d, s, n);
}
extern "C" void* __tsan_memmove(void* d, const void* s, unsigned long n) {
  cudaemu::racecheck::access(s, n, kRead, __builtin_return_address(0));
  cudaemu::racecheck::access(d, n, kWrite, __builtin_return_address(0));
  return std::memmove(d, s, n);
}
extern "C" void* __tsan_memset(void* d, int c, unsigned long n) {
  cudaemu::racecheck::access(d, n, kWrite, __builtin_return_address(0));
  return std::memset(d, c, n);
}
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}

#define CUDAEMU_ATOMIC_RMW(bits, T, op)                                  \
  extern "C" T __tsan_atomic##bits##_##op(volatile T* a, T v, int) {     \
    return __atomic_##op(a, v, __ATOMIC_SEQ_CST);                        \
  }
#define CUDAEMU_ATOMIC(bits, T)                                                                  \
  extern "C" T __tsan_atomic##bits##_load(const volatile T* a, int) {                            \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                 \
  }                                                                                              \
  extern "C" void __tsan_atomic##bits##_store(volatile T* a, T v, int) {                         \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                    \
  }                                                                                              \
  extern "C" T __tsan_atomic##bits##_exchange(volatile T* a, T v, int) {                         \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                          \
  }                                                                                              \
  CUDAEMU_ATOMIC_RMW(bits, T, fetch_add)                                                         \
  CUDAEMU_ATOMIC_RMW(bits, T, fetch_sub)                                                         \
  CUDAEMU_ATOMIC_RMW(bits, T, fetch_and)                                                         \
  CUDAEMU_ATOMIC_RMW(bits, T, fetch_or)                                                          \
  CUDAEMU_ATOMIC_RMW(bits, T, fetch_xor)                                                         \
  CUDAEMU_ATOMIC_RMW(bits, T, fetch_nand)                                                        \
  extern "C" int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) { \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);      \
  }                                                                                              \
  extern "C" int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) { \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);       \
  }                                                                                              \
  extern "C" T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T c, T v, int, int) {   \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
    return c;                                                                                    \
  }
CUDAEMU_ATOMIC(8, char)
CUDAEMU_ATOMIC(16, short)
CUDAEMU_ATOMIC(32, int)
CUDAEMU_ATOMIC(64, long)
#undef CUDAEMU_ATOMIC
#undef CUDAEMU_ATOMIC_RMW
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
