// SGD: option checks and the fused CPU update (see sgd.h for the rule).
//
// The update is one pass over memory per parameter (read p, g, buf; write p, buf) rather than four
// tensor ops. It lives here, not in engine/backend.h, while the CPU is the only device that runs
// optimizer steps; the CUDA backend will need a fused kernel with the same arithmetic (and the
// Optimizer base already refuses CUDA parameters until then).
#include "engine/optim/sgd.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "engine/cpu/cpu_backend.h"

namespace retort {

namespace {

// Scalars are cast to T first, as PyTorch does for float tensors, so f32 results follow its rounding.
template <class T>
void sgd_step(T* p, const T* g, T* buf, int64_t n, double lr, double wd, const SGDOptions& o, bool first) {
  const T neg_lr = static_cast<T>(-lr), decay = static_cast<T>(wd), mom = static_cast<T>(o.momentum),
          keep = static_cast<T>(1.0 - o.dampening);
  const bool use_decay = wd != 0.0, use_momentum = o.momentum != 0.0, nesterov = o.nesterov;
  // The flags are loop-invariant: the compiler unswitches them, the loop stays branch-free.
#pragma omp parallel for if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T d = g[i];
    if (use_decay) d = d + decay * p[i];
    if (use_momentum) {
      const T b = first ? d : buf[i] * mom + keep * d;
      buf[i] = b;
      d = nesterov ? d + mom * b : b;
    }
    p[i] = p[i] + neg_lr * d;
  }
}

}  // namespace

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
  cpu::dispatch_float(param.dtype(), "SGD::step", [&](auto tag) {
    using T = decltype(tag);
    T* buf = buffers.empty() ? nullptr : buffers[0].data<T>();
    sgd_step<T>(param.data<T>(), grad.data<T>(), buf, param.numel(), group.lr, group.weight_decay, opt_, step == 1);
  });
}

nlohmann::ordered_json SGD::options() const {
  return {{"momentum", opt_.momentum}, {"dampening", opt_.dampening}, {"nesterov", opt_.nesterov}};
}

}  // namespace retort
