// PLACEHOLDER (helper in progress): logit distillation nodes.
#pragma once
#include <string>
#include <vector>
#include "engine/gradcheck.h"
namespace retort {
void add_logit_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> logit_node_functions();
}
