// Tensor: factories, metadata, dtype conversion, data access, printing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <filesystem>
#include <fstream>

#include "engine/cpu/cpu_backend.h"
#include "engine/functions.h"

using namespace retort;

TEST(Tensor, FactoriesFillValues) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::F32);
  EXPECT_TRUE(z.device().is_cpu());
  for (double v : z.to_vector()) EXPECT_EQ(v, 0.0);
  for (double v : Tensor::ones({4}, DType::F64).to_vector()) EXPECT_EQ(v, 1.0);
  for (double v : Tensor::full({3}, 2.5).to_vector()) EXPECT_EQ(v, 2.5);
  EXPECT_EQ(Tensor::scalar(7.0).dim(), 0);
  EXPECT_EQ(Tensor::scalar(7.0).item(), 7.0);
  EXPECT_EQ(Tensor::arange(5).to_vector(), (std::vector<double>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Tensor::arange(1.0, 2.0, 0.25, DType::F64).to_vector(), (std::vector<double>{1, 1.25, 1.5, 1.75}));
  EXPECT_EQ(Tensor::zeros({0, 3}).numel(), 0);
}

TEST(Tensor, SeededRandomIsReproducibleAndDistributed) {
  Generator g1(42), g2(42), g3(43);
  Tensor a = Tensor::randn({10000}, g1), b = Tensor::randn({10000}, g2), c = Tensor::randn({10000}, g3);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  EXPECT_NEAR(mean(a).item(), 0.0, 0.05);
  EXPECT_NEAR(stddev(a).item(), 1.0, 0.05);
  Tensor u = Tensor::rand({10000}, g1, DType::F64, 2.0, 3.0);
  EXPECT_GE(min(u).item(), 2.0);
  EXPECT_LT(max(u).item(), 3.0);
  EXPECT_NEAR(mean(u).item(), 2.5, 0.02);
}

TEST(Tensor, GeneratorStateRoundTrips) {
  Generator g(5);
  g.normal();
  const std::string s = g.state();
  const double next = g.uniform();
  Generator h;
  h.set_state(s);
  EXPECT_EQ(h.uniform(), next);
  EXPECT_THROW(h.set_state("garbage"), Error);
}

TEST(Tensor, TypedAccessChecksDtype) {
  Tensor t = Tensor::from_vector({1.0, 2.0, 3.0}, {3}, DType::F64);
  EXPECT_EQ(t.data<double>()[2], 3.0);
  EXPECT_THROW(t.data<float>(), Error);
  Tensor i = Tensor::from_int64(std::vector<int64_t>{4, 5}, {2});
  EXPECT_EQ(i.dtype(), DType::I64);
  EXPECT_EQ(i.data<int64_t>()[1], 5);
}

TEST(Tensor, DtypeConversion) {
  Tensor t = Tensor::from_vector({1.5, -2.25, 3.0}, {3}, DType::F64);
  Tensor f = t.to(DType::F32);
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.to_vector(), t.to_vector());
  Tensor i = t.to(DType::I64);
  EXPECT_EQ(i.to_vector(), (std::vector<double>{1, -2, 3}));  // truncation toward zero
  EXPECT_TRUE(t.to(DType::F64).shares_storage(t));
  // Values no int64 holds: NaN -> 0, saturation at the range (as a GPU converts; static_cast is undefined).
  const double inf = std::numeric_limits<double>::infinity();
  for (DType from : {DType::F32, DType::F64}) {
    const Tensor odd = Tensor::from_vector({std::nan(""), inf, -inf, 1e30, -1e30, -2.7, 9.2e18}, {7}, from).to(DType::I64);
    const int64_t* p = odd.data<int64_t>();
    EXPECT_EQ(p[0], 0);
    EXPECT_EQ(p[1], INT64_MAX);
    EXPECT_EQ(p[2], INT64_MIN);
    EXPECT_EQ(p[3], INT64_MAX);
    EXPECT_EQ(p[4], INT64_MIN);
    EXPECT_EQ(p[5], -2);
    EXPECT_EQ(p[6], from == DType::F64 ? int64_t{9200000000000000000} : static_cast<int64_t>(9.2e18f));
  }
}

TEST(Tensor, CloneCopiesDetachShares) {
  Tensor t = Tensor::ones({2, 2});
  Tensor c = t.clone(), d = t.detach();
  EXPECT_FALSE(c.shares_storage(t));
  EXPECT_TRUE(d.shares_storage(t));
  t.data<float>()[0] = 5.0f;
  EXPECT_EQ(c.at(0), 1.0);
  EXPECT_EQ(d.at(0), 5.0);
}

