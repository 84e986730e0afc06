// The list of built-in strategies (see strategies.h). Called once, lazily, by the strategy registry.
#include "distill/strategies/strategies.h"

namespace retort {

void register_builtin_strategies() {
  register_ce_strategy();
}

}  // namespace retort
