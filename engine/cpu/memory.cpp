// CPU memory: 64-byte aligned allocations (one cache line, AVX-512 friendly), copies, fill and cast.
//
// Large blocks are cached. glibc gives a freed block of megabytes back to the kernel (munmap, or a
// heap trim), and the next step's allocation of the same size page-faults every page back in: on the
// 2-core AMD EPYC of docs/performance.md that was 23 % of resnet8x4's inference step (`--profile`:
// deallocate 5.3 of 78 ms, and the faults inside the kernels). So a freed block of kCacheFrom bytes or
// more goes to a free list of its size (rounded up to 64 KiB) and the next allocation of that size
// takes it back; a step repeats the same shapes, so after the first step nothing is mapped or
// faulted. The lists hold at most kCacheLimit bytes (a block that would pass it is freed), and
// host_empty_cache() frees them all. Small blocks go straight to malloc, which recycles them itself.
//
// Out of memory. Linux overcommits: malloc of a block that does not fit rarely fails, and the kernel's
// OOM killer later ends the process without a word. So before a large block is taken fresh from the
// system, the machine's headroom is read — MemAvailable from /proc/meminfo and the cgroup v2 limits of
// the process's group and the groups above it (host_memory_headroom, page cache counted as free) — and a
// block that would leave less than kReserve of it is refused with an Error saying what was asked, what
// is left and what Retort holds (after the cache was emptied and the headroom read again). RETORT_HOST_MEMORY_LIMIT (bytes, or with a
// K/M/G suffix: "6G") caps what Retort holds in large blocks, cached ones included — to leave room for
// other work on the machine, or to see whether a config would fit on a smaller one.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <type_traits>
#include <unordered_map>

#include "engine/cpu/cpu_backend.h"

namespace retort::cpu {

namespace {

constexpr size_t kCacheFrom = size_t{1} << 20;   // 1 MiB
constexpr size_t kCacheStep = size_t{1} << 16;   // large sizes are rounded up to 64 KiB
constexpr size_t kCacheLimit = size_t{1} << 30;  // 1 GiB held in the free lists at most
constexpr size_t kReserve = size_t{128} << 20;   // what a fresh large block must leave the machine

struct HostCache {
  std::mutex mu;
  std::unordered_map<void*, size_t> live;  // large blocks handed out: pointer -> rounded size
  std::multimap<size_t, void*> free;        // cached blocks by rounded size
  HostCacheStats stats;
};

HostCache& host_cache() {
  static auto* c = new HostCache();  // leaked: tensors may be freed during static destruction
  return *c;
}

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// The first number of a file (memory.max, memory.current), or nothing when it is absent or "max".
std::optional<size_t> number_in(const std::string& path) {
  std::ifstream in(path);
  unsigned long long v = 0;
  if (!(in >> v)) return std::nullopt;
  return static_cast<size_t>(v);
}

// "Key:   123 kB" lines of /proc/meminfo, or "key 123" lines of a cgroup's memory.stat.
std::optional<size_t> field_in(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0 || line.size() == key.size() ||
        !(line[key.size()] == ':' || line[key.size()] == ' '))
      continue;
    std::istringstream fields(line.substr(key.size() + 1));
    unsigned long long v = 0;
    std::string unit;
    if (!(fields >> v)) return std::nullopt;
    fields >> unit;
    return static_cast<size_t>(v) * (unit == "kB" ? 1024 : 1);
  }
  return std::nullopt;
}

Headroom machine_headroom() { return host_memory_headroom("/proc/meminfo", "/proc/self/cgroup", "/sys/fs/cgroup"); }

// RETORT_HOST_MEMORY_LIMIT in bytes (0: none), read at the first large allocation; set_host_memory_limit
// replaces it.
std::optional<size_t>& limit_setting() {
  static std::optional<size_t> limit;
  return limit;
}

