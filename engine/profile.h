// Per-kernel profiling: while enabled, backend_for() hands out a ProfilingBackend that forwards
// every kernel call to the real backend and adds its wall time to a table keyed by kernel name
// ("conv2d_forward", "binary:add", "batchnorm_backward", ...). Convolutions are also keyed by shape,
// with their FLOP count, so a report can show each one's achieved GFLOP/s. Backends run
// synchronously on the CPU, so a call's wall time is the kernel's time.
//
//   retort::profiling::enable(true);
//   ... run steps ...
//   auto table = retort::profiling::snapshot();  retort::profiling::reset();
//
// Used by `retort-bench --profile`. Not thread-safe against concurrent kernel calls from several
// threads (the training loop calls kernels from one thread; loader workers do not call kernels).
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace retort::profiling {

struct Stat {
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;           // convolutions and GEMMs only
  double layout_seconds = 0;  // part of `seconds` spent converting layouts (add_layout_seconds)
};

struct Table {
  std::map<std::string, Stat> by_kernel;      // "conv2d_forward", "binary:mask_positive", ...
  std::map<std::string, Stat> by_conv_shape;  // "fwd x[64,16,32,32] w[16,16,3,3] s1 p1 g1"
  // Layout conversions reported while no kernel call was being timed: a blocked activation rewritten to
  // NCHW because library code read its data directly (a function preparing a kernel's arguments, a
  // clone), and so part of the time outside kernels.
  double layout_seconds_outside_kernels = 0;
};

void enable(bool on);
bool enabled();
// Called by a backend inside a kernel call, while profiling is enabled: `s` seconds of that call went
// to converting its operands' layouts (the CPU's oneDNN convolutions reorder NCHW to their blocked
// layouts and back). Counted into the call's Stat::layout_seconds; outside a timed call, into
// Table::layout_seconds_outside_kernels.
void add_layout_seconds(double s);
void reset();
Table snapshot();

}  // namespace retort::profiling
