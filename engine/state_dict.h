// StateDict: named tensors in a fixed order — what modules, optimizers and checkpoints exchange.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace retort {

using StateDict = std::vector<std::pair<std::string, Tensor>>;  // ordered as registered

}  // namespace retort