size_t limit_from_environment() {
  const char* env = std::getenv("RETORT_HOST_MEMORY_LIMIT");
  if (!env || !*env) return 0;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  const char unit = static_cast<char>(std::toupper(static_cast<unsigned char>(*end)));
  const double scale = unit == 'K' ? 1024.0 : unit == 'M' ? 1048576.0 : unit == 'G' ? 1073741824.0 : 1.0;
  if (scale != 1.0) ++end;
  RETORT_CHECK_CONFIG(end != env && *end == '\0' && v > 0 && v * scale < 1e18, "environment variable RETORT_HOST_MEMORY_LIMIT=\"",
               env, "\": expected a number of bytes, optionally with K, M or G (\"6G\")");
  return static_cast<size_t>(v * scale);
}

size_t memory_limit() {
  std::optional<size_t>& l = limit_setting();
  if (!l) l = limit_from_environment();
  return *l;
}

// Refuses a fresh large block of `rounded` bytes that the machine (or RETORT_HOST_MEMORY_LIMIT) has no
// room for; empties the cache once before giving up.
void check_headroom(size_t rounded, size_t nbytes) {
  for (int attempt = 0;; ++attempt) {
    const Headroom h = machine_headroom();
    const HostCacheStats st = host_cache_stats();
    const size_t held = st.live_bytes + st.cached_bytes, limit = memory_limit();
    const bool over_limit = limit && held + rounded > limit;
    const bool over_machine = rounded + kReserve > h.bytes;
    if (!over_limit && !over_machine) return;
    if (attempt == 0 && st.cached_bytes > 0) {
      host_empty_cache();
      continue;
    }
    const std::string asked = detail::cat("out of host memory: ", nbytes, " bytes (", mib(rounded), ") asked for ");
    const std::string hint = detail::cat("Retort holds ", mib(held), " in blocks of 1 MiB and more; a smaller batch ",
                                         "(data.batch_size, data.eval_batch_size; retort-eval's --batch-size, ",
                                         "retort-inspect's --batch) or smaller inputs (retort-inspect's --size) need less");
    if (over_limit)
      RETORT_FAIL(asked, "would pass the host memory limit of ", mib(limit), " (RETORT_HOST_MEMORY_LIMIT); ", hint);
    RETORT_FAIL(asked, "would leave the machine less than ", mib(kReserve), " (", h.source, "); ", hint);
  }
}

}  // namespace

Headroom host_memory_headroom(const std::string& meminfo, const std::string& proc_cgroup,
                              const std::string& cgroup_root) {
  Headroom h;
  if (const auto avail = field_in(meminfo, "MemAvailable")) h = {*avail, "MemAvailable " + mib(*avail)};
  // cgroup v2: this process's group is the "0::/path" line of /proc/self/cgroup ("/" inside a container's
  // own namespace); a limit may sit on it or on any group above it (a Slurm job, a systemd slice).
  std::string path;
  {
    std::ifstream in(proc_cgroup);
    std::string line;
    while (std::getline(in, line))
      if (line.compare(0, 3, "0::") == 0) path = line.substr(3);
  }
  while (true) {
    const std::string dir = cgroup_root + (path == "/" ? "" : path);
    const auto max = number_in(dir + "/memory.max"), current = number_in(dir + "/memory.current");
    if (max && current) {
      const size_t file = field_in(dir + "/memory.stat", "file").value_or(0);  // page cache: reclaimable
      const size_t used = *current > file ? *current - file : 0;
      const size_t left = *max > used ? *max - used : 0;
      if (left < h.bytes)
        h = {left, "cgroup " + (path.empty() ? std::string("/") : path) + " memory.max " + mib(*max) + ", " +
                       mib(used) + " of it in use"};
    }
    if (path.empty() || path == "/") break;
    const size_t slash = path.find_last_of('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
  return h;
}

size_t set_host_memory_limit(size_t bytes) {
  const size_t old = memory_limit();
  limit_setting() = bytes;
  return old;
}

HostCacheStats host_cache_stats() {
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void host_empty_cache() {
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [size, p] : c.free) std::free(p);
  c.free.clear();
  c.stats.cached_bytes = 0;
}

bool CpuBackend::supports(const std::string& kernel, DType dtype) const {
  // Every kernel exists for F32 and F64; memory, fill, cast and copies also handle I64.
  if (is_floating(dtype)) return true;
  return kernel == "allocate" || kernel == "fill" || kernel == "cast" || kernel == "copy" ||
         kernel == "strided_copy";
}

void* CpuBackend::allocate(size_t nbytes) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) return nullptr;
  const bool large = rounded >= kCacheFrom;
  if (large) {
    rounded = (rounded + kCacheStep - 1) / kCacheStep * kCacheStep;
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const auto it = c.free.find(rounded);
    if (it != c.free.end()) {
      void* p = it->second;
      c.free.erase(it);
      c.stats.cached_bytes -= rounded;
      c.stats.live_bytes += rounded;
      ++c.stats.reused;
      c.live.emplace(p, rounded);
      return p;
    }
  }
  if (large) check_headroom(rounded, nbytes);
  void* p = std::aligned_alloc(64, rounded);
  if (!p && large) {  // cached blocks of other sizes may be what stands in the way
    host_empty_cache();
    p = std::aligned_alloc(64, rounded);
  }
  RETORT_CHECK(p != nullptr, "out of host memory: allocating ", nbytes, " bytes failed");
  if (large) {
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    ++c.stats.fresh;
    c.stats.live_bytes += rounded;
    c.live.emplace(p, rounded);
  }
  return p;
}

