// torch.nn.init equivalents (see init.h).
#include "layers/init.h"

#include <cmath>
#include <type_traits>
#include <vector>

#include "engine/backend.h"

namespace retort::init {

namespace {

// Writes draw() into every element in row-major order. Values are produced on the host; a tensor on
// another device receives them with one host-to-device copy.
template <class Draw>
Tensor fill_with(Tensor t, const char* op, Draw&& draw) {
  RETORT_CHECK(t.defined(), "init::", op, ": tensor is undefined");
  RETORT_CHECK(is_floating(t.dtype()), "init::", op, ": needs a floating-point tensor, got ", t.meta_str());
  const int64_t n = t.numel();
  auto write = [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(draw());
  };
  t.bump_version();
  if (t.device().is_cpu()) {
    if (t.dtype() == DType::F32) write(t.data<float>());
    else write(t.data<double>());
    return t;
  }
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  if (t.dtype() == DType::F32) write(host.data<float>());
  else write(host.data<double>());
  backend_for(t.device()).copy_from_host(host.raw_data(), t.raw_data(), t.nbytes());
  return t;
}

int64_t fan(const Tensor& t, FanMode mode) {
  const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  return mode == FanMode::FanIn ? fan_in : fan_out;
}

}  // namespace

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  RETORT_CHECK(t.defined() && t.dim() >= 2,
               "init: fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions, got ",
               t.defined() ? t.meta_str() : std::string("an undefined tensor"));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

double calculate_gain(Nonlinearity nonlinearity, double negative_slope) {
  switch (nonlinearity) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: return std::sqrt(2.0 / (1.0 + negative_slope * negative_slope));
  }
  RETORT_FAIL("init::calculate_gain: unknown nonlinearity");
}

Tensor uniform_(Tensor t, Generator& gen, double lo, double hi) {
  RETORT_CHECK(lo <= hi, "init::uniform_: lo (", lo, ") must not exceed hi (", hi, ")");
  return fill_with(std::move(t), "uniform_", [&] { return gen.uniform(lo, hi); });
}

Tensor normal_(Tensor t, Generator& gen, double mean, double std) {
  RETORT_CHECK(std >= 0, "init::normal_: std must be non-negative, got ", std);
  return fill_with(std::move(t), "normal_", [&] { return mean + std * gen.normal(); });
}

Tensor constant_(Tensor t, double value) {
  RETORT_CHECK(t.defined(), "init::constant_: tensor is undefined");
  backend_for(t.device()).fill(t, value);
  t.bump_version();
  return t;
}

Tensor zeros_(Tensor t) { return constant_(std::move(t), 0.0); }
Tensor ones_(Tensor t) { return constant_(std::move(t), 1.0); }

Tensor kaiming_normal_(Tensor t, Generator& gen, double a, FanMode mode, Nonlinearity nonlinearity) {
  if (t.defined() && t.numel() == 0) return t;  // PyTorch skips empty tensors too
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan(t, mode)));
  return normal_(std::move(t), gen, 0.0, std);
}

Tensor kaiming_uniform_(Tensor t, Generator& gen, double a, FanMode mode, Nonlinearity nonlinearity) {
  if (t.defined() && t.numel() == 0) return t;
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan(t, mode)));
  const double bound = std::sqrt(3.0) * std;
  return uniform_(std::move(t), gen, -bound, bound);
}

Tensor xavier_uniform_(Tensor t, Generator& gen, double gain) {
  const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  const double a = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return uniform_(std::move(t), gen, -a, a);
}

Tensor xavier_normal_(Tensor t, Generator& gen, double gain) {
  const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  const double std = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
  return normal_(std::move(t), gen, 0.0, std);
}

}  // namespace retort::init
