// The built-in strategies, one file each; each file defines its register_<name>_strategy(), and
// registry.cpp calls them all once. Adding a strategy = one new file + one line in registry.cpp.
#pragma once
#include "distill/strategy.h"

namespace retort {

void register_ce_strategy();

}  // namespace retort
