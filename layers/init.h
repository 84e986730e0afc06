// Parameter initialisation, as torch.nn.init: each function fills a tensor in place (the handle is
// shared, so the module's parameter changes) drawing from a seeded retort::Generator, and returns it.
// Values are drawn in double and rounded once to the tensor's dtype, element by element in row-major
// order, so a seed fixes the result on every machine. The fans follow
// torch.nn.init._calculate_fan_in_and_fan_out: fan_in = size(1) * receptive field,
// fan_out = size(0) * receptive field, where the receptive field is the product of dims 2 and up.
#pragma once
#include <cstdint>
#include <utility>

#include "engine/generator.h"
#include "engine/tensor.h"

namespace retort::init {

enum class FanMode { FanIn, FanOut };
enum class Nonlinearity { Linear, Conv, Sigmoid, Tanh, ReLU, LeakyReLU };

// {fan_in, fan_out}; throws for tensors with fewer than 2 dimensions.
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t);
// torch.nn.init.calculate_gain; negative_slope is used by LeakyReLU only.
double calculate_gain(Nonlinearity nonlinearity, double negative_slope = 0.01);

Tensor uniform_(Tensor t, Generator& gen, double lo = 0.0, double hi = 1.0);
Tensor normal_(Tensor t, Generator& gen, double mean = 0.0, double std = 1.0);
Tensor constant_(Tensor t, double value);
Tensor zeros_(Tensor t);
Tensor ones_(Tensor t);

// He et al.: std = gain / sqrt(fan), gain from `nonlinearity` (with slope `a` for LeakyReLU).
// PyTorch's defaults: a = 0, fan_in, leaky_relu (which with a = 0 is ReLU's gain sqrt(2)).
Tensor kaiming_normal_(Tensor t, Generator& gen, double a = 0.0, FanMode mode = FanMode::FanIn,
                       Nonlinearity nonlinearity = Nonlinearity::LeakyReLU);
// U(-bound, bound) with bound = gain * sqrt(3 / fan). With a = sqrt(5) (nn.Linear / nn.Conv2d
// defaults) the bound is 1 / sqrt(fan_in).
Tensor kaiming_uniform_(Tensor t, Generator& gen, double a = 0.0, FanMode mode = FanMode::FanIn,
                        Nonlinearity nonlinearity = Nonlinearity::LeakyReLU);
// Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)); normal with std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_uniform_(Tensor t, Generator& gen, double gain = 1.0);
Tensor xavier_normal_(Tensor t, Generator& gen, double gain = 1.0);

}  // namespace retort::init
