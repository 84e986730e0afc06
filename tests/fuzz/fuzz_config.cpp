// Fuzz target: experiment configs as the apps read them — ExperimentConfig::load (read_json_file,
// the --set overrides through apply_override, the strict parse including every distillation term's
// params), then what the Trainer and the run directory do next with a config that parsed: build the
// LR schedule from solver.schedule, and write the resolved config back as JSON.
//
// Input: the config file's bytes, then optionally up to 4 --set strings, each after a NUL byte
// ("{...}\0solver.lr=0.1\0data.dataset=cifar100").
#include <algorithm>
#include <vector>

#include "distill/experiment.h"
#include "engine/optim/lr_schedule.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace retort;
  const uint8_t* end = data + size;
  const uint8_t* nul = std::find(data, end, uint8_t{0});
  const std::string path = fuzz::write_file("config.json", data, static_cast<size_t>(nul - data));
  std::vector<std::string> overrides;
  while (nul != end && overrides.size() < 4) {
    const uint8_t* begin = nul + 1;
    nul = std::find(begin, end, uint8_t{0});
    overrides.emplace_back(reinterpret_cast<const char*>(begin), static_cast<size_t>(nul - begin));
  }
  fuzz::expect_only_retort_errors("ExperimentConfig::load", [&] {
    const ExperimentConfig cfg = ExperimentConfig::load(path, overrides);
    (void)cfg.to_json().dump();  // the run directory's config.json, the checkpoints' metadata
    const Json sched = cfg.solver.schedule.empty() ? Json{{"type", "constant"}} : cfg.solver.schedule;
    const auto schedule = make_lr_schedule(sched, cfg.solver.lr);
    for (double epoch : {0.0, 0.5, static_cast<double>(cfg.solver.epochs)}) (void)schedule->lr(epoch);
  });
  return 0;
}
