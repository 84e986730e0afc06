// Golden fixtures: named tensors written by tools/gen_golden_*.py with PyTorch, compared with a
// tolerance per tensor. A failed comparison prints the worst elements (index, ours, PyTorch's) so a
// mismatch can be read off the test log.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "engine/serialize.h"

namespace retort::testing {

class GoldenFile {
 public:
  explicit GoldenFile(const std::string& file) : path_(std::string(RETORT_FIXTURES_DIR) + "/" + file) {
    SafetensorsFile f = load_safetensors(path_);
    for (auto& [k, t] : f.tensors) tensors_[k] = t;
    metadata_ = f.metadata;
  }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const Tensor& operator[](const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(path_ + ": no tensor named '" + name + "'");
    return it->second;
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// |ours - ref| <= atol + rtol * |ref| elementwise; on failure, the 5 worst elements.
inline ::testing::AssertionResult close_to(const std::string& name, const Tensor& ours, const Tensor& ref,
                                           double atol, double rtol) {
  if (ours.shape() != ref.shape())
    return ::testing::AssertionFailure() << name << ": shape " << shape_str(ours.shape()) << " vs PyTorch "
                                         << shape_str(ref.shape());
  const auto a = ours.to_vector(), b = ref.to_vector();
  std::vector<std::pair<double, size_t>> excess;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a[i] - b[i]) - (atol + rtol * std::abs(b[i]));
    if (e > 0 || std::isnan(a[i]) != std::isnan(b[i])) excess.emplace_back(std::isnan(e) ? 1e300 : e, i);
  }
  if (excess.empty()) return ::testing::AssertionSuccess();
  std::sort(excess.rbegin(), excess.rend());
  std::ostringstream os;
  os << name << ": " << excess.size() << " of " << a.size() << " elements off (atol " << atol << ", rtol " << rtol
     << "); worst:";
  for (size_t k = 0; k < std::min<size_t>(5, excess.size()); ++k) {
    const size_t i = excess[k].second;
    os << "\n  [" << i << "] ours " << a[i] << "  torch " << b[i] << "  |diff| " << std::abs(a[i] - b[i]);
  }
  return ::testing::AssertionFailure() << os.str();
}

// One case in tools/golden.py's layout (record_case): rebuilds NAME/in<i> as leaves — floating ones in
// `dtype`, or as stored when none is given; those with a stored gradient require one —, runs fn, backpropagates
// NAME/upstream and compares the output and every stored input gradient NAME/grad_in<i>.
inline void check_golden_case(const GoldenFile& g, const std::string& name,
                              const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                              std::optional<DType> dtype, double atol, double rtol) {
  std::vector<Tensor> ins;
  for (int i = 0; g.has(name + "/in" + std::to_string(i)); ++i) {
    const Tensor& stored = g[name + "/in" + std::to_string(i)];
    Tensor t = (dtype && stored.dtype() != DType::I64 ? stored.to(*dtype) : stored).clone();
    if (g.has(name + "/grad_in" + std::to_string(i))) t.set_requires_grad();
    ins.push_back(t);
  }
  ASSERT_FALSE(ins.empty()) << "no inputs stored for " << name;
  const Tensor out = fn(ins);
  const std::string tag = !dtype ? "" : *dtype == DType::F32 ? " (f32)" : " (f64)";
  if (dtype) {
    EXPECT_EQ(out.dtype(), *dtype) << name;
  }
  EXPECT_TRUE(close_to(name + "/out" + tag, out, g[name + "/out"], atol, rtol));
  const Tensor& up = g[name + "/upstream"];
  out.backward(dtype ? up.to(*dtype) : up);
  for (size_t i = 0; i < ins.size(); ++i) {
    const std::string key = name + "/grad_in" + std::to_string(i);
    if (!g.has(key)) continue;
    ASSERT_TRUE(ins[i].grad().defined()) << key << ": Retort produced no gradient";
    EXPECT_TRUE(close_to(key + tag, ins[i].grad(), g[key], atol, rtol));
  }
}

// The tolerances the distillation goldens use: PyTorch computes in f64; Retort in f32 or f64.
inline void check_golden_case(const GoldenFile& g, const std::string& name,
                              const std::function<Tensor(const std::vector<Tensor>&)>& fn, DType dtype) {
  const bool f32 = dtype == DType::F32;
  check_golden_case(g, name, fn, dtype, f32 ? 2e-5 : 1e-12, f32 ? 1e-3 : 1e-9);
}

}  // namespace retort::testing
