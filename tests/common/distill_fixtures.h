// Tiny distillation set-ups shared by the distillation tests: 1x16x16 inputs, 4 classes, and a
// deterministic batch of random images with labels 0, 1, 2, 3, 0, ...
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "models/registry.h"

namespace retort::testing {

inline const Shape kTinySample{1, 16, 16};
inline const ModelOptions kTinyModel{4, 1, 16};

inline Batch tiny_batch(int64_t n, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> y;
  for (int64_t i = 0; i < n; ++i) y.push_back(i % 4);
  return Batch{Tensor::randn({n, 1, 16, 16}, g), Tensor::from_int64(y, {n}), Tensor::arange(n, DType::I64)};
}

inline std::vector<DistillTerm> terms_from(const std::string& json) {
  return parse_terms(Json::parse(json), "test.json");
}

}  // namespace retort::testing
