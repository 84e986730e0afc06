// The timing loop of the kernel micro-benchmarks (bench/*_micro.cpp): median milliseconds of `reps`
// runs of f after 3 untimed warm-up runs.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

inline double micro_time_ms(const std::function<void()>& f, int reps = 20) {
  using clk = std::chrono::steady_clock;
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = clk::now();
    f();
    t.push_back(std::chrono::duration<double>(clk::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[static_cast<size_t>(reps / 2)] * 1e3;
}
