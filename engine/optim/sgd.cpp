// SGD: option checks; the fused update is a backend kernel (Backend::sgd_step, engine/cpu/optim.cpp and
// engine/cuda/optim.cu), so parameters on any device are updated where they live.
#include "engine/optim/sgd.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "engine/backend.h"

namespace retort {

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options)
    : Optimizer("sgd", std::move(groups),
                options.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
      opt_(options) {
  RETORT_CHECK(std::isfinite(opt_.momentum) && opt_.momentum >= 0, "SGD: momentum must be finite and >= 0, got ",
               opt_.momentum);
  RETORT_CHECK(std::isfinite(opt_.dampening), "SGD: dampening must be finite, got ", opt_.dampening);
  RETORT_CHECK(!opt_.nesterov || (opt_.momentum > 0 && opt_.dampening == 0),
               "SGD: Nesterov momentum requires momentum > 0 and dampening == 0, got momentum ", opt_.momentum,
               ", dampening ", opt_.dampening);
}

void SGD::update(const ParamGroup& group, Tensor& param, const Tensor& grad, std::vector<Tensor>& buffers,
                 int64_t step) {
  SgdStepArgs a;
  a.lr = group.lr;
  a.weight_decay = group.weight_decay;
  a.momentum = opt_.momentum;
  a.dampening = opt_.dampening;
  a.nesterov = opt_.nesterov;
  a.first = step == 1;
  Tensor none;
  backend_for(param).sgd_step(param, grad, buffers.empty() ? none : buffers[0], a);
}

nlohmann::ordered_json SGD::options() const {
  return {{"momentum", opt_.momentum}, {"dampening", opt_.dampening}, {"nesterov", opt_.nesterov}};
}

}  // namespace retort
