// PLACEHOLDER (helper in progress): feature distillation nodes.
#pragma once
#include <string>
#include <vector>
#include "engine/gradcheck.h"
namespace retort {
void add_feature_node_checks(std::vector<GradcheckCase>& out);
std::vector<std::string> feature_node_functions();
}
