// Retort's environment variables (docs/cli.md, "Environment"). Each is read once, the first time its
// setting is needed — the on/off switches through env_switch, RETORT_CPU_CONV and
// RETORT_HOST_MEMORY_LIMIT by their own parsers — and a value the variable does not take is refused
// naming the variable and what it takes (a ConfigError: the apps exit 1), never read as something
// else. check_environment() reads the engine's, and the apps also read the layers library's
// (RETORT_FUSE_EVAL), so an app refuses a bad one before it starts work.
#pragma once

namespace retort {

// An on/off switch: unset or empty gives `default_on`, "0" off, "1" on; anything else is refused.
bool env_switch(const char* var, bool default_on);

// Reads every RETORT_* variable of the engine (the CPU convolution path and its switches, the host
// memory limit, the CUDA switches), throwing a ConfigError for the first bad one. The apps call it
// (and layers' eval_fusion_enabled()) before they parse their config.
void check_environment();

}  // namespace retort