TEST(Tensor, ItemNeedsOneElement) {
  EXPECT_THROW(Tensor::zeros({2}).item(), Error);
  EXPECT_EQ(Tensor::full({1, 1}, 3.0).item(), 3.0);
}

TEST(Tensor, PrintsReadably) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.str(), "tensor([[1.0000, 2.0000, 3.0000],\n        [4.0000, 5.0000, 6.0000]], dtype=f32)");
  EXPECT_EQ(Tensor::scalar(2.0, DType::F64).str(), "tensor(2.0000, dtype=f64)");
  Tensor big = Tensor::arange(2000);
  const std::string s = big.str();
  EXPECT_NE(s.find("..."), std::string::npos);
  EXPECT_NE(s.find("1999.0000"), std::string::npos);
  EXPECT_LT(s.size(), 200u);
  Tensor w = Tensor::ones({2}).set_requires_grad();
  EXPECT_NE(w.str().find("requires_grad=true"), std::string::npos);
  EXPECT_NE((w * 2.0).str().find("grad_fn=AffineBackward"), std::string::npos);
  EXPECT_EQ(t.meta_str(), "f32[2, 3] cpu");
}

TEST(Tensor, DeviceParsing) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device::parse("cuda").str(), "cuda:0");
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

// Large host blocks (1 MiB and more) are cached after they are freed and handed out again for the
// same size, so a training or inference step stops mapping and page-faulting its activations; small
// ones are not cached; host_empty_cache() gives every cached block back.
TEST(HostMemory, LargeBlocksAreReusedSmallOnesAreNot) {
  cpu::host_empty_cache();
  const cpu::HostCacheStats s0 = cpu::host_cache_stats();
  EXPECT_EQ(s0.cached_bytes, 0u);
  const void* first = nullptr;
  {
    Tensor t = Tensor::zeros({1024, 1024});  // 4 MiB
    first = t.data<float>();
  }
  const cpu::HostCacheStats s1 = cpu::host_cache_stats();
  EXPECT_EQ(s1.cached_bytes, size_t{4} << 20);
  {
    Tensor t = Tensor::ones({1024, 1024});  // the same size: the same block, its contents written anew
    EXPECT_EQ(static_cast<const void*>(t.data<float>()), first);
    EXPECT_EQ(t.to_vector()[12345], 1.0);
    const cpu::HostCacheStats s2 = cpu::host_cache_stats();
    EXPECT_EQ(s2.reused, s1.reused + 1);
    EXPECT_EQ(s2.cached_bytes, 0u);
  }
  {
    Tensor small = Tensor::zeros({1000});
    (void)small;
  }
  EXPECT_EQ(cpu::host_cache_stats().cached_bytes, size_t{4} << 20);  // the 4 MiB block only
  cpu::host_empty_cache();
  EXPECT_EQ(cpu::host_cache_stats().cached_bytes, 0u);
}

namespace {
// MemAvailable of /proc/meminfo in bytes (0 when it cannot be read).
size_t mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}
}  // namespace

// A large block the machine cannot hold is refused before the kernel's OOM killer would end the process:
// the error says how much was asked, what is left and for which tensor; the process goes on.
TEST(HostMemory, ABlockBeyondTheMachinesMemoryIsAClearError) {
  const size_t avail = mem_available();
  if (avail == 0) GTEST_SKIP() << "no MemAvailable in /proc/meminfo";
  // More than is available, yet less than RAM + swap, so malloc alone would have said yes (overcommit).
  const int64_t n = static_cast<int64_t>((avail + (size_t{1} << 30)) / 4);
  try {
    Tensor t = Tensor::empty({n});
    FAIL() << "a tensor of " << n * 4 << " bytes with " << avail << " bytes available was allocated";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* want : {"out of host memory", " bytes (", "would leave the machine less than 128.0 MiB",
                             "a smaller batch", "(allocating a tensor f32["})
      EXPECT_NE(msg.find(want), std::string::npos) << want << " in: " << msg;
    EXPECT_TRUE(msg.find("MemAvailable") != std::string::npos || msg.find("cgroup memory.max") != std::string::npos) << msg;
  }
  EXPECT_EQ(Tensor::ones({3}).to_vector(), (std::vector<double>{1, 1, 1}));
}

