// Environment variables: see env.h.
#include "engine/env.h"

#include <cstdlib>
#include <string>

#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/error.h"

namespace retort {

bool env_switch(const char* var, bool default_on) {
  const char* env = std::getenv(var);
  if (!env || !*env) return default_on;
  const std::string v = env;
  RETORT_CHECK_CONFIG(v == "0" || v == "1", "environment variable ", var, "=\"", v, "\": expected 0 (off) or 1 (on)",
                      default_on ? "; unset, it is on" : "; unset, it is off");
  return v == "1";
}

void check_environment() {
  cpu::conv_impl();                 // RETORT_CPU_CONV
  cpu_conv_bf16();                  // RETORT_CPU_CONV_BF16
  cpu_conv_winograd();              // RETORT_CPU_CONV_WINOGRAD (and not both)
  kernel_autotune();                // RETORT_CPU_CONV_TUNE
  cpu::depthwise_direct_enabled();  // RETORT_CPU_DEPTHWISE
  cpu_blocked_activations();        // RETORT_CPU_BLOCKED
  cpu::host_memory_limit();         // RETORT_HOST_MEMORY_LIMIT
  // The CUDA switches, read here whether or not this build has the backend (which reads them itself).
  env_switch("RETORT_CUDA_DETERMINISTIC", false);
  env_switch("RETORT_ALLOW_TF32", false);
}

}  // namespace retort
