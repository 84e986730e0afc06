// Registers the distillation nodes' gradchecks with the engine's gradcheck registry. Binaries and
// tests that link retort_distill call it once before listing or running checks.
#pragma once

namespace retort {

void register_distill_gradchecks();

}  // namespace retort