// The headroom is the least of MemAvailable and every cgroup v2 limit from the process's group up to the
// root (a Slurm job's or systemd slice's limit sits above the process's own group), page cache counted
// as free.
TEST(HostMemory, HeadroomIsTheTightestOfMemAvailableAndTheCgroupsAbove) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(testing::TempDir()) / "retort_headroom";
  fs::remove_all(root);
  auto put = [&](const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
  };
  const size_t mib = size_t{1} << 20;
  put(root / "meminfo", "MemTotal:       8000000 kB\nMemAvailable:    4194304 kB\n");  // 4096 MiB
  put(root / "self_cgroup", "0::/job/step\n");
  put(root / "cg/job/step/memory.max", "max\n");
  put(root / "cg/job/step/memory.current", std::to_string(100 * mib) + "\n");
  put(root / "cg/job/memory.max", std::to_string(1000 * mib) + "\n");
  put(root / "cg/job/memory.current", std::to_string(700 * mib) + "\n");
  put(root / "cg/job/memory.stat", "anon 1\nfile " + std::to_string(200 * mib) + "\nfile_mapped 3\n");
  const std::string meminfo = (root / "meminfo").string(), self = (root / "self_cgroup").string(),
                    cg = (root / "cg").string();
  // The job's limit: 1000 - (700 - 200 of page cache) = 500 MiB.
  cpu::Headroom h = cpu::host_memory_headroom(meminfo, self, cg);
  EXPECT_EQ(h.bytes, 500 * mib);
  EXPECT_NE(h.source.find("cgroup /job memory.max 1000.0 MiB, 500.0 MiB of it in use"), std::string::npos) << h.source;
  // A tighter limit on the process's own group wins; a looser one on the root does not.
  put(root / "cg/job/step/memory.max", std::to_string(300 * mib) + "\n");
  put(root / "cg/memory.max", std::to_string(100000 * mib) + "\n");
  put(root / "cg/memory.current", std::to_string(1 * mib) + "\n");
  h = cpu::host_memory_headroom(meminfo, self, cg);
  EXPECT_EQ(h.bytes, 200 * mib);
  EXPECT_NE(h.source.find("cgroup /job/step"), std::string::npos) << h.source;
  // No cgroup limits: MemAvailable; nothing readable: unlimited.
  put(root / "self_cgroup", "0::/\n");
  fs::remove(root / "cg/memory.max");
  h = cpu::host_memory_headroom(meminfo, self, cg);
  EXPECT_EQ(h.bytes, 4096 * mib);
  EXPECT_NE(h.source.find("MemAvailable 4096.0 MiB"), std::string::npos) << h.source;
  EXPECT_EQ(cpu::host_memory_headroom((root / "none").string(), (root / "none").string(), cg).bytes, SIZE_MAX);
  fs::remove_all(root);
}

// RETORT_HOST_MEMORY_LIMIT / set_host_memory_limit caps what large blocks hold, cached ones included:
// the cache is emptied before a block is refused, and what is held is counted back when tensors go.
TEST(HostMemory, TheLimitCountsLiveAndCachedLargeBlocks) {
  cpu::host_empty_cache();
  const size_t held0 = cpu::host_cache_stats().live_bytes;
  const size_t old = cpu::set_host_memory_limit(held0 + (size_t{10} << 20));  // 10 MiB more than now
  {
    Tensor a = Tensor::zeros({1024, 1024});  // 4 MiB
    EXPECT_EQ(cpu::host_cache_stats().live_bytes, held0 + (size_t{4} << 20));
    Tensor b = Tensor::zeros({1024, 1024});  // 8 MiB held
    try {
      Tensor c = Tensor::zeros({1024, 1024});  // 12 > 10
      FAIL() << "the limit let a third 4 MiB block through";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("would pass the host memory limit of"), std::string::npos) << msg;
      EXPECT_NE(msg.find("RETORT_HOST_MEMORY_LIMIT"), std::string::npos) << msg;
      EXPECT_NE(msg.find("(allocating a tensor f32[1024, 1024] on cpu)"), std::string::npos) << msg;
    }
  }
  // Both blocks are cached now (8 MiB held); a 6 MiB block fits only once the cache is emptied.
  EXPECT_EQ(cpu::host_cache_stats().cached_bytes, size_t{8} << 20);
  {
    Tensor d = Tensor::zeros({1536, 1024});
    EXPECT_EQ(cpu::host_cache_stats().cached_bytes, 0u);
    EXPECT_EQ(cpu::host_cache_stats().live_bytes, held0 + (size_t{6} << 20));
  }
  cpu::set_host_memory_limit(old);
  cpu::host_empty_cache();
  EXPECT_EQ(cpu::host_cache_stats().live_bytes, held0);
}
