// Seeded random numbers. A Generator is an mt19937_64 engine (whose output sequence the C++ standard
// fixes) plus our own uniform and normal transforms, so a seed gives the same numbers with every
// standard library. Not thread-safe: give each thread, or each sample, its own Generator.
#pragma once
#include <cstdint>
#include <random>
#include <string>

namespace retort {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : engine_(seed), seed_(seed) {}

  uint64_t seed() const { return seed_; }
  uint64_t next_u64() { return engine_(); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal (Box-Muller; one value per call, so the stream position is easy to reason about).
  double normal();
  // Uniform integer in [0, n).
  uint64_t randint(uint64_t n) { return n ? engine_() % n : 0; }

  // The engine state as text (for checkpoints) and back.
  std::string state() const;
  void set_state(const std::string& s);

 private:
  std::mt19937_64 engine_;
  uint64_t seed_;
};

}  // namespace retort