void CpuBackend::deallocate(void* ptr) {
  if (!ptr) return;
  {
    HostCache& c = host_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const auto it = c.live.find(ptr);
    if (it != c.live.end()) {
      const size_t size = it->second;
      c.live.erase(it);
      c.stats.live_bytes -= size;
      if (c.stats.cached_bytes + size <= kCacheLimit) {
        c.free.emplace(size, ptr);
        c.stats.cached_bytes += size;
        return;
      }
    }
  }
  std::free(ptr);
}

void CpuBackend::copy_to_host(const void* src, void* dst, size_t n) { if (n) std::memcpy(dst, src, n); }
void CpuBackend::copy_from_host(const void* src, void* dst, size_t n) { if (n) std::memcpy(dst, src, n); }
void CpuBackend::copy(const void* src, void* dst, size_t n) { if (n) std::memcpy(dst, src, n); }

namespace {
template <class T>
void fill_typed(T* p, int64_t n, T v) {
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

template <class S, class D>
void cast_typed(const S* s, D* d, int64_t n) {
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<D, int64_t> && !std::is_same_v<S, int64_t>) d[i] = float_to_int64(s[i]);
    else d[i] = static_cast<D>(s[i]);
  }
}

template <class S>
void cast_from(const S* s, Tensor& dst, int64_t n) {
  switch (dst.dtype()) {
    case DType::F32: cast_typed(s, dst.data<float>(), n); break;
    case DType::F64: cast_typed(s, dst.data<double>(), n); break;
    case DType::I64: cast_typed(s, dst.data<int64_t>(), n); break;
  }
}
}  // namespace

void CpuBackend::fill(Tensor& out, double value) {
  switch (out.dtype()) {
    case DType::F32: fill_typed(out.data<float>(), out.numel(), static_cast<float>(value)); break;
    case DType::F64: fill_typed(out.data<double>(), out.numel(), value); break;
    case DType::I64: fill_typed(out.data<int64_t>(), out.numel(), static_cast<int64_t>(value)); break;
  }
}

void CpuBackend::cast(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  switch (src.dtype()) {
    case DType::F32: cast_from(src.data<float>(), dst, n); break;
    case DType::F64: cast_from(src.data<double>(), dst, n); break;
    case DType::I64: cast_from(src.data<int64_t>(), dst, n); break;
  }
}

size_t host_memory_limit() { return memory_limit(); }

}  // namespace retort::cpu
